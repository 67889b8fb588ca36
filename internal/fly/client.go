// Package fly is hangar's typed client for the Fly Machines REST API
// (apps, machines, leases, metadata, events, secrets).
//
// Pacing: by default every request first waits for its turn under Fly's
// published rate limits (LimitKey; Options.Pacer shares one budget between
// processes), so that bursts queue here instead of drawing 429s.
//
// Retries: every call is retried with exponential backoff and jitter on 429
// (honouring Retry-After when there is one; Fly does not promise it), on
// 408, on 500/502/503/504 and on connection errors, up to
// Options.MaxAttempts attempts; a 404 from reading an app or machine this
// client created less than Options.NotFoundGrace ago is retried too (Fly is
// eventually consistent), and apps are created with wait=true. A request
// that may already have reached Fly is re-sent only when re-sending cannot do
// harm: GET, PUT, DELETE and the state-converging POSTs (start, stop,
// suspend, lease refresh, metadata and secret writes). Non-idempotent POSTs
// (create app, create machine, update machine, lease acquire, signal,
// restart) are re-sent only when the request certainly did not reach the
// server (it was never written to the connection) or on 429, which Fly
// returns before acting; a 408 is as ambiguous as a 5xx. After an ambiguous failure CreateApp looks the app
// up by its (globally unique) name before re-sending, and CreateMachine does
// the same by machine name when the request names the machine; otherwise
// the ambiguous error is returned to the caller.
package fly

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultBaseURL is Fly's public Machines API endpoint (without /v1).
const DefaultBaseURL = "https://api.machines.dev"

// Environment variables read by NewFromEnv.
const (
	EnvAPIURL   = "FLY_API_URL"
	EnvAPIToken = "FLY_API_TOKEN"
)

// Defaults for Options.
const (
	DefaultMaxAttempts   = 5
	DefaultMinBackoff    = 200 * time.Millisecond
	DefaultMaxBackoff    = 5 * time.Second
	DefaultMaxRetryAfter = 60 * time.Second
	// DefaultNotFoundGrace: fly-go retries a 404 on list for about 5 s after
	// creating an app.
	DefaultNotFoundGrace = 5 * time.Second
	// MaxWaitPerCall is the longest server-side wait Fly accepts per call.
	MaxWaitPerCall = 60 * time.Second
)

// maxResponseBytes bounds how much of a response body is read.
const maxResponseBytes = 32 << 20

// Options configures a Client.
type Options struct {
	// BaseURL is the API's base URL without the /v1 suffix (a trailing /v1 is
	// tolerated and stripped). Empty means DefaultBaseURL.
	BaseURL string
	// Token is a Fly API token. Macaroon tokens (fm1r_, fm1a_, fm2_) are sent
	// with the FlyV1 scheme, others as Bearer; several tokens may be
	// comma-separated. Empty sends no Authorization header.
	Token string
	// Logger receives one debug line per HTTP attempt. Nil discards.
	Logger hclog.Logger
	// HTTPClient sends the requests. Nil uses a fresh client with no overall
	// timeout (every call is bounded by its context; waits long-poll up to 60 s).
	HTTPClient *http.Client
	// UserAgent overrides the User-Agent header.
	UserAgent string
	// MaxAttempts bounds the attempts per call, the first included. Zero
	// means DefaultMaxAttempts; 1 disables retries.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (before jitter). Zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After the client will sleep for; a
	// longer one ends the call with the 429 error at once. Zero means
	// DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// OnResponse, if set, is called after every HTTP attempt with the
	// request method, the action name (e.g. "machine_start"), the HTTP status
	// (0 when no response arrived) and the transport error, if any. It lets
	// the daemon count calls by outcome without this package knowing about
	// metrics. It must be safe for concurrent use.
	OnResponse func(method, action string, status int, err error)
	// Pacer hands out Fly's rate budget (see LimitKey): every request waits
	// for its token before it is sent, so that bursts of work queue up
	// locally instead of drawing 429s, which Fly answers without saying when
	// to come back. Nil: a LocalPacer of this client's own. Share one Pacer
	// between every client (and process) acting on one organisation.
	Pacer Pacer
	// NoPace turns pacing off (tests of the retry path only).
	NoPace bool
	// NotFoundGrace is how long after this client created an app or a
	// machine a 404 from reading it (get, list, wait, metadata) is taken for
	// Fly's eventual consistency and retried, as fly-go does for lists after
	// an app create and flyctl for waits after a machine create. Zero means
	// DefaultNotFoundGrace; negative turns it off.
	NotFoundGrace time.Duration
}

