package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestEncodeCreateSessionRequestSendsCredentialsAndMarshalRedacts(t *testing.T) {
	const key, git = "sk-ant-secret", "ghp_secret"
	req := &CreateSessionRequest{Pool: "dev", Credentials: &Credentials{AnthropicAPIKey: key, GitToken: git}, GitAuthor: &GitAuthor{Name: "Ada", Email: "ada@example.com"}}
	b, err := EncodeCreateSessionRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"pool":"dev","git_author":{"name":"Ada","email":"ada@example.com"},"credentials":{"anthropic_api_key":"sk-ant-secret","git_token":"ghp_secret"}}`
	if string(b) != want {
		t.Errorf("encoded\n%s\nwant\n%s", b, want)
	}
	var back CreateSessionRequest
	if err := json.Unmarshal(b, &back); err != nil || back.Credentials == nil || back.Credentials.AnthropicAPIKey != key || back.Credentials.GitToken != git {
		t.Errorf("decode: %v, %+v", err, back.Credentials)
	}
	m, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, shown := range []string{string(m), fmt.Sprintf("%v %+v %#v %s", *req.Credentials, *req.Credentials, *req.Credentials, req.Credentials)} {
		if strings.Contains(shown, key) || strings.Contains(shown, git) {
			t.Errorf("a secret shows in %s", shown)
		}
	}
}

func TestEncodeCreateSessionRequestLeavesOutEmptyFields(t *testing.T) {
	for _, c := range []struct {
		req  CreateSessionRequest
		want string
	}{
		{CreateSessionRequest{}, `{"pool":""}`},
		{CreateSessionRequest{Pool: "dev", Mode: "jsonl", Command: []string{"x"}, Env: map[string]string{"A": "1"}, Cols: 80, Rows: 24},
			`{"pool":"dev","mode":"jsonl","command":["x"],"env":{"A":"1"},"cols":80,"rows":24}`},
	} {
		b, err := EncodeCreateSessionRequest(&c.req)
		if err != nil || string(b) != c.want {
			t.Errorf("got %s, %v; want %s", b, err, c.want)
		}
	}
}

// The daemon's answers keep every field, with null for what has not happened.
func TestResponsesKeepEveryField(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name string
		v    any
		want string
	}{
		{"session", Session{ID: "s", CreatedAt: &at},
			`{"id":"s","tenant":"","pool":"","tenant_image":"","region":"","state":"","reason":"","queue_position":0,"machine_id":"","repo":"","branch":"","session_branch":"","mode":"","created_at":"2026-01-02T03:04:05Z","ready_at":null,"ended_at":null,"push":null,"cost_usd":0}`},
		{"ticket", Ticket{Ticket: "t", Role: "rw", ExpiresAt: &at, URL: "ws://x"},
			`{"ticket":"t","role":"rw","expires_at":"2026-01-02T03:04:05Z","url":"ws://x"}`},
		{"tenant without key", Tenant{ID: "i", Name: "n", Pools: []string{}, CreatedAt: &at},
			`{"id":"i","name":"n","pools":[],"max_sessions":0,"max_session_duration":"","created_at":"2026-01-02T03:04:05Z"}`},
		{"pool", Pool{Name: "p", Regions: []string{}, TenantImages: []TenantImage{}, Standby: StandbyCounts{ByState: map[string]int{}}},
			`{"name":"p","app_name":"","regions":[],"image":"","min_standby":0,"max_machines":0,"machines":0,"standby_mode":"","idle_timeout":"","session_ttl":"","draining":false,"standby":{"total":0,"by_state":{},"stale":0,"sessions":0},"tenant_images":[]}`},
		{"error", ErrorBody{Error: &ErrorDetail{Code: "invalid", Message: "m"}}, `{"error":{"code":"invalid","message":"m"}}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%s: got\n%s, %v\nwant\n%s", c.name, b, err, c.want)
		}
	}
}

func TestDecodeKeepsRaw(t *testing.T) {
	const in = `{"id":"s","state":"ready","new_field":1}`
	var list []Session
	if err := json.Unmarshal([]byte(`[`+in+`]`), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "s" || list[0].State != "ready" || string(list[0].Raw) != in {
		t.Errorf("got %+v raw %s", list, list[0].Raw)
	}
	var p Pool
	if err := json.Unmarshal([]byte(`{"name":"p"}`), &p); err != nil || p.Name != "p" || string(p.Raw) != `{"name":"p"}` {
		t.Errorf("pool %+v, %v", p, err)
	}
	var tn Tenant
	if err := json.Unmarshal([]byte(`null`), &tn); err != nil || tn.Raw != nil {
		t.Errorf("null tenant: raw %s, %v", tn.Raw, err)
	}
}
