package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hangard.hcl")
	if err := os.WriteFile(file, []byte(`
listen          = "0.0.0.0:9000"
store_dsn       = "postgres://db/hangar"
allowed_origins = ["https://app.example.com"]
fly_org         = "from-file"
log_format      = "text"
sweep_interval  = "3s"
claim_workers   = 4
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HANGARD_LISTEN":     "127.0.0.1:9100", // overridden by the flag below
		"FLY_ORG":            "from-env",
		"FLY_API_TOKEN":      "tok",
		"HANGARD_ADMIN_KEY":  "adm",
		"HANGARD_BROKER_KEY": "key-material",
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse([]string{"--config", file, "--listen", "127.0.0.1:9200"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Load(Default(), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9200" || c.StoreDSN != "postgres://db/hangar" || c.FlyOrg != "from-env" ||
		c.FlyAPIToken != "tok" || c.AdminKey != "adm" || c.LogFormat != "text" || c.SweepInterval != 3*time.Second ||
		c.ClaimWorkers != 4 || len(c.AllowedOrigins) != 1 {
		t.Fatalf("config: %+v", c)
	}
	if k, err := c.LoadBrokerKey(); err != nil || k != "key-material" {
		t.Fatalf("broker key: %q %v", k, err)
	}
	// --trusted-proxy-headers beats HANGARD_TRUSTED_PROXY_HEADERS both ways.
	for _, c := range []struct {
		env  string
		args []string
		want bool
	}{
		{"", nil, false},
		{"true", nil, true},
		{"", []string{"--trusted-proxy-headers"}, true},
		{"true", []string{"--trusted-proxy-headers=false"}, false},
		{"false", []string{"--trusted-proxy-headers=true"}, true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f := BindFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		got, err := f.Load(Default(), func(k string) string {
			if k == "HANGARD_TRUSTED_PROXY_HEADERS" {
				return c.env
			}
			return ""
		})
		if err != nil || got.TrustedProxyHeaders != c.want {
			t.Errorf("env %q flags %v: trusted proxy headers %v, %v; want %v", c.env, c.args, got.TrustedProxyHeaders, err, c.want)
		}
	}
	// HANGARD_FLY_ORG wins over FLY_ORG.
	env["HANGARD_FLY_ORG"] = "specific"
	c2 := Default()
	if err := c2.LoadEnv(func(k string) string { return env[k] }); err != nil || c2.FlyOrg != "specific" {
		t.Fatalf("HANGARD_FLY_ORG: %v %s", err, c2.FlyOrg)
	}
}

func TestInvalid(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"log format": func(c *Config) { c.LogFormat = "xml" },
		"half tls":   func(c *Config) { c.TLSCert = "cert.pem" },
		"origin":     func(c *Config) { c.AllowedOrigins = []string{"not a url"} },
		"workers":    func(c *Config) { c.ClaimWorkers = 0 },
		"dead after": func(c *Config) { c.DeadAfter = c.HeartbeatInterval },
		"public url": func(c *Config) { c.PublicURL = "ftp://x" },
	} {
		c := Default()
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := Default()
	if err := c.LoadEnv(func(k string) string {
		if k == "HANGARD_SWEEP_INTERVAL" {
			return "soon"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "HANGARD_SWEEP_INTERVAL") {
		t.Fatalf("bad duration: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(bad, []byte("listen = \nnope"), 0o600)
	if err := c.LoadFile(bad); err == nil {
		t.Fatal("broken HCL accepted")
	}
	unknown := filepath.Join(t.TempDir(), "unknown.hcl")
	os.WriteFile(unknown, []byte(`lisen = "x"`), 0o600)
	if err := c.LoadFile(unknown); err == nil {
		t.Fatal("misspelt attribute accepted")
	}
	none := Default()
	if _, err := none.LoadBrokerKey(); err == nil || !strings.Contains(err.Error(), "keygen") {
		t.Fatalf("no broker key: %v", err)
	}
	d := Default()
	d.BrokerKeyFile = filepath.Join(t.TempDir(), "missing.key")
	if _, err := d.LoadBrokerKey(); err == nil {
		t.Fatal("missing key file accepted")
	}
}