// Client talks to the Fly Machines API. It is safe for concurrent use.
type Client struct {
	base          string // scheme://host[/prefix]/v1, no trailing slash
	auth          string // Authorization header value, or ""
	hc            *http.Client
	log           hclog.Logger
	userAgent     string
	maxAttempts   int
	minBackoff    time.Duration
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	onResponse    func(method, action string, status int, err error)
	// pause sleeps between attempts; tests replace it to observe backoffs.
	pause func(ctx context.Context, d time.Duration) error
	pacer Pacer // nil when Options.NoPace

	notFoundGrace   time.Duration
	noBatchMetadata atomic.Bool // the batch metadata endpoint answered 404/405
	createdMu       sync.Mutex
	created         map[string]time.Time // "app" or "app/machine" -> when this client created it
}

// New returns a client for opts. It fails only on an unusable BaseURL.
func New(opts Options) (*Client, error) {
	base := strings.TrimSpace(opts.BaseURL)
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("fly api base URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fly api base URL %q: want http(s)://host[:port]", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("fly api base URL %q: must not have a query or fragment", base)
	}
	path := strings.TrimRight(u.EscapedPath(), "/")
	path = strings.TrimSuffix(path, "/v1")
	c := &Client{
		base:          u.Scheme + "://" + u.Host + path + "/v1",
		auth:          authorization(opts.Token),
		hc:            opts.HTTPClient,
		log:           opts.Logger,
		userAgent:     opts.UserAgent,
		maxAttempts:   opts.MaxAttempts,
		minBackoff:    opts.MinBackoff,
		maxBackoff:    opts.MaxBackoff,
		maxRetryAfter: opts.MaxRetryAfter,
		onResponse:    opts.OnResponse,
		pacer:         opts.Pacer,
		notFoundGrace: opts.NotFoundGrace,
		created:       map[string]time.Time{},
	}
	if c.notFoundGrace == 0 {
		c.notFoundGrace = DefaultNotFoundGrace
	}
	if c.pacer == nil && !opts.NoPace {
		c.pacer = NewLocalPacer()
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	if c.userAgent == "" {
		c.userAgent = "hangar-fly-client/1"
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.minBackoff <= 0 {
		c.minBackoff = DefaultMinBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	if c.maxBackoff < c.minBackoff {
		c.maxBackoff = c.minBackoff
	}
	if c.maxRetryAfter <= 0 {
		c.maxRetryAfter = DefaultMaxRetryAfter
	}
	return c, nil
}

// NewFromEnv returns a client configured from FLY_API_URL (base URL without
// /v1; default DefaultBaseURL) and FLY_API_TOKEN.
func NewFromEnv(logger hclog.Logger) (*Client, error) {
	return New(Options{
		BaseURL: os.Getenv(EnvAPIURL),
		Token:   os.Getenv(EnvAPIToken),
		Logger:  logger,
	})
}

// BaseURL returns the URL requests are sent under (ending in /v1).
func (c *Client) BaseURL() string { return c.base }

// authorization builds the Authorization header value as fly-go does:
// scheme FlyV1 when any token is a macaroon, else Bearer.
func authorization(token string) string {
	token = strings.TrimSpace(token)
	for _, scheme := range []string{"FlyV1 ", "Bearer ", "bearer "} {
		token = strings.TrimPrefix(token, scheme)
	}
	if token == "" {
		return ""
	}
	var parts []string
	macaroon := false
	for _, p := range strings.Split(token, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if strings.HasPrefix(p, "fm1r_") || strings.HasPrefix(p, "fm1a_") || strings.HasPrefix(p, "fm2_") {
			macaroon = true
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return ""
	}
	if macaroon {
		return "FlyV1 " + strings.Join(parts, ",")
	}
	return "Bearer " + strings.Join(parts, ",")
}

// retryPolicy says when a request may be sent again after a failure that
// may have reached the server.
type retryPolicy int

const (
	// idempotent: re-sending cannot do harm; retry 429, 5xx and any connection error.
	idempotent retryPolicy = iota
	// unsentOnly: retry only 429 and requests that never reached the server.
	unsentOnly
)

// request is one API call.
type request struct {
	action string
	method string
	path   string // escaped, relative to /v1
	query  url.Values
	body   any // JSON-encoded when non-nil
	nonce  string
	out    any // decoded from a 2xx body when non-nil
	policy retryPolicy

	// ambiguous is set by do when an attempt may have reached the server
	// but its outcome is unknown (5xx, or a connection error after the
	// request was written).
	ambiguous bool
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }

func (c *Client) do(ctx context.Context, r *request) error {
	if ctx == nil {
		return errors.New("fly: nil context")
	}
	var body []byte
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", r.action, err)
		}
		body = b
	}
	target := c.base + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	// graceRetries counts the attempts re-sent for a 404 within
	// NotFoundGrace: bounded by time, they must not use up the attempts of
	// other failures (after ~30 paced 404s in the grace one 429 was final).
	graceRetries := 0
	for attempt := 1; ; attempt++ {
		if err := c.pace(ctx, r); err != nil {
			return fmt.Errorf("fly api %s %s: %w", r.method, r.path, err)
		}
		status, header, respBody, wrote, err := c.once(ctx, r, target, body, attempt)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("fly api %s %s: %w", r.method, r.path, ctxErr)
			}
			retry := (!wrote || r.policy == idempotent) && !permanentTransportError(err)
			if wrote {
				r.ambiguous = true
			}
			if !retry || attempt-graceRetries >= c.maxAttempts {
				return fmt.Errorf("fly api %s %s: %w", r.method, r.path, err)
			}
			if werr := c.sleep(ctx, c.backoff(attempt)); werr != nil {
				return fmt.Errorf("fly api %s %s: %w (after %w)", r.method, r.path, werr, err)
			}
			continue
		}
		if status >= 200 && status < 300 {
			if r.out != nil && len(bytes.TrimSpace(respBody)) > 0 {
				if err := json.Unmarshal(respBody, r.out); err != nil {
					return fmt.Errorf("fly api %s %s: decode %d response: %w", r.method, r.path, status, err)
				}
			}
			return nil
		}
		if status == http.StatusNotFound && r.method == http.MethodDelete && r.ambiguous {
			// An earlier attempt may have done the delete; the thing is gone either way.
			c.log.Debug("fly api delete found nothing after an ambiguous attempt; treating as done", "path", r.path)
			return nil
		}
		apiErr := parseError(r.method, r.path, status, header, respBody)
		retry, fresh := false, false
		wait := c.backoff(attempt)
		switch {
		case status == http.StatusNotFound && r.method == http.MethodGet && c.justCreated(r.path):
			// Fly is eventually consistent: what was just created may not be
			// readable everywhere yet. Bounded by NotFoundGrace, not attempts.
			retry, fresh = true, true
			c.log.Debug("fly api 404 right after create; retrying", "action", r.action, "path", r.path)
		case status == http.StatusRequestTimeout && r.action != "machine_wait":
			// flyctl treats a 408 from any endpoint as transient. Like a 5xx
			// it may come after Fly acted, so only idempotent calls are
			// re-sent. (A wait's 408 is its long-poll ending: WaitMachine
			// loops on it within its own deadline.)
			r.ambiguous = true
			retry = r.policy == idempotent
		case status == http.StatusTooManyRequests:
			// Fly rate-limits before acting, so any request may be re-sent.
			retry = true
			if apiErr.RetryAfter > 0 {
				if apiErr.RetryAfter > c.maxRetryAfter {
					return apiErr
				}
				wait = apiErr.RetryAfter + jitter(apiErr.RetryAfter/10)
			}
		case status == http.StatusInternalServerError || status == http.StatusBadGateway ||
			status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
			r.ambiguous = true
			retry = r.policy == idempotent
			if apiErr.RetryAfter > 0 && apiErr.RetryAfter <= c.maxRetryAfter && apiErr.RetryAfter > wait {
				wait = apiErr.RetryAfter
			}
		}
		if !retry || (attempt-graceRetries >= c.maxAttempts && !fresh) {
			return apiErr
		}
		if fresh {
			graceRetries++
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			// Sleeping would outlive the caller's deadline: report the real cause now.
			return apiErr
		}
		if werr := c.sleep(ctx, wait); werr != nil {
			return fmt.Errorf("%w (while backing off after: %w)", werr, apiErr)
		}
	}
}

