package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/broker"
	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/api"
	"github.com/hangarhq/hangar/internal/wire"
)

// parseTTL reads a Go duration string ("60s") or a number of seconds; set
// is false when the field is absent or null (the default applies). A given
// value is never replaced by the default: zero, negative, tiny (1e-300) or
// huge values come back as they are, for the caller's range check to refuse.
func parseTTL(raw json.RawMessage) (ttl time.Duration, set bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		d, err := time.ParseDuration(s)
		return d, true, err
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, true, errors.New("want a duration string like \"60s\" or a number of seconds")
	}
	secs := f * float64(time.Second)
	switch {
	case f > 0 && secs < 1:
		// Rounds to 0 ns: not the default, but too small.
		return -1, true, nil
	case secs > float64(math.MaxInt64) || secs < float64(math.MinInt64):
		return 0, true, errors.New("out of range")
	}
	return time.Duration(secs), true, nil
}

func (s *Server) createTicket(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	ss, err := s.cfg.Sessions.Get(r.Context(), t.ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	var req api.TicketRequest
	if !decode(w, r, &req, true) {
		return
	}
	if !ss.State.Live() {
		writeError(w, http.StatusConflict, "wrong_state", fmt.Sprintf("session %s is %s", ss.ID, ss.State))
		return
	}
	role := req.Role
	if role == "" {
		role = string(wire.RoleWriter)
	}
	maxTTL, maxUses := auth.MaxRWTicketTTL, auth.MaxRWTicketUses
	switch wire.Role(role) {
	case wire.RoleWriter:
	case wire.RoleReader:
		maxTTL, maxUses = auth.MaxROTicketTTL, auth.MaxROTicketUses
	default:
		writeError(w, http.StatusUnprocessableEntity, "invalid", fmt.Sprintf("role: %q: want rw or ro", role))
		return
	}
	ttl, set, err := parseTTL(req.TTL)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "ttl: "+err.Error())
		return
	}
	if !set {
		ttl = auth.DefaultTicketTTL
	}
	if ttl < time.Second || ttl > maxTTL {
		writeError(w, http.StatusUnprocessableEntity, "invalid", fmt.Sprintf("ttl: want 1s..%v for a %s ticket", maxTTL, role))
		return
	}
	uses := req.Uses
	if uses == 0 {
		uses = 1
	}
	if uses < 1 || uses > maxUses {
		writeError(w, http.StatusUnprocessableEntity, "invalid", fmt.Sprintf("uses: want 1..%d for a %s ticket", maxUses, role))
		return
	}
	secret, err := auth.NewSecret(auth.TicketPrefix)
	if err != nil {
		s.fail(w, err)
		return
	}
	exp := time.Now().Add(ttl).UTC().Truncate(time.Second)
	if err := s.cfg.Store.CreateTicket(r.Context(), &store.Ticket{
		Hash: auth.Hash(secret), SessionID: ss.ID, TenantID: t.ID, Role: role, ExpiresAt: exp, UsesLeft: uses,
	}); err != nil {
		s.fail(w, err)
		return
	}
	u := s.baseURL(r)
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/sessions/" + ss.ID + "/attach"
	u.RawQuery = url.Values{"ticket": {secret}}.Encode()
	writeJSON(w, http.StatusCreated, api.Ticket{Ticket: secret, Role: role, ExpiresAt: &exp, URL: u.String()})
}

// attach checks the Origin, authenticates a WebSocket attach (API key or a
// ticket for this session), checks that the caller's tenant owns the live
// session, upgrades with the session mode's subprotocol and hands the socket
// to the broker. Everything that can be refused without credentials is
// checked before a ticket is redeemed, so that a refused attach spends no
// use of it; a ticket for another session spends nothing either.
func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	// The checks and the upgrade run on a short-lived goroutine: their deep
	// calls (auth, store, handshake) would otherwise grow this goroutine's
	// stack, and Go keeps a grown stack for as long as the stream stays
	// attached — about 8 KiB per idle stream. This goroutine only serves.
	type accepted struct {
		c       *websocket.Conn
		target  broker.Target
		release func()
	}
	done := make(chan *accepted, 1)
	go func() {
		c, t, who, ok := s.acceptAttach(w, r)
		if !ok {
			done <- nil
			return
		}
		release, err := s.attaches.acquire(t.SessionID, who.ticketHash, who.tenantID)
		if err != nil {
			// Refused after the upgrade, so that the client gets the protocol's
			// answer: an error frame with the retry hint, then 4029.
			s.log.Info("attach refused", "session", t.SessionID, "tenant", who.tenantID, "reason", err.Error())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{
				Code: wire.ErrCodeRateLimited, Message: err.Error(), RetryAfterMS: s.attaches.lim.RetryAfter.Milliseconds()}))
			cancel()
			_ = c.Close(wire.CloseRateLimited, wire.ErrCodeRateLimited)
			done <- nil
			return
		}
		done <- &accepted{c: c, target: t, release: release}
	}()
	a := <-done
	if a == nil {
		return
	}
	defer a.release()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Attachments.Inc()
		defer s.cfg.Metrics.Attachments.Dec()
	}
	s.cfg.Broker.Serve(r.Context(), a.c, a.target)
}

