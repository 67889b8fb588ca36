package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the settings table in docs/operations.md")

const (
	docPath  = "../../docs/operations.md"
	docBegin = "<!-- settings table: made from daemon/config/settings.go by `make docs`; do not edit -->\n"
	docEnd   = "<!-- end settings table -->\n"
)

// TestDocTable fails when the configuration table in docs/operations.md is
// not the one Settings makes; `make docs` (go test -run TestDocTable
// -update) rewrites it.
func TestDocTable(t *testing.T) {
	b, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no settings table markers (%q … %q)", docPath, docBegin, docEnd)
	}
	want := doc[:i+len(docBegin)] + MarkdownTable() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("the settings table in %s is stale: run make docs and commit the result", docPath)
}

// The names below are contracts (scripts, deployments and fly.toml use
// them): the table must keep each one exactly.
func TestSettingNames(t *testing.T) {
	var flags, envs, hcls []string
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	BindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f.Name) })
	for _, s := range Settings {
		envs = append(envs, strings.Join(s.Env, "|"))
		if s.HCL != "" {
			hcls = append(hcls, s.HCL)
		}
	}
	sort.Strings(hcls)
	wantFlags := []string{"advertise-addr", "allowed-origins", "broker-key-file", "config", "daemon-url", "fly-api-url",
		"fly-oidc-issuer", "fly-org", "internal-listen", "listen", "log-format", "log-level", "public-url", "replica-id",
		"store", "tls-cert", "tls-key", "trusted-proxy-headers"}
	wantEnvs := []string{"HANGARD_LISTEN", "HANGARD_TLS_CERT", "HANGARD_TLS_KEY", "HANGARD_TRUSTED_PROXY_HEADERS",
		"HANGARD_PUBLIC_URL", "HANGARD_DAEMON_URL", "HANGARD_INTERNAL_LISTEN", "HANGARD_ADVERTISE_ADDR",
		"HANGARD_FLY_OIDC_ISSUER", "HANGARD_ALLOWED_ORIGINS", "HANGARD_FLY_API_URL|FLY_API_URL",
		"HANGARD_FLY_API_TOKEN|FLY_API_TOKEN", "HANGARD_FLY_ORG|FLY_ORG", "HANGARD_STORE_DSN", "HANGARD_REPLICA_ID",
		"HANGARD_BROKER_KEY_FILE", "HANGARD_BROKER_KEY", "HANGARD_ADMIN_KEY", "HANGARD_LOG_FORMAT", "HANGARD_LOG_LEVEL",
		"HANGARD_CLAIM_WORKERS", "HANGARD_MAX_ATTACHES_PER_SESSION", "HANGARD_MAX_ATTACHES_PER_TICKET",
		"HANGARD_MAX_ATTACHES_PER_TENANT", "HANGARD_HEARTBEAT_INTERVAL", "HANGARD_DEAD_AFTER", "HANGARD_SWEEP_INTERVAL",
		"HANGARD_POOL_REFRESH", "HANGARD_READY_TIMEOUT"}
	wantHCL := []string{"admin_key", "advertise_addr", "allowed_origins", "broker_key_file", "claim_workers",
		"daemon_url", "dead_after", "fly_api_token", "fly_api_url", "fly_oidc_issuer", "fly_org", "heartbeat_interval",
		"internal_listen", "listen", "log_format", "log_level", "max_attaches_per_session", "max_attaches_per_tenant",
		"max_attaches_per_ticket", "pool_refresh", "public_url", "ready_timeout", "replica_id", "store_dsn",
		"sweep_interval", "tls_cert", "tls_key", "trusted_proxy_headers"}
	if !reflect.DeepEqual(flags, wantFlags) {
		t.Errorf("flags %v\nwant %v", flags, wantFlags)
	}
	if !reflect.DeepEqual(envs, wantEnvs) {
		t.Errorf("environment %v\nwant %v", envs, wantEnvs)
	}
	if !reflect.DeepEqual(hcls, wantHCL) {
		t.Errorf("HCL attributes %v\nwant %v", hcls, wantHCL)
	}
	want := Config{Listen: "127.0.0.1:7780", FlyAPIURL: "https://api.machines.dev", FlyOrg: "personal",
		StoreDSN: "sqlite:///var/lib/hangard/hangard.db", LogFormat: "json", LogLevel: "info", ClaimWorkers: 8,
		HeartbeatInterval: 5 * time.Second, DeadAfter: 30 * time.Second, SweepInterval: 15 * time.Second,
		PoolRefresh: 30 * time.Second, ReadyTimeout: 3 * time.Minute}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("defaults %+v\nwant %+v", got, want)
	}
}

// TestEverySettingLoads sets each setting through each of its sources (HCL,
// every environment variable, its flag) and checks that exactly its field
// changed.
func TestEverySettingLoads(t *testing.T) {
	sample := map[string]struct{ text, hcl string }{
		"string":   {"https://x.example", `"https://x.example"`},
		"bool":     {"true", "true"},
		"int":      {"7", "7"},
		"duration": {"7s", `"7s"`},
		"list":     {"https://a.example, https://b.example", `["https://a.example", "https://b.example"]`},
	}
	base := Default()
	for _, s := range Settings {
		smp := sample[s.field.kind]
		check := func(how string, c Config) {
			t.Helper()
			if reflect.DeepEqual(c, base) {
				t.Errorf("%s via %s: nothing changed", s.Name(), how)
			}
			// Put the field back: nothing else may differ.
			s.field.copy(&c, &base)
			if !reflect.DeepEqual(c, base) {
				t.Errorf("%s via %s changed another setting: %+v", s.Name(), how, c)
			}
		}
		for _, env := range s.Env {
			c := base
			if err := c.LoadEnv(func(k string) string {
				if k == env {
					return smp.text
				}
				return ""
			}); err != nil {
				t.Fatalf("%s: %v", env, err)
			}
			check(env, c)
		}
		if s.HCL != "" {
			file := filepath.Join(t.TempDir(), "h.hcl")
			if err := os.WriteFile(file, []byte(s.HCL+" = "+smp.hcl+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c := base
			if err := c.LoadFile(file); err != nil {
				t.Fatalf("%s: %v", s.HCL, err)
			}
			check("HCL", c)
		}
		if s.Flag != "" {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f := BindFlags(fs)
			if err := fs.Parse([]string{"--" + s.Flag + "=" + smp.text}); err != nil {
				t.Fatal(err)
			}
			c := base
			// Load validates the whole config, which a lone sample value
			// may not pass (a TLS cert without key): apply it by hand.
			f.fs.Visit(func(fl *flag.Flag) { fl.Value.(*flagValue).s.field.copy(&c, &f.values) })
			check("--"+s.Flag, c)
		}
	}
}