// once sends one attempt and reads the whole response. wrote reports
// whether the request was (at least partly) written to a connection, i.e.
// whether the server may have seen it.
func (c *Client) once(ctx context.Context, r *request, target string, body []byte, attempt int) (status int, header http.Header, respBody []byte, wrote bool, err error) {
	// The transport calls these hooks from its own goroutines.
	var wroteHeaders atomic.Bool
	trace := &httptrace.ClientTrace{
		WroteHeaders: func() { wroteHeaders.Store(true) },
		WroteRequest: func(httptrace.WroteRequestInfo) { wroteHeaders.Store(true) },
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), r.method, target, rd)
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if r.nonce != "" {
		req.Header.Set(LeaseNonceHeader, r.nonce)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err == nil {
		respBody, err = io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		resp.Body.Close()
		if err != nil {
			err = fmt.Errorf("read response: %w", err)
		}
		status, header = resp.StatusCode, resp.Header
	}
	elapsed := time.Since(start)
	requestID := ""
	if header != nil {
		requestID = header.Get(RequestIDHeader)
	}
	logArgs := []any{"action", r.action, "method", r.method, "path", r.path, "status", status,
		"duration", elapsed, "attempt", attempt}
	if requestID != "" {
		logArgs = append(logArgs, "fly_request_id", requestID)
	}
	if err != nil {
		logArgs = append(logArgs, "error", err.Error())
	}
	c.log.Debug("fly api request", logArgs...)
	if c.onResponse != nil {
		c.onResponse(r.method, r.action, status, err)
	}
	if err != nil {
		// A response status arrived but its body broke: the server acted.
		return 0, nil, nil, wroteHeaders.Load() || status != 0, err
	}
	return status, header, respBody, true, nil
}

