package auth

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSecrets(t *testing.T) {
	a, err := NewSecret(TenantKeyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret(TenantKeyPrefix)
	if a == b || !strings.HasPrefix(a, TenantKeyPrefix) || len(a) < 40 {
		t.Fatalf("secrets %q %q", a, b)
	}
	if !Equal(a, a) || Equal(a, b) || Equal(a, a+"x") {
		t.Fatal("Equal")
	}
	if len(Hash(a)) != 32 || string(Hash(a)) == a {
		t.Fatal("Hash")
	}
	az := &Authenticator{AdminKey: "adm-key"}
	if !az.Admin("adm-key") || az.Admin("adm") || az.Admin("") || (&Authenticator{}).Admin("") {
		t.Fatal("Admin")
	}
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "": "", "Bearer": ""} {
		r := httptest.NewRequest("GET", "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		if got := BearerToken(r); got != want {
			t.Errorf("%q: %q, want %q", h, got, want)
		}
	}
}
