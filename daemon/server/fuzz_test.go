package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/internal/api"
)

// FuzzDecodeRequest drives the API's request decoding as POST /v1/sessions
// and POST …/tickets do: the body decoder, then the session request's
// validation and the ticket's ttl. Every refusal is a JSON error of the
// documented code, and no answer repeats a credential; never a panic.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"pool":"default"}`, ``, `null`, `[]`, ` 42`, `{"pool":42}`, `{"pool":"p",`,
		`{"pool":"p","repo":"https://ghp_secrettoken123@github.com/x.git"}`,
		`{"pool":"p","credentials":{"anthropic_api_key":"sk-ant-secret value"}}`,
		`{"pool":"p","git_author":{"name":1}}`, `{"pool":"p","env":{"HANGAR_X":"1"}}`,
		`{"role":"ro","ttl":1e-300,"uses":3}`, `{"ttl":"-1s"}`, `{"ttl":1e300}`, `{"ttl":"60s"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var secrets []string
		var probe struct {
			Credentials map[string]any `json:"credentials"`
		}
		if json.Unmarshal(body, &probe) == nil {
			for _, v := range probe.Credentials {
				if s, ok := v.(string); ok && len(s) >= 12 {
					secrets = append(secrets, s)
				}
			}
		}
		check := func(w *httptest.ResponseRecorder, ok bool) {
			if ok {
				return
			}
			var eb api.ErrorBody
			if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Error == nil || eb.Error.Code != "bad_request" {
				t.Fatalf("refusal %d %s", w.Code, w.Body.Bytes())
			}
			for _, s := range secrets {
				if strings.Contains(w.Body.String(), s) {
					t.Fatalf("the answer repeats a credential: %s", w.Body.Bytes())
				}
			}
		}

		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/sessions", bytes.NewReader(body))
		var req api.CreateSessionRequest
		ok := decode(w, r, &req, false)
		check(w, ok)
		if ok {
			if err := sessions.ValidateRequest(&req, false); err != nil {
				for _, s := range secrets {
					if strings.Contains(err.Error(), s) {
						t.Fatalf("the validation error repeats a credential: %v", err)
					}
				}
			}
		}

		w = httptest.NewRecorder()
		r = httptest.NewRequest(http.MethodPost, "/v1/sessions/s/tickets", bytes.NewReader(body))
		var tr api.TicketRequest
		ok = decode(w, r, &tr, true)
		check(w, ok)
		var secs float64
		if ok && json.Unmarshal(tr.TTL, &secs) == nil && secs > 0 {
			// A positive ttl is never silently zero, which would mean the default.
			if ttl, set, err := parseTTL(tr.TTL); err == nil && (!set || ttl == 0) {
				t.Fatalf("ttl %s became the default", tr.TTL)
			}
		}
	})
}
