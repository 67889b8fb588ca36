// Package server is hangard's HTTP API (docs/api.md): sessions, tickets,
// attach (handed to the broker), server-sent events, pools, the admin
// tenant API, health, metrics, the OpenAPI document and the web terminal.
package server

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/broker"
	"github.com/hangarhq/hangar/daemon/health"
	"github.com/hangarhq/hangar/daemon/metrics"
	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/api"
	"github.com/hangarhq/hangar/internal/tunnel"
	"github.com/hangarhq/hangar/web"
)

// OpenAPI is the API's OpenAPI 3 document, served at /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Config wires a Server.
type Config struct {
	Store    store.Store
	Sessions *sessions.Manager
	Pools    *poolcache.Cache
	Broker   *broker.Broker
	Auth     *auth.Authenticator
	Metrics  *metrics.Metrics
	Logger   hclog.Logger
	// PublicURL, if set, is the external base URL (for ticket URLs).
	PublicURL string
	// TrustedProxyHeaders: believe X-Forwarded-Proto and X-Forwarded-Host.
	TrustedProxyHeaders bool
	// AllowedOrigins may open WebSockets besides the daemon's own origin.
	AllowedOrigins []string
	// ReadyTimeout bounds how long an attach waits for a session to be ready.
	ReadyTimeout time.Duration
	// Web serves "/" (default: the embedded web terminal).
	Web http.Handler
	// Tunnels serves agents dialling home (internal/tunnel.Path); nil: no
	// agent tunnels on this replica.
	Tunnels http.Handler
	// AttachLimits cap concurrent attachments on this replica.
	AttachLimits AttachLimits
	// Health is the replica's view of its dependencies, for /readyz
	// (nil: only the probe's own checks).
	Health *health.Tracker
}

// Server is the HTTP API.
type Server struct {
	cfg Config
	log hclog.Logger
	mux *http.ServeMux
	// draining is set by Drain: new sessions are refused with 503.
	draining chan struct{}
	attaches *attachCounter
}

// New builds the handler tree.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 3 * time.Minute
	}
	if cfg.Web == nil {
		cfg.Web = web.Handler()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.Named("http"), mux: http.NewServeMux(), draining: make(chan struct{}),
		attaches: newAttachCounter(cfg.AttachLimits)}
	m := s.mux
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	if cfg.Metrics != nil {
		m.Handle("GET /metrics", cfg.Metrics.Handler())
	}
	m.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OpenAPI) // a client that went away has nothing to be told
	})
	m.HandleFunc("POST /v1/sessions", s.tenant(s.createSession))
	m.HandleFunc("GET /v1/sessions", s.tenant(s.listSessions))
	m.HandleFunc("GET /v1/sessions/{id}", s.tenant(s.getSession))
	m.HandleFunc("DELETE /v1/sessions/{id}", s.tenant(s.deleteSession))
	m.HandleFunc("POST /v1/sessions/{id}/tickets", s.tenant(s.createTicket))
	m.HandleFunc("GET /v1/sessions/{id}/events", s.tenant(s.events))
	m.HandleFunc("GET /v1/events", s.tenant(s.tenantEvents))
	m.HandleFunc("GET /v1/sessions/{id}/attach", s.attach)
	m.HandleFunc("GET /v1/pools", s.listPools)
	if cfg.Tunnels != nil {
		m.Handle("GET "+tunnel.Path, cfg.Tunnels)
	}
	m.HandleFunc("GET /v1/whoami", s.tenant(s.whoami))
	m.HandleFunc("POST /v1/tenants", s.admin(s.createTenant))
	m.HandleFunc("GET /v1/tenants", s.admin(s.listTenants))
	m.HandleFunc("DELETE /v1/tenants/{id}", s.admin(s.deleteTenant))
	m.HandleFunc("POST /v1/tenants/{id}/keys", s.admin(s.rotateKey))
	m.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	m.Handle("/", cfg.Web)
	return s
}

// Drain makes the server refuse new sessions (503) while it shuts down.
func (s *Server) Drain() {
	select {
	case <-s.draining:
	default:
		close(s.draining)
	}
}

func (s *Server) isDraining() bool {
	select {
	case <-s.draining:
		return true
	default:
		return false
	}
}

// ServeHTTP logs (method, path, status — never the query, which may hold a
// ticket, nor any header) and turns panics into 500s.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if rw.status == 0 {
				writeError(rw, http.StatusInternalServerError, "internal", "internal error")
			}
		}
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rw.status, "duration", time.Since(start))
	}()
	s.mux.ServeHTTP(rw, r)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (flush, hijack) reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush forwards to the underlying writer (for server-sent events).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// ---- errors and JSON ----

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: &api.ErrorDetail{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// An encoding error here is a client that went away: nothing to tell it.
	_ = json.NewEncoder(w).Encode(v)
}