// acceptAttach does attach's checks and the WebSocket upgrade; ok is false
// when it has answered the request with an error.
func (s *Server) acceptAttach(w http.ResponseWriter, r *http.Request) (*websocket.Conn, broker.Target, attacher, bool) {
	ctx := r.Context()
	id := r.PathValue("id")
	q := r.URL.Query()
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "forbidden_origin", "WebSocket origin not allowed")
		return nil, broker.Target{}, attacher{}, false
	}
	askRO := false
	switch want := q.Get("role"); want {
	case "", string(wire.RoleWriter):
	case string(wire.RoleReader):
		askRO = true // one may always ask for less
	default:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("role %q: want rw or ro", want))
		return nil, broker.Target{}, attacher{}, false
	}
	var tenantID, role, ticketHash string
	if tk := q.Get("ticket"); tk != "" {
		t, err := s.cfg.Auth.UseTicket(ctx, tk, id, time.Now())
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthenticated) {
				s.log.Error("use ticket", "error", err)
			}
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid, expired or used ticket")
			return nil, broker.Target{}, attacher{}, false
		}
		tenantID, role, ticketHash = t.TenantID, t.Role, string(auth.Hash(tk))
	} else {
		t, err := s.cfg.Auth.Tenant(ctx, auth.BearerToken(r))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hangar"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid API key or ticket")
			return nil, broker.Target{}, attacher{}, false
		}
		tenantID, role = t.ID, string(wire.RoleWriter)
	}
	if askRO {
		role = string(wire.RoleReader)
	}
	ss, err := s.cfg.Sessions.Get(ctx, tenantID, id)
	if err != nil {
		s.fail(w, err)
		return nil, broker.Target{}, attacher{}, false
	}
	if !ss.State.Live() || ss.State == store.StateEnding {
		writeError(w, http.StatusConflict, "wrong_state", fmt.Sprintf("session %s is %s", ss.ID, ss.State))
		return nil, broker.Target{}, attacher{}, false
	}
	sub := wire.SubprotocolPTY
	if ss.Mode == "jsonl" {
		sub = wire.SubprotocolJSONL
	}
	if offered := websocketProtocols(r); len(offered) > 0 && !slices.Contains(offered, sub) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("session %s is in %s mode: offer the subprotocol %s", ss.ID, ss.Mode, sub))
		return nil, broker.Target{}, attacher{}, false
	} else if len(offered) == 0 && sub != wire.SubprotocolPTY {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("session %s is in %s mode: offer the subprotocol %s", ss.ID, ss.Mode, sub))
		return nil, broker.Target{}, attacher{}, false
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{sub},
		// The Origin was checked above against our own and the allowed origins.
		InsecureSkipVerify: true,
	})
	if err != nil {
		s.log.Debug("accept attach", "session", id, "error", err)
		return nil, broker.Target{}, attacher{}, false
	}
	return c, broker.Target{SessionID: id, Role: role, WaitReady: s.waitReady(id)}, attacher{tenantID: tenantID, ticketHash: ticketHash}, true
}

// attacher is who an attach is counted against (AttachLimits).
type attacher struct {
	tenantID   string
	ticketHash string // "" when the attach used an API key
}

func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

var stateDetail = map[store.SessionState]string{
	store.StatePending:  "waiting for a machine",
	store.StateClaiming: "claiming a machine",
	store.StateStarting: "starting the machine and the agent",
}

// waitReady polls the store (so that it sees any replica's progress) until
// the session is ready and resolves its agent.
func (s *Server) waitReady(id string) func(ctx context.Context, progress func(state, detail string, queuePosition int)) (broker.Endpoint, error) {
	return func(ctx context.Context, progress func(state, detail string, queuePosition int)) (broker.Endpoint, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout+30*time.Second)
		defer cancel()
		lastState, lastQ := store.SessionState(""), -1
		for {
			ss, err := s.cfg.Sessions.Get(ctx, "", id)
			if errors.Is(err, sessions.ErrNotFound) {
				return broker.Endpoint{}, fmt.Errorf("session %s: %w", id, broker.ErrGone)
			}
			if err != nil {
				if ctx.Err() != nil {
					return broker.Endpoint{}, fmt.Errorf("session %s not ready in time: %w", id, broker.ErrUnavailable)
				}
				return broker.Endpoint{}, fmt.Errorf("read session %s: %v: %w", id, err, broker.ErrUnavailable)
			}
			switch ss.State {
			case store.StateEnded, store.StateFailed, store.StateEnding:
				msg := string(ss.State)
				if ss.Reason != "" {
					msg += ": " + ss.Reason
				}
				return broker.Endpoint{}, fmt.Errorf("session %s %s: %w", id, msg, broker.ErrGone)
			case store.StateReady:
				agentURL, hc, machineID, err := s.cfg.Sessions.Endpoint(ctx, ss)
				if err != nil {
					return broker.Endpoint{}, fmt.Errorf("session %s: %v: %w", id, err, broker.ErrUnavailable)
				}
				return broker.Endpoint{AgentURL: agentURL, HTTPClient: hc, MachineID: machineID, SessionID: id}, nil
			}
			q := s.cfg.Sessions.QueuePosition(ctx, ss)
			if progress != nil && (ss.State != lastState || q != lastQ) {
				progress(string(ss.State), stateDetail[ss.State], q)
				lastState, lastQ = ss.State, q
			}
			select {
			case <-ctx.Done():
				return broker.Endpoint{}, fmt.Errorf("session %s not ready in time (%s): %w", id, ss.State, broker.ErrUnavailable)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}
