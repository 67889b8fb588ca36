// Package flyspec embeds Fly's published Machines API OpenAPI document and
// checks HTTP exchanges against it: a validating http.RoundTripper for the
// client side, so that tests drive the real client against the emulator (or
// a fake) and fail on any request or response that Fly's spec rejects.
//
// The spec (machines-openapi.json, a verbatim copy of the document Fly
// publishes, see /work/shared/fly/SOURCE.md for its origin) has known gaps
// against the live service. They are handled by explicit exemptions, each
// commented where it is applied:
//
//   - Lease bodies: the service answers GET/POST .../lease with an envelope
//     {"status":"success","data":{...}}; the spec models the Lease flat. The
//     envelope's data is checked against the spec's Lease schema.
//   - The list filter metadata.KEY=VALUE is documented but not declared;
//     undeclared query parameters are not rejected (kin-openapi never does).
//   - Machine lacks "version" and "cordoned"; the spec does not forbid
//     additional properties, so they pass without an exemption.
//   - 409 and 429 (and most other errors) are not declared; every error
//     response (status >= 400) is instead checked to be Fly's error body, a
//     JSON object with a string "error" (or "message") and an optional string
//     "status". Its code is not held to the spec's enum (unknown,
//     insufficient_capacity), since the service also sends e.g. name_taken.
//   - No securitySchemes: the Authorization header is not checked here.
//
// Paths are matched relative to /v1, whatever the host: the spec's server
// URL is Fly's public endpoint, while tests talk to loopback servers.
package flyspec

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

//go:embed machines-openapi.json
var specJSON []byte

// JSON returns the embedded OpenAPI document, unchanged.
func JSON() []byte { return bytes.Clone(specJSON) }

var (
	loadOnce  sync.Once
	loadedDoc *openapi3.T
	loadedRtr routers.Router
	loadErr   error
)

// load parses the document once. The server list is dropped so that the
// router matches paths alone (relative to /v1); see stripV1.
func load() (*openapi3.T, routers.Router, error) {
	loadOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(specJSON)
		if err != nil {
			loadErr = fmt.Errorf("load fly openapi document: %w", err)
			return
		}
		doc.Servers = nil
		// Fly's document gives PUT and PATCH .../metadata the same
		// operationId, which kin-openapi's validation rejects; rename the
		// PATCH one in memory (the embedded file stays verbatim).
		if pi := doc.Paths.Value("/apps/{app_name}/machines/{machine_id}/metadata"); pi != nil && pi.Patch != nil && pi.Put != nil &&
			pi.Patch.OperationID == pi.Put.OperationID {
			pi.Patch.OperationID += "_patch"
		}
		if err := doc.Validate(context.Background()); err != nil {
			loadErr = fmt.Errorf("validate fly openapi document: %w", err)
			return
		}
		r, err := legacy.NewRouter(doc)
		if err != nil {
			loadErr = fmt.Errorf("route fly openapi document: %w", err)
			return
		}
		loadedDoc, loadedRtr = doc, r
	})
	return loadedDoc, loadedRtr, loadErr
}

// Spec returns the parsed document (servers removed). Callers must not modify it.
func Spec() (*openapi3.T, error) {
	doc, _, err := load()
	return doc, err
}

// Violation is one way an exchange broke the spec.
type Violation struct {
	Method string
	Path   string // as sent, including any prefix before /v1
	Status int    // 0 for request violations
	Err    error
}

// Error implements error.
func (v *Violation) Error() string {
	if v.Status == 0 {
		return fmt.Sprintf("flyspec: request %s %s: %v", v.Method, v.Path, v.Err)
	}
	return fmt.Sprintf("flyspec: response %d to %s %s: %v", v.Status, v.Method, v.Path, v.Err)
}

// Unwrap returns the underlying validation error.
func (v *Violation) Unwrap() error { return v.Err }

// Transport is an http.RoundTripper that checks every request it sends and
// every response it receives against Fly's spec, recording violations. It
// never changes what is sent or received, and it does not fail requests
// because of violations.
type Transport struct {
	base http.RoundTripper

	mu       sync.Mutex
	errs     []error
	exchange int
}

