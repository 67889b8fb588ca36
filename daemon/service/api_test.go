package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/pool"
)

type ticket struct {
	Ticket    string    `json:"ticket"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
	URL       string    `json:"url"`
}

// TestTenantIsolation: tenant A can neither see, list, attach to, share nor
// end tenant B's session; every attempt is refused and B's session lives on.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t, 1, 4)
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	ta, tb := admin.createTenant("tenant-a", nil), admin.createTenant("tenant-b", nil)
	ua, ub := admin.with(ta.APIKey), admin.with(tb.APIKey)

	var bs session
	ub.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &bs)
	bs = ub.waitState(bs.ID, isState("ready", "failed"))
	var bt ticket
	ub.json("POST", "/v1/sessions/"+bs.ID+"/tickets", map[string]any{"role": "ro", "ttl": "10m", "uses": 5}, http.StatusCreated, &bt)

	var as session
	ua.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &as)
	var at ticket
	ua.json("POST", "/v1/sessions/"+as.ID+"/tickets", nil, http.StatusCreated, &at)

	base := "/v1/sessions/" + bs.ID
	for _, c := range []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"get", "GET", base, nil, http.StatusNotFound},
		{"end", "DELETE", base, nil, http.StatusNotFound},
		{"ticket", "POST", base + "/tickets", map[string]any{"role": "rw"}, http.StatusNotFound},
		{"events", "GET", base + "/events", nil, http.StatusNotFound},
		{"admin list tenants", "GET", "/v1/tenants", nil, http.StatusUnauthorized},
		{"admin rotate B's key", "POST", "/v1/tenants/" + tb.ID + "/keys", nil, http.StatusUnauthorized},
		{"admin delete B", "DELETE", "/v1/tenants/" + tb.ID, nil, http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, body, _ := ua.do(c.method, c.path, c.body)
			if st != c.want {
				t.Fatalf("status %d, want %d: %s", st, c.want, body)
			}
		})
	}
	t.Run("list", func(t *testing.T) {
		var list []session
		ua.json("GET", "/v1/sessions", nil, http.StatusOK, &list)
		for _, s := range list {
			if s.ID == bs.ID || s.Tenant != "tenant-a" {
				t.Fatalf("A's list shows %+v", s)
			}
		}
		if len(list) != 1 {
			t.Fatalf("A's list: %+v", list)
		}
	})
	attachURL := wsURL(d.URL) + base + "/attach"
	for _, c := range []struct {
		name   string
		url    string
		header http.Header
		want   string
	}{
		{"attach with A's key", attachURL, bearer(ta.APIKey), "404"},
		{"attach with A's ticket", attachURL + "?ticket=" + url.QueryEscape(at.Ticket), nil, "401"},
		{"attach with no credentials", attachURL, nil, "401"},
		{"attach with a made-up ticket", attachURL + "?ticket=hgt_nope", nil, "401"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := dialAttach(t, c.url, c.header, 0, 0); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want status %s", err, c.want)
			}
		})
	}
	// B's read-only share link works for whoever holds it, and only read-only.
	tm, err := dialAttach(t, bt.URL, nil, -1, 0)
	if err != nil {
		t.Fatalf("B's share link: %v", err)
	}
	if tm.attached.Role != "ro" {
		t.Fatalf("share link attached as %q", tm.attached.Role)
	}
	tm.close()
	if s := ub.waitState(bs.ID, isState("ready", "ended", "failed")); s.State != "ready" {
		t.Fatalf("B's session after A's attempts: %+v", s)
	}
	// A's single-use ticket, refused on B's attach URL above, spent nothing:
	// it still attaches to A's own session, once.
	if tm, err := dialAttach(t, at.URL, nil, -1, 0); err != nil {
		t.Fatalf("A's ticket after it was presented for B's session: %v", err)
	} else {
		tm.close()
	}
	if _, err := dialAttach(t, at.URL, nil, -1, 0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("A's ticket used twice: %v", err)
	}
}

// TestBadInput: clear JSON errors, nothing half-done.
func TestBadInput(t *testing.T) {
	e := newEnv(t, 1, 4)
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("bad", map[string]any{"max_sessions": 1})
	u := admin.with(tn.APIKey)
	// A key can learn its tenant (the web terminal shows it), never the key.
	var me tenant
	u.json("GET", "/v1/whoami", nil, http.StatusOK, &me)
	if me.Name != "bad" || me.ID != tn.ID || me.APIKey != "" {
		t.Fatalf("whoami = %+v", me)
	}
	if st, _, _ := u.with("hgr_wrong").do("GET", "/v1/whoami", nil); st != http.StatusUnauthorized {
		t.Fatalf("whoami with a wrong key: %d", st)
	}

	for _, c := range []struct {
		name     string
		body     any
		want     int
		code     string
		contains string
	}{
		{"malformed body", `{"pool": "test",`, 400, "bad_request", "malformed JSON"},
		{"empty body", ``, 400, "bad_request", "empty"},
		{"wrong type", `{"pool": 42}`, 400, "bad_request", `field "pool" must be a string`},
		{"nested wrong type", `{"pool": "test", "git_author": {"name": 1}}`, 400, "bad_request", `field "git_author.name" must be a string`},
		{"array body", `[]`, 400, "bad_request", "must be a JSON object"},
		{"null body", `null`, 400, "bad_request", "null; want a JSON object"},
		{"number body", ` 42`, 400, "bad_request", "must be a JSON object"},
		{"broken non-object", `[1,`, 400, "bad_request", "malformed JSON"},
		{"author without email", map[string]any{"pool": testPool, "git_author": map[string]string{"name": "x"}}, 422, "invalid", "git_author.email"},
		{"author without name", map[string]any{"pool": testPool, "git_author": map[string]string{"email": "x@example.com"}}, 422, "invalid", "git_author.name"},
		{"missing pool", map[string]any{}, 422, "invalid", "pool"},
		{"unknown pool", map[string]any{"pool": "nope"}, 422, "invalid", "no pool named"},
		{"unknown tenant image", map[string]any{"pool": testPool, "tenant_image": "other"}, 422, "invalid", "tenant_image"},
		{"unknown region", map[string]any{"pool": testPool, "region": "ams"}, 422, "invalid", "region"},
		{"option injection", map[string]any{"pool": testPool, "repo": "--upload-pack=touch /tmp/x"}, 422, "invalid", "repo"},
		{"ext transport", map[string]any{"pool": testPool, "repo": "ext::sh -c touch% /tmp/pwned"}, 422, "invalid", "repo"},
		{"file URL", map[string]any{"pool": testPool, "repo": "file:///etc"}, 422, "invalid", "repo"},
		{"password in URL", map[string]any{"pool": testPool, "repo": "https://u:secretpw@example.com/r.git"}, 422, "invalid", "git_token"},
		{"token as the URL's user", map[string]any{"pool": testPool, "repo": "https://secretpw@example.com/r.git"}, 422, "invalid", "git_token"},
		{"git protocol", map[string]any{"pool": testPool, "repo": "git://example.com/r.git"}, 422, "invalid", "repo"},
		{"http to the internet", map[string]any{"pool": testPool, "repo": "http://example.com/r.git"}, 422, "invalid", "repo"},
		{"ssh option as host", map[string]any{"pool": testPool, "repo": "git@-oProxyCommand=x:r.git"}, 422, "invalid", "repo"},
		{"ssh option as user", map[string]any{"pool": testPool, "repo": "ssh://-oProxyCommand@example.com/r.git"}, 422, "invalid", "repo"},
		{"right-to-left override", map[string]any{"pool": testPool, "repo": "https://example.com/\u202egit.exe"}, 422, "invalid", "repo"},
		{"bad branch", map[string]any{"pool": testPool, "branch": "-x"}, 422, "invalid", "branch"},
		{"bad session branch", map[string]any{"pool": testPool, "session_branch": "a..b"}, 422, "invalid", "session_branch"},
		{"bad mode", map[string]any{"pool": testPool, "mode": "tty"}, 422, "invalid", "mode"},
		{"credential in env", map[string]any{"pool": testPool, "env": map[string]string{"ANTHROPIC_API_KEY": "sk-x"}}, 422, "invalid", "credentials"},
		{"reserved env", map[string]any{"pool": testPool, "env": map[string]string{"HANGAR_AGENT_PORT": "1"}}, 422, "invalid", "reserved"},
		{"huge terminal", map[string]any{"pool": testPool, "cols": 100000}, 422, "invalid", "cols"},
		{"both credentials", map[string]any{"pool": testPool, "credentials": map[string]string{"anthropic_api_key": "a", "claude_oauth_token": "b"}}, 422, "invalid", "credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, body, _ := u.do("POST", "/v1/sessions", c.body)
			var eb struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if st != c.want || json.Unmarshal(body, &eb) != nil || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.contains) {
				t.Fatalf("status %d body %s; want %d %s containing %q", st, body, c.want, c.code, c.contains)
			}
			if strings.Contains(string(body), "secretpw") {
				t.Fatal("the error echoes a secret")
			}
			if strings.Contains(eb.Error.Message, "sessions.") || strings.Contains(eb.Error.Message, "Request") {
				t.Fatalf("the error names a Go type: %s", eb.Error.Message)
			}
		})
	}
	var list []session
	u.json("GET", "/v1/sessions", nil, http.StatusOK, &list)
	if len(list) != 0 {
		t.Fatalf("refused requests left sessions: %+v", list)
	}

	// A pool that exists but is not granted is answered exactly like one
	// that does not exist: a tenant cannot learn which pools exist.
	other := admin.createTenant("ungranted", map[string]any{"pools": []string{"elsewhere"}})
	ou := admin.with(other.APIKey)
	_, real, _ := ou.do("POST", "/v1/sessions", map[string]any{"pool": testPool})
	_, none, _ := ou.do("POST", "/v1/sessions", map[string]any{"pool": "zzzz"})
	if got, want := strings.ReplaceAll(string(real), testPool, "P"), strings.ReplaceAll(string(none), "zzzz", "P"); got != want {
		t.Fatalf("an existing pool that is not granted answers %s; a missing one %s", real, none)
	}

	// Auth failures.
	for _, key := range []string{"", "hgr_wrong", adminKey} {
		if st, body, _ := u.with(key).do("GET", "/v1/sessions", nil); st != http.StatusUnauthorized {
			t.Fatalf("key %.6q: %d %s", key, st, body)
		}
	}

	// Over quota: one live session allowed.
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc"}}, http.StatusAccepted, &s)
	st, body, hdr := u.do("POST", "/v1/sessions", map[string]any{"pool": testPool})
	if st != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), "over_quota") {
		t.Fatalf("over quota: %d %v %s", st, hdr, body)
	}
	s = u.waitState(s.ID, isState("ready", "failed"))
	if s.State != "ready" {
		t.Fatalf("session: %+v", s)
	}

	// Tickets: bad fields, single use, expiry.
	tp := "/v1/sessions/" + s.ID + "/tickets"
	for _, body := range []any{
		map[string]any{"role": "admin"}, map[string]any{"ttl": "48h", "role": "ro"},
		map[string]any{"ttl": "soon"}, map[string]any{"uses": -1}, map[string]any{"ttl": "2h"},
		// A given ttl is never silently replaced by the default.
		map[string]any{"ttl": 1e-300}, map[string]any{"ttl": 0}, map[string]any{"ttl": -5},
		map[string]any{"ttl": "0s"}, map[string]any{"ttl": "-1s"}, map[string]any{"ttl": 0.5},
		map[string]any{"ttl": 1e300},
	} {
		if st, b, _ := u.do("POST", tp, body); st != http.StatusUnprocessableEntity {
			t.Fatalf("ticket %v: %d %s", body, st, b)
		}
	}
	var tk ticket
	u.json("POST", tp, nil, http.StatusCreated, &tk)
	if tk.Role != "rw" || time.Until(tk.ExpiresAt) > 61*time.Second || !strings.HasPrefix(tk.URL, "ws://") {
		t.Fatalf("default ticket: %+v", tk)
	}
	tm, err := dialAttach(t, tk.URL, nil, -1, 0)
	if err != nil {
		t.Fatalf("first use of a ticket: %v", err)
	}
	if tm.attached.Role != "rw" {
		t.Fatalf("rw ticket attached as %q", tm.attached.Role)
	}
	tm.close()
	if _, err := dialAttach(t, tk.URL, nil, -1, 0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("reused ticket: %v", err)
	}
	var short ticket
	u.json("POST", tp, map[string]any{"ttl": "1s"}, http.StatusCreated, &short)
	time.Sleep(time.Until(short.ExpiresAt) + 100*time.Millisecond) // real time must pass for a ticket to expire
	if _, err := dialAttach(t, short.URL, nil, -1, 0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("expired ticket: %v", err)
	}
	// A ticket from another origin is refused and spends nothing: the same
	// single-use ticket then passes from the daemon's own origin.
	var o ticket
	u.json("POST", tp, nil, http.StatusCreated, &o)
	h := http.Header{}
	h.Set("Origin", "https://evil.example")
	for range 2 {
		if _, err := dialAttach(t, o.URL, h, -1, 0); err == nil || !strings.Contains(err.Error(), "403") {
			t.Fatalf("foreign origin: %v", err)
		}
	}
	if _, err := dialAttach(t, o.URL+"&role=admin", nil, -1, 0); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad role parameter: %v", err)
	}
	h.Set("Origin", d.URL)
	if tm, err := dialAttach(t, o.URL, h, -1, 0); err != nil {
		t.Fatalf("own origin after refused attempts: %v", err)
	} else {
		tm.close()
	}
	if _, err := dialAttach(t, o.URL, h, -1, 0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("single-use ticket used twice: %v", err)
	}
	// The own host over another scheme is another origin.
	var sch ticket
	u.json("POST", tp, nil, http.StatusCreated, &sch)
	h.Set("Origin", "https://"+strings.TrimPrefix(d.URL, "http://"))
	if _, err := dialAttach(t, sch.URL, h, -1, 0); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("own host, other scheme: %v", err)
	}

	// Rotating the tenant's key revokes its share links.
	var share ticket
	u.json("POST", tp, map[string]any{"role": "ro", "ttl": "24h", "uses": 100}, http.StatusCreated, &share)
	var rotated tenant
	admin.json("POST", "/v1/tenants/"+tn.ID+"/keys", nil, http.StatusOK, &rotated)
	if _, err := dialAttach(t, share.URL, nil, -1, 0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a share link survived the key rotation: %v", err)
	}
	u, tn.APIKey = admin.with(rotated.APIKey), rotated.APIKey

	// End twice: the second is a conflict; attach to the ended session: 409.
	u.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
	// Without a repo nothing failed: the push is ok, with nothing pushed.
	if ended := u.waitState(s.ID, isState("ended", "failed")); ended.State != "ended" || ended.Push == nil ||
		!ended.Push.OK || ended.Push.Ref != "" || ended.Push.Commit != "" || ended.Push.Message != "no repository: nothing pushed" {
		t.Fatalf("ended session without a repo: %+v push %+v", ended, ended.Push)
	}
	if st, b, _ := u.do("DELETE", "/v1/sessions/"+s.ID, nil); st != http.StatusConflict {
		t.Fatalf("second end: %d %s", st, b)
	}
	if _, err := dialAttach(t, wsURL(d.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("attach to ended: %v", err)
	}
	if st, _, _ := u.do("GET", "/v1/sessions/nope", nil); st != http.StatusNotFound {
		t.Fatalf("unknown session: %d", st)
	}
	if st, _, _ := u.do("GET", "/v1/sessions?state=bogus", nil); st != http.StatusUnprocessableEntity {
		t.Fatalf("bad state filter: %d", st)
	}
}

// TestAdminAndPools covers the tenant admin API, pools, health and metrics.
func TestAdminAndPools(t *testing.T) {
	e := newEnv(t, 2, 4)
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("ops", map[string]any{"max_session_duration": "30m", "pools": []string{"*"}})
	if st, _, _ := admin.do("POST", "/v1/tenants", map[string]any{"name": "ops"}); st != http.StatusConflict {
		t.Fatalf("duplicate tenant: %d", st)
	}
	for _, bad := range []any{map[string]any{"name": ""}, map[string]any{"name": "x", "max_session_duration": "long"}, map[string]any{"name": "y", "pools": []string{"Bad Pool"}}} {
		if st, b, _ := admin.do("POST", "/v1/tenants", bad); st != http.StatusUnprocessableEntity {
			t.Fatalf("tenant %v: %d %s", bad, st, b)
		}
	}
	for _, bad := range []string{`null`, `[]`, `"ops2"`, `{"name": ["x"]}`} {
		st, b, _ := admin.do("POST", "/v1/tenants", bad)
		if st != http.StatusBadRequest || strings.Contains(string(b), "tenantRequest") || strings.Contains(string(b), "server.") {
			t.Fatalf("tenant body %s: %d %s; want 400 without Go type names", bad, st, b)
		}
	}
	var list []tenant
	admin.json("GET", "/v1/tenants", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].APIKey != "" {
		t.Fatalf("tenants: %+v", list)
	}
	var pools []struct {
		Name    string `json:"name"`
		AppName string `json:"app_name"`
		Standby struct {
			Total int `json:"total"`
		} `json:"standby"`
	}
	admin.with(tn.APIKey).json("GET", "/v1/pools", nil, http.StatusOK, &pools)
	if len(pools) != 1 || pools[0].Name != testPool || pools[0].AppName != testApp || pools[0].Standby.Total != 2 {
		t.Fatalf("pools: %+v", pools)
	}
	other := admin.createTenant("nopools", map[string]any{"pools": []string{}})
	admin.with(other.APIKey).json("GET", "/v1/pools", nil, http.StatusOK, &pools)
	if len(pools) != 0 {
		t.Fatalf("ungranted pools listed: %+v", pools)
	}
	// Not "not granted": that would tell the tenant the pool exists.
	if st, b, _ := admin.with(other.APIKey).do("POST", "/v1/sessions", map[string]any{"pool": testPool}); st != http.StatusUnprocessableEntity || !strings.Contains(string(b), `no pool named \"test\"`) {
		t.Fatalf("ungranted pool: %d %s", st, b)
	}

	// Rotation: the old key stops working at once.
	var rotated tenant
	admin.json("POST", "/v1/tenants/"+tn.ID+"/keys", nil, http.StatusOK, &rotated)
	if rotated.APIKey == "" || rotated.APIKey == tn.APIKey {
		t.Fatalf("rotate: %+v", rotated)
	}
	if st, _, _ := admin.with(tn.APIKey).do("GET", "/v1/sessions", nil); st != http.StatusUnauthorized {
		t.Fatalf("old key after rotation: %d", st)
	}
	u := admin.with(rotated.APIKey)
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	s = u.waitState(s.ID, isState("ready", "failed"))

	// Events: a stream of the session's changes that closes once it ended.
	req, _ := http.NewRequest("GET", d.URL+"/v1/sessions/"+s.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+rotated.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %v %v", err, resp)
	}
	// Deleting the tenant ends its sessions.
	if st, b, _ := admin.do("DELETE", "/v1/tenants/"+tn.ID, nil); st != http.StatusNoContent {
		t.Fatalf("delete tenant: %d %s", st, b)
	}
	var states []string
	dec := newSSE(resp)
	for ev := range dec {
		var x session
		json.Unmarshal([]byte(ev), &x)
		states = append(states, x.State)
	}
	if len(states) == 0 || states[0] != "ready" || states[len(states)-1] != "ended" {
		t.Fatalf("event states %v", states)
	}
	assertMachineGone(t, e, s.MachineID)
	if st, _, _ := admin.do("DELETE", "/v1/tenants/"+tn.ID, nil); st != http.StatusNotFound {
		t.Fatalf("delete deleted tenant: %d", st)
	}

	for path, want := range map[string]string{"/healthz": `"ok":true`, "/readyz": `"ok":true`, "/metrics": "hangard_claim_duration_seconds_count", "/v1/openapi.json": `"openapi"`} {
		st, b, _ := admin.with("").do("GET", path, nil)
		if st != http.StatusOK || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d %.200s", path, st, b)
		}
	}
	st, b, _ := admin.with("").do("GET", "/metrics", nil)
	for _, m := range []string{"hangard_sessions{", "hangard_fly_api_calls_total{", "hangard_sessions_finished_total{"} {
		if st != 200 || !strings.Contains(string(b), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	if st, _, _ := admin.with("").do("GET", "/", nil); st != http.StatusOK {
		t.Fatalf("web terminal: %d", st)
	}
}

// newSSE yields the data of each server-sent event until the stream ends.
func newSSE(resp *http.Response) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				i := strings.Index(string(buf), "\n\n")
				if i < 0 {
					break
				}
				for _, line := range strings.Split(string(buf[:i]), "\n") {
					if strings.HasPrefix(line, "data: ") {
						ch <- strings.TrimPrefix(line, "data: ")
					}
				}
				buf = buf[i+2:]
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// TestTakeOverDeadReplica: a replica that stopped heartbeating loses its
// unready claims (failed, with a reason saying so, machines destroyed) and
// its ready sessions move to a live replica.
func TestTakeOverDeadReplica(t *testing.T) {
	e := newEnv(t, 2, 4)
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("orphans", nil)
	u := admin.with(tn.APIKey)
	var ready session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &ready)
	ready = u.waitState(ready.ID, isState("ready", "failed"))

	ctx := context.Background()
	st := d.Store
	const dead = "d-dead-replica"
	if err := st.Heartbeat(ctx, dead, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	tnt, err := st.TenantByKeyHash(ctx, auth.Hash(tn.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	// A claim of the dead replica that had taken a machine: mark a standby
	// as its session machine, as a claim would.
	sb := e.standbys[1]
	orphan := &store.Session{ID: "orphan-claim", TenantID: tnt.ID, Pool: testPool, State: store.StateStarting,
		AppName: testApp, MachineID: sb, Owner: dead, Mode: "pty", SessionBranch: "hangar/orphan-claim"}
	if err := st.CreateSession(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	// And hand the ready session to the dead replica.
	if _, err := st.UpdateSession(ctx, ready.ID, nil, func(s *store.Session) error { s.Owner = dead; return nil }); err != nil {
		t.Fatal(err)
	}
	failed := u.waitState("orphan-claim", isState("failed", "ended"))
	if failed.State != "failed" || !strings.Contains(failed.Reason, dead) || !strings.Contains(failed.Reason, "stopped before") {
		t.Fatalf("orphaned claim: %+v", failed)
	}
	assertMachineGone(t, e, sb)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := st.GetSession(ctx, ready.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Owner == d.DaemonID && s.State == store.StateReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready session not taken over: %+v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		ds, err := st.DeadDaemons(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !contains(ds, dead) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead replica is still listed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// TestRestartKeepsSessions: a replica that shuts down leaves its running
// sessions running in their VMs; the next replica takes them over and
// serves attaches to them, output intact.
func TestRestartKeepsSessions(t *testing.T) {
	e := newEnv(t, 1, 4)
	dsn := "sqlite://" + t.TempDir() + "/hangard.db"
	d1 := e.start(t, dsn)
	admin := newAPI(t, d1.URL, adminKey)
	tn := admin.createTenant("restart", nil)
	u := admin.with(tn.APIKey)
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"}}, http.StatusAccepted, &s)
	tm, err := dialAttach(t, wsURL(d1.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tm.send("echo before-$((1+1))\n")
	tm.readUntil("before-2")
	before := append([]byte(nil), tm.out...)
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := e.fly.GetMachine(context.Background(), testApp, u.waitState2(t, d1, s.ID).MachineID)
	if err != nil || m.State != "started" {
		t.Fatalf("machine after the replica stopped: %v %+v", err, m)
	}

	d2 := e.start(t, dsn)
	u2 := newAPI(t, d2.URL, tn.APIKey)
	tm2, err := dialAttach(t, wsURL(d2.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, int64(len("echo before-$((1+1))\n")))
	if err != nil {
		t.Fatal(err)
	}
	tm2.readUntil("before-2")
	if !strings.HasPrefix(string(tm2.out), string(before)) {
		t.Fatalf("output after restart:\n%q\nwant prefix\n%q", tm2.out, before)
	}
	tm2.close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := d2.Store.GetSession(context.Background(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Owner == d2.DaemonID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session not taken over: owner %s", cur.Owner)
		}
		time.Sleep(50 * time.Millisecond)
	}
	u2.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
	if got := u2.waitState(s.ID, isState("ended", "failed")); got.State != "ended" {
		t.Fatalf("end after restart: %+v", got)
	}
}

// waitState2 reads a session straight from a stopped replica's store.
func (a *api) waitState2(t *testing.T, d *replica, id string) *store.Session {
	t.Helper()
	dd, err := store.Open(context.Background(), d.Config.StoreDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer dd.Close()
	s, err := dd.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != store.StateReady {
		t.Fatalf("session after the replica stopped: %s (%s)", s.State, s.Reason)
	}
	return s
}

// TestQueueAndSuspendedStandby: with the pool at max_machines a claim waits
// in line (queue_position, state frames on attach) and gets a machine once
// one is freed; a suspended standby is resumed on claim.
func TestQueueAndSuspendedStandby(t *testing.T) {
	e := newEnvMode(t, 1, 1, pool.StandbySuspend)
	if m, err := e.fly.GetMachine(context.Background(), testApp, e.standbys[0]); err != nil || m.State != "suspended" {
		t.Fatalf("standby: %v %+v", err, m)
	}
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("queue", nil)
	u := admin.with(tn.APIKey)
	var first, second session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"}}, http.StatusAccepted, &first)
	first = u.waitState(first.ID, isState("ready", "failed"))
	if first.State != "ready" || first.MachineID != e.standbys[0] {
		t.Fatalf("first session: %+v", first)
	}
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"}}, http.StatusAccepted, &second)
	if second.State != "pending" || second.QueuePosition != 1 {
		t.Fatalf("second session: %+v", second)
	}
	// Attach while it waits: state frames first, then the terminal.
	type result struct {
		tm  *term
		err error
	}
	attached := make(chan result, 1)
	go func() {
		tm, err := dialAttach(t, wsURL(d.URL)+"/v1/sessions/"+second.ID+"/attach", bearer(tn.APIKey), 0, 0)
		attached <- result{tm, err}
	}()
	u.waitState(second.ID, func(s session) bool {
		if s.State != "pending" {
			t.Fatalf("second session left the line while the pool is full: %+v", s)
		}
		return true
	})
	u.json("DELETE", "/v1/sessions/"+first.ID, nil, http.StatusAccepted, nil)
	r := <-attached
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.tm.states) == 0 || r.tm.states[0].State != "pending" || r.tm.states[0].QueuePosition != 1 {
		t.Fatalf("state frames before attached: %+v", r.tm.states)
	}
	r.tm.send("echo queued-$((2*3))\n")
	r.tm.readUntil("queued-6")
	r.tm.close()
	if s := u.waitState(second.ID, isState("ready", "failed")); s.State != "ready" {
		t.Fatalf("second session: %+v", s)
	}
}

// TestSessionsEndThemselves: a session ends when its process exits and when
// it reaches its tenant's maximum duration; both record why and destroy the
// machine.
func TestSessionsEndThemselves(t *testing.T) {
	e := newEnv(t, 2, 4)
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	quick := admin.with(admin.createTenant("quick", map[string]any{"max_session_duration": "2s"}).APIKey)
	plain := admin.with(admin.createTenant("plain", nil).APIKey)

	var exits, long session
	plain.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sh", "-c", "sleep 0.5; exit 3"}}, http.StatusAccepted, &exits)
	quick.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &long)
	for _, c := range []struct {
		u      *api
		s      session
		reason string
	}{{plain, exits, "exited with code 3"}, {quick, long, "maximum duration of 2s"}} {
		got := c.u.waitState(c.s.ID, isState("ended", "failed"))
		if got.State != "ended" || !strings.Contains(got.Reason, c.reason) {
			t.Errorf("session %s: %s (%s), want ended: %s", got.ID, got.State, got.Reason, c.reason)
		}
		if got.MachineID != "" {
			assertMachineGone(t, e, got.MachineID)
		}
	}
}

// TestCloneTriesNextRegion: with no standby left, a claim clones the
// template, moving to the pool's next region on insufficient capacity, and
// waits in line while every region is full.
func TestCloneTriesNextRegion(t *testing.T) {
	e := newEnvSpec(t, 0, func(s *pool.Spec) { s.Regions = []string{"iad", "ams"} })
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	u := admin.with(admin.createTenant("regions", nil).APIKey)
	e.emu.SetRegionFull("iad", true)
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	s = u.waitState(s.ID, isState("ready", "failed"))
	m, err := e.fly.GetMachine(context.Background(), testApp, s.MachineID)
	if s.State != "ready" || err != nil || m.Region != "ams" {
		t.Fatalf("session %+v on machine %+v (%v)", s, m, err)
	}
	e.emu.SetRegionFull("ams", true)
	var waits session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &waits)
	// Let the claim workers try (and fail) a few rounds; it must stay in line.
	for i := 0; i < 10; i++ {
		if got := u.waitState(waits.ID, func(session) bool { return true }); got.State != "pending" || got.QueuePosition != 1 {
			t.Fatalf("claim with every region full: %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.emu.SetRegionFull("iad", false)
	if got := u.waitState(waits.ID, isState("ready", "failed")); got.State != "ready" {
		t.Fatalf("claim after capacity came back: %+v", got)
	}
}

// TestIdleTimeout: a session with no input or output for the pool's idle
// timeout ends by itself.
func TestIdleTimeout(t *testing.T) {
	e := newEnvSpec(t, 1, func(s *pool.Spec) { s.IdleTimeout = time.Second })
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	u := admin.with(admin.createTenant("idle", nil).APIKey)
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	got := u.waitState(s.ID, isState("ended", "failed"))
	if got.State != "ended" || !strings.Contains(got.Reason, "idle") {
		t.Fatalf("idle session: %+v", got)
	}
	assertMachineGone(t, e, got.MachineID)
}

// TestTenantImages: a tenant image serves only the tenant it names.
func TestTenantImages(t *testing.T) {
	e := newEnv(t, 0, 4)
	spec, err := pool.FromTemplate(testApp, e.template)
	if err != nil {
		t.Fatal(err)
	}
	ti := spec.ForTenantImage("b-image", "tenant-b", "hangar-worker:b", 0, nil, map[string]string{"IMAGE_OF": "b"})
	if _, err := e.fly.CreateMachine(context.Background(), testApp, ti.CreateTemplateRequest()); err != nil {
		t.Fatal(err)
	}
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	ua := admin.with(admin.createTenant("tenant-a", nil).APIKey)
	ub := admin.with(admin.createTenant("tenant-b", nil).APIKey)
	if st, b, _ := ua.do("POST", "/v1/sessions", map[string]any{"pool": testPool, "tenant_image": "b-image"}); st != http.StatusUnprocessableEntity {
		t.Fatalf("A using B's image: %d %s", st, b)
	}
	var s session
	ub.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "tenant_image": "b-image", "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	s = ub.waitState(s.ID, isState("ready", "failed"))
	m, err := e.fly.GetMachine(context.Background(), testApp, s.MachineID)
	if s.State != "ready" || err != nil || pool.TenantImageOf(m) != "b-image" || m.Config.Env["IMAGE_OF"] != "b" {
		t.Fatalf("B's session %+v on %+v (%v)", s, m, err)
	}
	var pools []struct {
		TenantImages []struct {
			Name string `json:"name"`
		} `json:"tenant_images"`
	}
	ua.json("GET", "/v1/pools", nil, http.StatusOK, &pools)
	if len(pools) != 1 || len(pools[0].TenantImages) != 0 {
		t.Fatalf("A sees tenant images: %+v", pools)
	}
	ub.json("GET", "/v1/pools", nil, http.StatusOK, &pools)
	if len(pools) != 1 || len(pools[0].TenantImages) != 1 {
		t.Fatalf("B's tenant images: %+v", pools)
	}
}

// TestInitFailure: when the agent cannot set the session up (here: the repo
// does not exist), the session fails with the agent's reason and its machine
// is destroyed.
func TestInitFailure(t *testing.T) {
	e := newEnv(t, 1, 4)
	d := e.start(t, "")
	admin := newAPI(t, d.URL, adminKey)
	u := admin.with(admin.createTenant("unlucky", nil).APIKey)
	git := e.git(t)
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "repo": git.RepoURL("missing"),
		"credentials": map[string]string{"git_token": git.Token}}, http.StatusAccepted, &s)
	got := u.waitState(s.ID, isState("ready", "failed", "ended"))
	if got.State != "failed" || !strings.Contains(got.Reason, "init") || got.MachineID == "" {
		t.Fatalf("session: %+v", got)
	}
	if strings.Contains(got.Reason, git.Token) {
		t.Fatal("the reason carries the git token")
	}
	assertMachineGone(t, e, got.MachineID)
}
