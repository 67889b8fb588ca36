package pool

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

func testKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pub)
}

func validSpec(t *testing.T) Spec {
	return Spec{
		Pool:             "default",
		App:              "hangar-default",
		Network:          "hangar-default",
		DaemonURL:        "https://hangar.example.com",
		Regions:          []string{"iad", "ams"},
		Image:            "registry.fly.io/hangar-worker:1.0.0",
		Guest:            Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 2048},
		Env:              map[string]string{"LOG_LEVEL": "info"},
		MinStandby:       1,
		MaxMachines:      10,
		StandbyMode:      StandbyStop,
		IdleTimeout:      15 * time.Minute,
		SessionTTL:       4 * time.Hour,
		AgentPort:        8080,
		BrokerPublicKeys: []string{testKey(t)},
	}
}

func TestTemplateRoundTrip(t *testing.T) {
	base := validSpec(t)
	suspend := base.clone()
	suspend.StandbyMode = StandbySuspend
	suspend.IdleTimeout = 90 * time.Second
	suspend.SessionTTL = 90 * time.Minute
	suspend.BrokerPublicKeys = append(suspend.BrokerPublicKeys, testKey(t))
	suspend.AdoptedApp = true
	suspend.Draining = true
	suspend.Network = ""
	suspend.DaemonURL = "" // legacy: the daemon dials the agent
	suspend.Env = nil
	g := Guest{CPUKind: "performance", CPUs: 2, MemoryMB: 8192}
	ti := base.ForTenantImage("acme-node22", "acme", "registry.fly.io/acme-worker:2.3", 2, &g, map[string]string{"NODE": "22", "LOG_LEVEL": "debug"})
	inherit := base.ForTenantImage("acme-plain", "acme", "registry.fly.io/acme-worker:2.3", 0, nil, nil)

	for name, s := range map[string]Spec{"default": base, "suspend": suspend, "tenant image": ti, "inheriting tenant image": inherit} {
		t.Run(name, func(t *testing.T) {
			if err := s.Validate(); err != nil {
				t.Fatalf("spec should be valid: %v", err)
			}
			cfg := s.TemplateConfig()
			// Through JSON, as Fly stores and returns it.
			b, err := json.Marshal(fly.Machine{ID: "t1", Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			var m fly.Machine
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			got, err := FromTemplate(s.App, &m)
			if err != nil {
				t.Fatalf("FromTemplate: %v", err)
			}
			if !reflect.DeepEqual(got, s) {
				t.Fatalf("round trip mismatch\n got %#v\nwant %#v", got, s)
			}
			if got.Hash() != s.Hash() || m.Config.Metadata[KeySpec] != s.Hash() {
				t.Fatalf("hash changed over the round trip")
			}
			for _, v := range m.Config.Metadata {
				if strings.Contains(v, "\n") {
					t.Fatalf("metadata value %q has a newline", v)
				}
			}
			if cfg.Restart == nil || cfg.Restart.Policy != fly.RestartNo {
				t.Fatalf("template restart policy = %+v, want no", cfg.Restart)
			}
			// The daemon URL is in metadata and env exactly when declared.
			md, hasMD := m.Config.Metadata[KeyDaemonURL]
			env, hasEnv := m.Config.Env[EnvDaemonURL]
			if hasMD != (s.DaemonURL != "") || md != s.DaemonURL || hasEnv != hasMD || env != s.DaemonURL {
				t.Fatalf("daemon URL %q: metadata %q (%v), env %q (%v)", s.DaemonURL, md, hasMD, env, hasEnv)
			}
		})
	}
}

func TestTenantImageOverrides(t *testing.T) {
	base := validSpec(t)
	ti := base.ForTenantImage("acme", "acme", "img:2", 1, nil, map[string]string{"B": "2", "A": "1"})
	if ti.GuestOverride || ti.Guest != base.Guest {
		t.Fatalf("guest should be inherited: %+v", ti)
	}
	if !reflect.DeepEqual(ti.EnvOverrides, []string{"A", "B"}) {
		t.Fatalf("EnvOverrides = %v", ti.EnvOverrides)
	}
	if ti.Env["LOG_LEVEL"] != "info" || ti.Env["A"] != "1" {
		t.Fatalf("env not merged: %v", ti.Env)
	}
	if !reflect.DeepEqual(ti.OverrideEnv(), map[string]string{"A": "1", "B": "2"}) {
		t.Fatalf("OverrideEnv = %v", ti.OverrideEnv())
	}
	if _, ok := base.Env["A"]; ok {
		t.Fatal("ForTenantImage modified the pool's env")
	}
}

func TestDecodeMetadataErrors(t *testing.T) {
	for name, md := range map[string]map[string]string{
		"no pool":          {KeyRole: RoleTemplate},
		"bad int":          {KeyPool: "p", KeyMinStandby: "two"},
		"bad duration":     {KeyPool: "p", KeyIdleTimeout: "5 parsecs"},
		"negative timeout": {KeyPool: "p", KeySessionTTL: "-1h"},
	} {
		if _, err := DecodeMetadata(md); err == nil {
			t.Errorf("%s: DecodeMetadata(%v) succeeded", name, md)
		}
	}
	if _, err := FromTemplate("a", &fly.Machine{ID: "x", Config: &fly.MachineConfig{Metadata: map[string]string{KeyPool: "p", KeyRole: RoleStandby}}}); err == nil {
		t.Error("FromTemplate accepted a standby")
	}
	if _, err := FromTemplate("a", &fly.Machine{ID: "x"}); err == nil {
		t.Error("FromTemplate accepted a machine without config")
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Spec)
		field  string // "" = valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"shared 8x 16GB", func(s *Spec) { s.Guest = Guest{"shared", 8, 16384} }, ""},
		{"performance 16x", func(s *Spec) { s.Guest = Guest{"performance", 16, 32768}; s.MaxMachines = 2 }, ""},
		{"shared min", func(s *Spec) { s.Guest = Guest{"shared", 1, 256} }, ""},
		{"bad cpu kind", func(s *Spec) { s.Guest.CPUKind = "dedicated" }, "guest.cpu_kind"},
		{"bad cpus", func(s *Spec) { s.Guest.CPUs = 3 }, "guest.cpus"},
		{"shared cpus 16", func(s *Spec) { s.Guest = Guest{"shared", 16, 4096} }, "guest.cpus"},
		{"memory not multiple", func(s *Spec) { s.Guest.MemoryMB = 1000 }, "guest.memory_mb"},
		{"memory too big", func(s *Spec) { s.Guest.MemoryMB = 4096 }, "guest.memory_mb"},
		{"performance too small", func(s *Spec) { s.Guest = Guest{"performance", 1, 1024} }, "guest.memory_mb"},
		{"zero memory", func(s *Spec) { s.Guest.MemoryMB = 0 }, "guest.memory_mb"},
		{"no regions", func(s *Spec) { s.Regions = nil }, "regions"},
		{"bad region", func(s *Spec) { s.Regions = []string{"iad", "Amsterdam"} }, "regions[1]"},
		{"dup region", func(s *Spec) { s.Regions = []string{"iad", "iad"} }, "regions[1]"},
		{"empty image", func(s *Spec) { s.Image = "  " }, "image"},
		{"min standby over max", func(s *Spec) { s.MinStandby = 6 }, "min_standby"},
		{"negative min standby", func(s *Spec) { s.MinStandby = -1 }, "min_standby"},
		{"zero max", func(s *Spec) { s.MaxMachines = 0 }, "max_machines"},
		{"bad mode", func(s *Spec) { s.StandbyMode = "hibernate" }, "standby_mode"},
		{"zero idle", func(s *Spec) { s.IdleTimeout = 0 }, "idle_timeout"},
		{"negative ttl", func(s *Spec) { s.SessionTTL = -time.Second }, "session_ttl"},
		{"bad port", func(s *Spec) { s.AgentPort = 70000 }, "agent_port"},
		{"no broker key", func(s *Spec) { s.BrokerPublicKeys = nil }, "broker_public_key"},
		{"bad broker key", func(s *Spec) { s.BrokerPublicKeys = []string{"bm90IGEga2V5"} }, "broker_public_key"},
		{"reserved env", func(s *Spec) { s.Env = map[string]string{EnvAgentPort: "1"} }, "env"},
		{"bad env name", func(s *Spec) { s.Env = map[string]string{"A-B": "1"} }, "env"},
		{"bad pool name", func(s *Spec) { s.Pool = "Default Pool" }, "name"},
		{"bad app name", func(s *Spec) { s.App = "" }, "app_name"},
		{"bad network", func(s *Spec) { s.Network = "net_1" }, "network"},
		{"reserved env daemon url", func(s *Spec) { s.Env = map[string]string{EnvDaemonURL: "https://x"} }, "env"},
		{"no daemon url, no network (legacy)", func(s *Spec) { s.DaemonURL = ""; s.Network = "" }, ""},
		{"daemon url without network", func(s *Spec) { s.Network = "" }, ""},
		{"network requires daemon url", func(s *Spec) { s.DaemonURL = "" }, "daemon_url"},
		{"bad daemon url", func(s *Spec) { s.DaemonURL = "hangar.example.com" }, "daemon_url"},
		{"tenant image: pool-wide daemon url not rechecked", func(s *Spec) { s.TenantImage = "ti"; s.Tenant = "acme"; s.DaemonURL = "" }, ""},
		{"tenant image without tenant", func(s *Spec) { s.TenantImage = "ti"; s.Tenant = "" }, "tenant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec(t)
			tc.mutate(&s)
			err := s.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error on %s, got none", tc.field)
			}
			fields := Fields(err)
			found := false
			for _, f := range fields {
				if f.Field == tc.field {
					found = true
				}
			}
			if !found {
				t.Fatalf("want an error naming %s, got %v", tc.field, err)
			}
		})
	}
}