// NewTransport wraps base (nil means http.DefaultTransport).
func NewTransport(base http.RoundTripper) *Transport {
	if base == nil {
		base = http.DefaultTransport
	}
	return &Transport{base: base}
}

// Errors returns the violations recorded so far.
func (t *Transport) Errors() []error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.errs)
}

// Exchanges returns how many request/response pairs were checked.
func (t *Transport) Exchanges() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.exchange
}

// Reset forgets the recorded violations.
func (t *Transport) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs = nil
	t.exchange = 0
}

func (t *Transport) record(v *Violation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs = append(t.errs, v)
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("flyspec: read request body: %w", err)
		}
		reqBody = b
	}
	out := req.Clone(req.Context())
	if reqBody != nil {
		out.Body = io.NopCloser(bytes.NewReader(reqBody))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	}

	route, params, rerr := findRoute(req)
	var input *openapi3filter.RequestValidationInput
	if rerr != nil {
		t.record(&Violation{Method: req.Method, Path: req.URL.Path, Err: rerr})
	} else {
		input = requestInput(req, reqBody, route, params)
		if err := openapi3filter.ValidateRequest(req.Context(), input); err != nil {
			t.record(&Violation{Method: req.Method, Path: req.URL.Path, Err: err})
		}
	}

	resp, err := t.base.RoundTrip(out)
	if err != nil {
		return resp, err
	}
	respBody, rdErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if rdErr != nil {
		// Hand the failure to the caller the way a broken body would show up.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(respBody), errReader{rdErr}))
		return resp, nil
	}
	t.mu.Lock()
	t.exchange++
	t.mu.Unlock()
	if input != nil {
		if err := checkResponse(req.Context(), input, resp, respBody); err != nil {
			t.record(&Violation{Method: req.Method, Path: req.URL.Path, Status: resp.StatusCode, Err: err})
		}
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// stripV1 returns the path after the first "/v1" segment, which is what the
// spec's paths are relative to.
func stripV1(p string) (string, bool) {
	if i := strings.Index(p, "/v1/"); i >= 0 {
		return p[i+len("/v1"):], true
	}
	if strings.HasSuffix(p, "/v1") {
		return "/", true
	}
	return "", false
}

func findRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	_, router, err := load()
	if err != nil {
		return nil, nil, err
	}
	rel, ok := stripV1(req.URL.Path)
	if !ok {
		return nil, nil, fmt.Errorf("path is not under /v1")
	}
	probe := req.Clone(req.Context())
	u := *req.URL
	u.Path, u.RawPath = rel, ""
	probe.URL = &u
	route, params, err := router.FindRoute(probe)
	if err != nil {
		return nil, nil, fmt.Errorf("no operation %s %s in the spec: %w", req.Method, rel, err)
	}
	return route, params, nil
}

func requestInput(req *http.Request, body []byte, route *routers.Route, params map[string]string) *openapi3filter.RequestValidationInput {
	check := req.Clone(req.Context())
	if body != nil {
		check.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		check.Body = http.NoBody
	}
	return &openapi3filter.RequestValidationInput{
		Request:    check,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			// The spec declares no securitySchemes, so there is nothing to authenticate.
			AuthenticationFunc:  openapi3filter.NoopAuthenticationFunc,
			SkipSettingDefaults: true,
			MultiError:          true,
		},
	}
}

func checkResponse(ctx context.Context, in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte) error {
	status := resp.StatusCode
	if status >= 400 {
		// Exemption: most error statuses (409, 429, 404 on most paths, ...)
		// are not declared; check every error against Fly's error body shape.
		return checkErrorBody(resp.Header, body)
	}
	op := in.Route.Operation
	if status >= 200 && status < 300 {
		if declared := declared2xx(op); len(declared) > 0 && !slices.Contains(declared, status) {
			return fmt.Errorf("status %d: the spec declares %v for this operation", status, declared)
		}
	}
	if isLeaseBody(in) {
		return checkLeaseEnvelope(status, resp.Header, body)
	}
	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{MultiError: true},
	}
	return openapi3filter.ValidateResponse(ctx, rin)
}