// fail maps an error to its status and JSON body; unexpected errors are
// logged and answered with a generic 500.
func (s *Server) fail(w http.ResponseWriter, err error) {
	var inv *sessions.InvalidError
	var quota *sessions.QuotaError
	switch {
	case errors.As(err, &inv):
		writeError(w, http.StatusUnprocessableEntity, "invalid", inv.Error())
	case errors.As(err, &quota):
		w.Header().Set("Retry-After", strconv.Itoa(int(quota.RetryAfter.Seconds())))
		writeError(w, http.StatusTooManyRequests, "over_quota", quota.Error())
	case errors.Is(err, sessions.ErrNotFound), errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such session")
	case errors.Is(err, sessions.ErrWrongState):
		writeError(w, http.StatusConflict, "wrong_state", err.Error())
	default:
		s.log.Error("request failed", "error", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

// maxBody bounds request bodies.
const maxBody = 1 << 20

// decode reads a JSON object body into v; false (after answering 400) if it
// can't. An empty body (or null) decodes as {} when allowEmpty; otherwise,
// and for any other non-object (an array, a number...), it is a 400.
func decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "cannot read the request body (at most 1 MiB)")
		return false
	}
	body := bytes.TrimLeft(b, " \t\r\n")
	switch {
	case len(body) == 0 || string(bytes.TrimSpace(body)) == "null":
		if allowEmpty {
			return true
		}
		what := "empty"
		if len(body) > 0 {
			what = "null"
		}
		writeError(w, http.StatusBadRequest, "bad_request", "the request body is "+what+"; want a JSON object")
		return false
	case body[0] != '{':
		if !json.Valid(body) {
			writeError(w, http.StatusBadRequest, "bad_request", "malformed JSON body: "+jsonProblem(json.Unmarshal(body, new(any))))
			return false
		}
		writeError(w, http.StatusBadRequest, "bad_request", "the request body must be a JSON object")
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "malformed JSON body: "+jsonProblem(err))
		return false
	}
	return true
}

// jsonProblem describes a JSON error in JSON's terms, without echoing the
// input (which may hold a credential) or naming Go types.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return "the body must be a JSON object"
		}
		return fmt.Sprintf("field %q must be %s", te.Field, jsonKind(te.Type))
	}
	return "not a JSON object of the expected shape"
}

// jsonKind names, in JSON's terms, what a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "a different JSON type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a different JSON type"
}

// ---- authentication ----

type tenantHandler func(w http.ResponseWriter, r *http.Request, t *store.Tenant)

func (s *Server) tenant(h tenantHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t, err := s.cfg.Auth.Tenant(r.Context(), auth.BearerToken(r))
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthenticated) {
				s.log.Error("authenticate", "error", err)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="hangar"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid API key")
			return
		}
		h(w, r, t)
	}
}

func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.cfg.Auth.Admin(auth.BearerToken(r)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hangar-admin"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid admin key")
			return
		}
		h(w, r)
	}
}

// ---- health ----

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

// readyz answers whether this replica can take work: 200 when it can (with
// the degraded checks, if any), 503 with the reasons when it cannot.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ready, problems := s.Readiness(ctx)
	reasons, degraded := []string{}, []string{}
	for _, p := range problems {
		if p.Degraded {
			degraded = append(degraded, p.String())
		} else {
			reasons = append(reasons, p.String())
		}
	}
	body := map[string]any{"ok": ready, "reasons": reasons, "degraded": degraded, "problems": reasons}
	if !ready {
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// Readiness is whether this replica can take work and every check that
// fails: shutting down, the store not readable, the loops' view from
// Config.Health (store writes, Fly), and Fly unreadable before the first
// pool list (which /readyz then retries).
func (s *Server) Readiness(ctx context.Context) (bool, []health.Problem) {
	problems := s.cfg.Health.Problems()
	if s.isDraining() {
		problems = append(problems, health.Problem{Check: health.CheckDraining, Detail: "shutting down"})
	}
	if _, err := s.cfg.Store.GetTenant(ctx, "readyz-probe"); err != nil && !errors.Is(err, store.ErrNotFound) {
		problems = append(problems, health.Problem{Check: health.CheckStoreRead, Detail: err.Error()})
	}
	if s.cfg.Pools.ReadAt().IsZero() {
		// No pool list yet: nothing can be created here.
		if err := s.cfg.Pools.Refresh(ctx); err != nil {
			problems = append(problems, health.Problem{Check: health.CheckFly, Detail: "no pool list yet: " + err.Error()})
		}
	}
	ready := true
	for _, p := range problems {
		if !p.Degraded {
			ready = false
		}
	}
	return ready, problems
}

// ---- base URLs ----

// baseURL is the daemon's external base URL as the client sees it.
func (s *Server) baseURL(r *http.Request) *url.URL {
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil {
			return u
		}
	}
	u := &url.URL{Scheme: "http", Host: r.Host}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	if s.cfg.TrustedProxyHeaders {
		if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
			u.Scheme = p
		}
		if h := r.Header.Get("X-Forwarded-Host"); h != "" {
			u.Host = h
		}
	}
	return u
}

// originAllowed: a WebSocket upgrade from a browser must come from the
// daemon's own origin or an allowed one. No Origin (non-browser clients) passes.
func (s *Server) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	ou, err := url.Parse(o)
	if err != nil || ou.Host == "" {
		return false
	}
	base := s.baseURL(r)
	// The whole origin must match, scheme included: a page served over
	// plain http (which anyone on the path can rewrite) is not the https
	// daemon's own origin.
	if strings.EqualFold(ou.Scheme, base.Scheme) && strings.EqualFold(ou.Host, base.Host) {
		return true
	}
	for _, a := range s.cfg.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimRight(a, "/"), ou.Scheme+"://"+ou.Host) {
			return true
		}
	}
	return false
}
