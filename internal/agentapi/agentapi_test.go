package agentapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/agentauth"
)

func TestCredentialsRedacted(t *testing.T) {
	c := Credentials{AnthropicAPIKey: "sk-secret-1", ClaudeOAuthToken: "oat-secret-2", GitToken: "ghp-secret-3"}
	req := InitRequest{SessionID: "s", Credentials: &c}
	var sb strings.Builder
	logger := slog.New(slog.NewTextHandler(&sb, nil))
	logger.Info("x", "creds", c, "req", req)
	outs := []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q", c, c, c, c, c), fmt.Sprintf("%+v", req), req.String(), sb.String(),
		fmt.Sprintf("%+v", struct{ C Credentials }{c})}
	for _, o := range outs {
		for _, s := range c.Secrets() {
			if strings.Contains(o, s) {
				t.Errorf("secret in %q", o)
			}
		}
	}
	var jb strings.Builder
	hl := slog.New(slog.NewJSONHandler(&jb, nil))
	hl.Info("x", "creds", c, "req", req)
	for _, v := range []any{c, &c, req, &req} {
		b, _ := json.Marshal(v)
		jb.Write(b)
	}
	for _, s := range c.Secrets() {
		if strings.Contains(jb.String(), s) {
			t.Errorf("secret in JSON %s", jb.String())
		}
	}
	if !strings.Contains(jb.String(), `"git_token":"[REDACTED]"`) {
		t.Errorf("redacted JSON %s", jb.String())
	}
	// The init body carries them, and decodes back.
	b, err := EncodeInitRequest(&InitRequest{SessionID: "s", Mode: ModePTY, Credentials: &c, Cols: 3})
	if err != nil {
		t.Fatal(err)
	}
	var back InitRequest
	if err := json.Unmarshal(b, &back); err != nil || *back.Credentials != c || back.SessionID != "s" || back.Cols != 3 || back.Mode != ModePTY {
		t.Fatalf("init body %s: %v %+v", b, err, back)
	}
	if b, _ := EncodeInitRequest(&InitRequest{SessionID: "s"}); strings.Contains(string(b), "credentials") {
		t.Errorf("nil credentials encoded: %s", b)
	}
}

func TestDuration(t *testing.T) {
	var r InitRequest
	if err := json.Unmarshal([]byte(`{"checkpoint_interval":"90s"}`), &r); err != nil || time.Duration(r.CheckpointInterval) != 90*time.Second {
		t.Fatalf("%v %v", err, r.CheckpointInterval)
	}
	if err := json.Unmarshal([]byte(`{"checkpoint_interval":30}`), &r); err != nil || time.Duration(r.CheckpointInterval) != 30*time.Second {
		t.Fatalf("%v %v", err, r.CheckpointInterval)
	}
	if err := json.Unmarshal([]byte(`{"checkpoint_interval":"soon"}`), &r); err == nil {
		t.Fatal("bad duration accepted")
	}
}

func TestClient(t *testing.T) {
	key, _ := agentauth.GenerateKey()
	signer := agentauth.NewSigner(key)
	v, _ := agentauth.NewVerifier([]ed25519.PublicKey{signer.PublicKey()}, "m1")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(HealthResponse{OK: true, State: StateIdle})
	})
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := v.VerifyRequest(r)
			if err != nil || c.SessionID != "s1" {
				w.WriteHeader(401)
				json.NewEncoder(w).Encode(ErrorBody{ErrorDetail{CodeUnauthorized, "no"}})
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /v1/init", auth(func(w http.ResponseWriter, r *http.Request) {
		var req InitRequest
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(StatusResponse{State: StateRunning, Session: req.SessionID})
	}))
	mux.HandleFunc("GET /v1/status", auth(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(409)
		json.NewEncoder(w).Encode(ErrorBody{ErrorDetail{CodeNotInitialized, "init first"}})
	}))
	mux.HandleFunc("POST /v1/finish", auth(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(FinishResponse{Ref: "refs/heads/x", Commit: "abc", OK: true, Message: "pushed"})
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := NewClient(srv.URL, signer, "m1")
	ctx := context.Background()
	if h, err := c.Health(ctx); err != nil || !h.OK {
		t.Fatalf("health %v %v", h, err)
	}
	if st, err := c.Init(ctx, &InitRequest{SessionID: "s1"}); err != nil || st.Session != "s1" {
		t.Fatalf("init %v %v", st, err)
	}
	if _, err := c.Status(ctx, "s1"); !errors.Is(err, ErrNotInitialized) || !errors.Is(err, ErrConflict) {
		t.Fatalf("status err %v", err)
	}
	if _, err := c.Init(ctx, &InitRequest{SessionID: "s2"}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong session: %v", err)
	}
	if fr, err := c.Finish(ctx, "s1", nil); err != nil || !fr.OK {
		t.Fatalf("finish %v %v", fr, err)
	}
	if got := c.AttachURL(); got != "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/attach" {
		t.Errorf("attach url %s", got)
	}
	if BaseURL("fdaa::3", 0) != "http://[fdaa::3]:8080" {
		t.Errorf("BaseURL v6: %s", BaseURL("fdaa::3", 0))
	}
}