// markCreated records that this client just created app (machine "") or a
// machine of it, for NotFoundGrace.
func (c *Client) markCreated(app, machine string) {
	if c.notFoundGrace <= 0 {
		return
	}
	key := seg(app)
	if machine != "" {
		key += "/" + seg(machine)
	}
	now := time.Now()
	c.createdMu.Lock()
	defer c.createdMu.Unlock()
	if len(c.created) >= 256 {
		for k, t := range c.created {
			if now.Sub(t) > c.notFoundGrace {
				delete(c.created, k)
			}
		}
	}
	c.created[key] = now
}

// justCreated reports whether path reads an app or machine this client
// created less than NotFoundGrace ago.
func (c *Client) justCreated(path string) bool {
	if c.notFoundGrace <= 0 {
		return false
	}
	app, machine := requestTarget(path)
	if app == "" {
		return false
	}
	c.createdMu.Lock()
	defer c.createdMu.Unlock()
	t, ok := c.created[app]
	if machine != "" {
		if mt, mok := c.created[app+"/"+machine]; mok && (!ok || mt.After(t)) {
			t, ok = mt, true
		}
	}
	return ok && time.Since(t) < c.notFoundGrace
}

// permanentTransportError reports errors that another attempt cannot fix:
// the server's certificate is not trusted.
func permanentTransportError(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	return errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr)
}

// backoff returns the pause before attempt+1: exponential from MinBackoff,
// capped at MaxBackoff, with "equal jitter" (half fixed, half random).
func (c *Client) backoff(attempt int) time.Duration {
	d := c.minBackoff
	for i := 1; i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	if d > c.maxBackoff {
		d = c.maxBackoff
	}
	return d/2 + jitter(d/2)
}

// jitter returns a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if c.pause != nil {
		return c.pause(ctx, d)
	}
	return sleepCtx(ctx, d)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// parseError turns a non-2xx response into a *Error, tolerating non-JSON bodies.
func parseError(method, path string, status int, header http.Header, body []byte) *Error {
	e := &Error{StatusCode: status, Method: method, Path: path}
	if header != nil {
		e.RequestID = header.Get(RequestIDHeader)
		e.RetryAfter = parseRetryAfter(header.Get("Retry-After"))
	}
	var eb struct {
		Error   string `json:"error"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Code    string `json:"code"` // the lease envelope's failure code
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &eb) == nil {
		e.Message = eb.Message
		if e.Message == "" {
			e.Message = eb.Error
		}
		e.Code = eb.Status
		if eb.Code != "" && (e.Code == "" || e.Code == "failed" || e.Code == "error") {
			e.Code = eb.Code
		}
		return e
	}
	msg := string(trimmed)
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	e.Message = msg
	return e
}
