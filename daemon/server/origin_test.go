package server

import (
	"net/http/httptest"
	"testing"
)

func TestOriginAndBaseURL(t *testing.T) {
	plain := &Server{cfg: Config{AllowedOrigins: []string{"https://app.example.com"}}}
	proxied := &Server{cfg: Config{TrustedProxyHeaders: true}}
	fixed := &Server{cfg: Config{PublicURL: "https://hangar.example.com"}}
	for _, c := range []struct {
		name   string
		s      *Server
		origin string
		fwd    [2]string // X-Forwarded-Proto, X-Forwarded-Host
		ok     bool
		base   string
	}{
		{"no origin (API client)", plain, "", [2]string{}, true, "http://daemon:7780"},
		{"same origin", plain, "http://daemon:7780", [2]string{}, true, "http://daemon:7780"},
		{"allowed origin", plain, "https://app.example.com", [2]string{}, true, "http://daemon:7780"},
		{"foreign origin", plain, "https://evil.example", [2]string{}, false, "http://daemon:7780"},
		{"garbage origin", plain, "null", [2]string{}, false, "http://daemon:7780"},
		{"forwarded headers ignored unless trusted", plain, "https://hangar.example.com", [2]string{"https", "hangar.example.com"}, false, "http://daemon:7780"},
		{"trusted proxy", proxied, "https://hangar.example.com", [2]string{"https", "hangar.example.com"}, true, "https://hangar.example.com"},
		{"public url", fixed, "https://hangar.example.com", [2]string{}, true, "https://hangar.example.com"},
	} {
		r := httptest.NewRequest("GET", "http://daemon:7780/v1/sessions/x/attach", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.fwd[0] != "" {
			r.Header.Set("X-Forwarded-Proto", c.fwd[0])
			r.Header.Set("X-Forwarded-Host", c.fwd[1])
		}
		if got := c.s.originAllowed(r); got != c.ok {
			t.Errorf("%s: origin allowed %v, want %v", c.name, got, c.ok)
		}
		if got := c.s.baseURL(r).String(); got != c.base {
			t.Errorf("%s: base %s, want %s", c.name, got, c.base)
		}
	}
}
