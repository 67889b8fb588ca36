package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func TestHandlerServesIndex(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/", "/index.html", "/some/client/route", "/?view=s1&ticket=t"} {
		resp := get(t, h, http.MethodGet, p)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", p, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: content type %q", p, ct)
		}
		if Built() {
			if !strings.Contains(string(body), "/assets/app-") {
				t.Errorf("GET %s: built index does not load the bundle", p)
			}
		} else if !strings.Contains(string(body), "make build") {
			t.Errorf("GET %s: placeholder does not say how to build the UI", p)
		}
		if resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no CSP", p)
		}
	}
}

func TestHandlerAssetsAndErrors(t *testing.T) {
	h := Handler()
	if resp := get(t, h, http.MethodGet, "/assets/missing-123.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: %d, want 404", resp.StatusCode)
	}
	if resp := get(t, h, http.MethodPost, "/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}
	if resp := get(t, h, http.MethodHead, "/"); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /: %d", resp.StatusCode)
	}
	if resp := get(t, h, http.MethodGet, "/../../etc/passwd"); resp.StatusCode == http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(body), "root:x:0:0") {
			t.Fatal("path traversal")
		}
	}
	if !Built() {
		return
	}
	// Every asset the index names is served, with a long cache lifetime.
	resp := get(t, h, http.MethodGet, "/")
	body, _ := io.ReadAll(resp.Body)
	for _, part := range strings.Split(string(body), `"/assets/`)[1:] {
		name := "/assets/" + part[:strings.IndexByte(part, '"')]
		r := get(t, h, http.MethodGet, name)
		if r.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", name, r.StatusCode)
		}
		if !strings.Contains(r.Header.Get("Cache-Control"), "immutable") {
			t.Errorf("GET %s: cache-control %q", name, r.Header.Get("Cache-Control"))
		}
	}
}