func declared2xx(op *openapi3.Operation) []int {
	var out []int
	if op.Responses == nil {
		return nil
	}
	for code := range op.Responses.Map() {
		n, err := strconv.Atoi(code)
		if err == nil && n >= 200 && n < 300 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// isLeaseBody reports whether the response carries a lease (GET or POST .../lease).
func isLeaseBody(in *openapi3filter.RequestValidationInput) bool {
	m := in.Request.Method
	return strings.HasSuffix(in.Route.Path, "/lease") && (m == http.MethodGet || m == http.MethodPost)
}

// checkLeaseEnvelope applies the lease exemption: the body is
// {"status": "success", "data": <spec Lease>}.
func checkLeaseEnvelope(status int, h http.Header, body []byte) error {
	doc, _, err := load()
	if err != nil {
		return err
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("lease response content type %q, want application/json", ct)
	}
	var env struct {
		Status *string         `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("lease response is not a JSON object: %w", err)
	}
	if env.Status == nil || *env.Status != "success" {
		return fmt.Errorf("lease response envelope: want \"status\":\"success\", got %s", body)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return errors.New("lease response envelope has no data")
	}
	var data any
	if err := json.Unmarshal(env.Data, &data); err != nil {
		return fmt.Errorf("lease data: %w", err)
	}
	schema := doc.Components.Schemas["Lease"].Value
	if err := schema.VisitJSON(data, openapi3.MultiErrors(), openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("lease data does not match the spec's Lease: %w", err)
	}
	if m, ok := data.(map[string]any); ok {
		if n, _ := m["nonce"].(string); n == "" {
			return errors.New("lease data has no nonce")
		}
	}
	return nil
}

// checkErrorBody checks Fly's error body: {"error": "...", "status": "..."}.
func checkErrorBody(h http.Header, body []byte) error {
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("error response content type %q, want application/json (body %.200q)", ct, body)
	}
	var eb map[string]any
	if err := json.Unmarshal(body, &eb); err != nil {
		return fmt.Errorf("error response is not a JSON object: %w (body %.200q)", err, body)
	}
	msg, hasErr := eb["error"].(string)
	alt, hasMsg := eb["message"].(string)
	if (!hasErr || msg == "") && (!hasMsg || alt == "") {
		return fmt.Errorf("error response has no \"error\" string: %.200q", body)
	}
	if s, ok := eb["status"]; ok {
		if _, isStr := s.(string); !isStr {
			return fmt.Errorf("error response \"status\" is not a string: %.200q", body)
		}
	}
	return nil
}

// CheckingClient returns an *http.Client whose transport checks every
// exchange against Fly's spec; at test cleanup each violation fails t.
func CheckingClient(t testing.TB) *http.Client {
	t.Helper()
	return &http.Client{Transport: CheckingTransport(t, nil)}
}

// CheckingTransport wraps base (nil: a fresh clone of http.DefaultTransport,
// closed at cleanup) like NewTransport and reports every violation as a test
// error at cleanup.
func CheckingTransport(t testing.TB, base http.RoundTripper) *Transport {
	t.Helper()
	if _, err := Spec(); err != nil {
		t.Fatalf("flyspec: %v", err)
	}
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		t.Cleanup(tr.CloseIdleConnections)
		base = tr
	}
	tr := NewTransport(base)
	t.Cleanup(func() { Report(t, tr) })
	return tr
}

// Report fails t with every violation tr recorded.
func Report(t testing.TB, tr *Transport) {
	t.Helper()
	for _, err := range tr.Errors() {
		t.Errorf("%v", err)
	}
}

// ValidateRequest checks one request against the spec without sending it
// (the body is read and restored). Useful for asserting on request shapes.
func ValidateRequest(req *http.Request) error {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return err
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	route, params, err := findRoute(req)
	if err != nil {
		return err
	}
	return openapi3filter.ValidateRequest(req.Context(), requestInput(req, body, route, params))
}

// OperationID returns the spec's operationId for a method and a path
// relative to /v1 (or a full URL path containing /v1), or "" if none.
func OperationID(method, path string) string {
	if rel, ok := stripV1(path); ok {
		path = rel
	}
	req := &http.Request{Method: method, URL: &url.URL{Path: path}}
	_, router, err := load()
	if err != nil {
		return ""
	}
	route, _, err := router.FindRoute(req)
	if err != nil {
		return ""
	}
	return route.Operation.OperationID
}