func TestValidateCapacity(t *testing.T) {
	p := validSpec(t) // 1 × 2 regions, max 10
	ti := p.ForTenantImage("a", "acme", "img", 4, nil, nil)
	if err := ValidateCapacity([]Spec{p, ti}); err != nil { // 2 + 8 = 10
		t.Fatalf("10 of 10 should fit: %v", err)
	}
	ti.MinStandby = 5
	err := ValidateCapacity([]Spec{ti, p}) // 2 + 10 = 12 > 10
	if err == nil || Fields(err)[0].Field != "min_standby" || !strings.Contains(err.Error(), "12") {
		t.Fatalf("want a min_standby error with the total, got %v", err)
	}
}

func TestHash(t *testing.T) {
	a := validSpec(t)
	h := a.Hash()
	if len(h) != 16 {
		t.Fatalf("hash %q: want 16 hex chars", h)
	}
	// Stable across calls, copies and env insertion order.
	b := a.clone()
	b.Env = map[string]string{}
	b.Env["LOG_LEVEL"] = "info"
	if b.Hash() != h || a.Hash() != h {
		t.Fatal("hash not stable")
	}
	// Not part of a standby's config: no change.
	for name, f := range map[string]func(*Spec){
		"min_standby":  func(s *Spec) { s.MinStandby = 3 },
		"max_machines": func(s *Spec) { s.MaxMachines = 50 },
		"regions":      func(s *Spec) { s.Regions = []string{"fra"} },
		"idle_timeout": func(s *Spec) { s.IdleTimeout = time.Hour },
		"session_ttl":  func(s *Spec) { s.SessionTTL = time.Hour },
		"draining":     func(s *Spec) { s.Draining = true },
	} {
		c := a.clone()
		f(&c)
		if c.Hash() != h {
			t.Errorf("%s changed the hash", name)
		}
	}
	// Part of a standby's config: new hash.
	for name, f := range map[string]func(*Spec){
		"image":         func(s *Spec) { s.Image = "img:2" },
		"guest":         func(s *Spec) { s.Guest.MemoryMB = 1024 },
		"env":           func(s *Spec) { s.Env["X"] = "1" },
		"env value":     func(s *Spec) { s.Env["LOG_LEVEL"] = "debug" },
		"agent_port":    func(s *Spec) { s.AgentPort = 9090 },
		"broker key":    func(s *Spec) { s.BrokerPublicKeys = []string{testKey(t)} },
		"standby_mode":  func(s *Spec) { s.StandbyMode = StandbySuspend },
		"tenant image":  func(s *Spec) { s.TenantImage = "x" },
		"daemon_url":    func(s *Spec) { s.DaemonURL = "https://other.example.com" },
		"no daemon_url": func(s *Spec) { s.DaemonURL = "" },
	} {
		c := a.clone()
		f(&c)
		if c.Hash() == h {
			t.Errorf("%s did not change the hash", name)
		}
	}
	// Pinned values guard against an accidental change of the encoding,
	// which would roll every standby of every pool on upgrade. Both were
	// computed before daemon_url existed: a spec without it hashes as it
	// always did.
	fixed := Spec{Pool: "p", Image: "i", Guest: Guest{"shared", 1, 256}, StandbyMode: StandbyStop, AgentPort: 8080}
	if got := fixed.Hash(); got != fixedHash {
		t.Fatalf("hash encoding changed: got %s, want %s", got, fixedHash)
	}
	full := Spec{Pool: "default", App: "hangar-default", Network: "hangar-default", Regions: []string{"iad"},
		Image: "registry.fly.io/hangar-worker:1.0.0", Guest: Guest{"shared", 1, 2048}, Env: map[string]string{"LOG_LEVEL": "info"},
		MinStandby: 1, MaxMachines: 10, StandbyMode: StandbySuspend, IdleTimeout: 15 * time.Minute, SessionTTL: 4 * time.Hour,
		AgentPort: 8080, BrokerPublicKeys: []string{"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}, TenantImage: "acme", Tenant: "acme"}
	if got := full.Hash(); got != fullHash {
		t.Fatalf("hash of a spec without daemon_url changed: got %s, want %s", got, fullHash)
	}
	full.DaemonURL = "https://hangar.example.com"
	if full.Hash() == fullHash {
		t.Fatal("daemon_url did not change the pinned spec's hash")
	}
}

const (
	fixedHash = "9bb48aa5ed74cf7f"
	fullHash  = "d40fbd1b4faa24ff"
)

func TestValidateDaemonURL(t *testing.T) {
	cases := []struct {
		url  string
		want string // a substring of the error; "" = valid
	}{
		{"https://hangar.example.com", ""},
		{"http://hangar.example.com", ""},
		{"http://127.0.0.1:4280", ""},
		{"https://hangar.example.com:8443", ""},
		{"http://[fdaa:0:1::2]:8080", ""},
		{"", "not an http:// or https:// URL"},
		{"hangar.example.com", "not an http:// or https:// URL"},
		{"ftp://hangar.example.com", "not an http:// or https:// URL"},
		{"HTTPS://hangar.example.com", "not an http:// or https:// URL"},
		{"wss://hangar.example.com", "not an http:// or https:// URL"},
		{"https://", "has no host"},
		{"https://:8443", "has no host"},
		{"https://user:pw@hangar.example.com", "user info"},
		{"https://hangar.example.com/", "has a path"},
		{"https://hangar.example.com/hangar", "has a path"},
		{"https://hangar.example.com?x=1", "query or fragment"},
		{"https://hangar.example.com#top", "query or fragment"},
		{"https://hangar.example.com:0", "not a TCP port"},
		{"https://hangar.example.com:70000", "not a TCP port"},
		{"https://hangar.example.com:http", "not a URL"},
		{" https://hangar.example.com", "whitespace"},
		{"https://hangar.example.com\n", "whitespace"},
	}
	for _, c := range cases {
		err := ValidateDaemonURL(c.url)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("ValidateDaemonURL(%q) = %v, want valid", c.url, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("ValidateDaemonURL(%q) = %v, want an error containing %q", c.url, err, c.want)
		}
	}
}

func TestCloneConfig(t *testing.T) {
	s := validSpec(t)
	s.BrokerPublicKeys = append(s.BrokerPublicKeys, testKey(t))
	s.AgentPort = 9000
	tmpl := &fly.Machine{ID: "tmpl", Config: s.TemplateConfig()}
	tmpl.Config.Init = &fly.Init{Exec: []string{"/bin/sleep", "3600"}}

	for _, tc := range []struct{ role, session string }{{RoleStandby, ""}, {RoleSession, "sess-1"}} {
		cfg, err := CloneConfig(tmpl, tc.role, tc.session)
		if err != nil {
			t.Fatalf("CloneConfig(%s): %v", tc.role, err)
		}
		if !cfg.AutoDestroy || cfg.Restart == nil || cfg.Restart.Policy != fly.RestartNo {
			t.Errorf("%s: auto_destroy=%v restart=%+v", tc.role, cfg.AutoDestroy, cfg.Restart)
		}
		if sc := cfg.StopConfig; sc == nil || sc.Signal != "SIGTERM" || sc.Timeout == nil || sc.Timeout.Duration != StopTimeout || StopTimeout > 300*time.Second {
			t.Errorf("%s: stop_config %+v: want SIGTERM and %v (at most Fly's 300 s)", tc.role, sc, StopTimeout)
		}
		want := map[string]string{KeyPool: "default", KeyRole: tc.role, KeySpec: s.Hash()}
		if tc.session != "" {
			want[KeySession] = tc.session
		}
		if !reflect.DeepEqual(cfg.Metadata, want) {
			t.Errorf("%s metadata = %v, want %v", tc.role, cfg.Metadata, want)
		}
		if cfg.Env[EnvAgentPort] != "9000" || cfg.Env[EnvBrokerPublicKey] != strings.Join(s.BrokerPublicKeys, ",") || cfg.Env["LOG_LEVEL"] != "info" ||
			cfg.Env[EnvDaemonURL] != "https://hangar.example.com" {
			t.Errorf("%s env = %v", tc.role, cfg.Env)
		}
		if cfg.Image != s.Image || cfg.Guest.MemoryMB != 2048 || cfg.Init == nil || cfg.Init.Exec[0] != "/bin/sleep" {
			t.Errorf("%s: template config not carried over: %+v", tc.role, cfg)
		}
	}
	// The clone is a copy: the template is untouched.
	if tmpl.Config.AutoDestroy || tmpl.Config.Metadata[KeyRole] != RoleTemplate {
		t.Fatal("CloneConfig modified the template")
	}
	ti := s.ForTenantImage("acme", "acme", "img:2", 1, nil, nil)
	cfg, err := CloneConfig(&fly.Machine{ID: "t2", Config: ti.TemplateConfig()}, RoleStandby, "")
	if err != nil || cfg.Metadata[KeyTenantImage] != "acme" || cfg.Metadata[KeySpec] != ti.Hash() {
		t.Fatalf("tenant image clone: %v %v", cfg, err)
	}

	// The clone's hangar env comes from the template's metadata, not its
	// env: a changed daemon URL reaches the clone, a removed one leaves it.
	for _, daemonURL := range []string{"https://moved.example.com", ""} {
		s2 := s
		s2.Network = ""
		s2.DaemonURL = daemonURL
		stale := &fly.Machine{ID: "t3", Config: s2.TemplateConfig()}
		stale.Config.Env[EnvDaemonURL] = "https://old.example.com"
		cfg, err := CloneConfig(stale, RoleSession, "sess-2")
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := cfg.Env[EnvDaemonURL]; got != daemonURL || ok != (daemonURL != "") {
			t.Errorf("daemon URL %q: clone env has %q (%v)", daemonURL, got, ok)
		}
	}

	for name, c := range map[string]struct {
		m             *fly.Machine
		role, session string
	}{
		"nil":                {nil, RoleStandby, ""},
		"standby as source":  {&fly.Machine{Config: &fly.MachineConfig{Metadata: map[string]string{KeyPool: "p", KeyRole: RoleStandby}}}, RoleStandby, ""},
		"bad role":           {tmpl, RoleTemplate, ""},
		"session without id": {tmpl, RoleSession, ""},
		"standby with id":    {tmpl, RoleStandby, "x"},
	} {
		if _, err := CloneConfig(c.m, c.role, c.session); err == nil {
			t.Errorf("%s: CloneConfig succeeded", name)
		}
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]string{"4h": "4h", "15m": "15m", "90m": "1h30m", "90s": "1m30s", "1h0m5s": "1h0m5s", "500ms": "500ms"} {
		d, err := ParseDuration(in)
		if err != nil {
			t.Fatalf("ParseDuration(%q): %v", in, err)
		}
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%s) = %q, want %q", in, got, want)
		}
		if back, _ := ParseDuration(FormatDuration(d)); back != d {
			t.Errorf("%s does not round trip", in)
		}
	}
	for _, bad := range []string{"5 parsecs", "", "-5m", "0s", "15"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
}

// TestValidateGuestReportsEveryProblem: one field error per bad field, not
// just the first.
func TestValidateGuestReportsEveryProblem(t *testing.T) {
	cases := []struct {
		g    Guest
		want []string
	}{
		{Guest{"shared", 1, 1024}, nil},
		{Guest{"shared", 3, 100}, []string{"cpus", "memory_mb"}},
		{Guest{"shared", 3, 1024}, []string{"cpus"}},
		{Guest{"shared", 3, 32768}, []string{"cpus", "memory_mb"}},
		{Guest{"bogus", 3, 100}, []string{"cpu_kind", "cpus", "memory_mb"}},
		{Guest{"bogus", 2, 1024}, []string{"cpu_kind"}},
		{Guest{"performance", 2, 1024}, []string{"memory_mb"}},
		{Guest{"performance", 3, 0}, []string{"cpus", "memory_mb"}},
	}
	for _, c := range cases {
		var got []string
		for _, e := range ValidateGuest(c.g) {
			got = append(got, e.Field)
			if e.Message == "" {
				t.Errorf("%+v: empty message for %s", c.g, e.Field)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ValidateGuest(%+v) fields = %v, want %v", c.g, got, c.want)
		}
	}
	if err := ValidateTenant("acme"); err != nil {
		t.Errorf("ValidateTenant(acme) = %v", err)
	}
	for _, bad := range []string{"", "a b", "-acme", strings.Repeat("a", 129)} {
		if ValidateTenant(bad) == nil {
			t.Errorf("ValidateTenant(%q) accepted it", bad)
		}
	}
}
