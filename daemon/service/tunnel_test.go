package service_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/daemon/store/storetest"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/tunnel"
	"github.com/hangarhq/hangar/internal/wire"
)

// requireNamespaces skips a test that is only meaningful when the emulator
// isolates machines in network namespaces (it needs root; make test runs
// as root).
func requireNamespaces(t *testing.T, e *env) {
	t.Helper()
	if e.emu.NetworkMode() != "namespaces" {
		t.Skipf("the Fly emulator runs in %s mode (network namespaces need root): isolation cannot be shown", e.emu.NetworkMode())
	}
}

// probe runs a TCP connect from inside the session's VM (its shell) and
// reports whether it connected.
func probe(tm *term, name, hostport string) bool {
	tm.t.Helper()
	host, port, _ := net.SplitHostPort(hostport)
	tm.send(fmt.Sprintf("timeout 3 bash -c 'echo > /dev/tcp/%s/%s' 2>/dev/null && echo PROBE-%s-$((0+1)) || echo PROBE-%s-$((0+0))\n", host, port, name, name))
	for {
		tm.readUntil("PROBE-" + name + "-")
		i := bytes.LastIndex(tm.out, []byte("PROBE-"+name+"-"))
		rest := tm.out[i+len("PROBE-"+name+"-"):]
		if len(rest) > 0 && (rest[0] == '0' || rest[0] == '1') && !bytes.HasPrefix(rest, []byte("$")) {
			return rest[0] == '1'
		}
		tm.readAtLeast(len(tm.out) + 1)
	}
}

// TestIsolatedNetwork: a pool on its own network works end to end — its
// agents dial home — from stop and from suspend standbys, while nothing
// outside the network reaches its machines and they reach only the public
// internet (the daemon's public URL, the git server).
func TestIsolatedNetwork(t *testing.T) {
	for _, mode := range []pool.StandbyMode{pool.StandbyStop, pool.StandbySuspend} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnvSpec(t, 1, func(s *pool.Spec) { s.Network, s.StandbyMode, s.MaxMachines = "tenant-a", mode, 4 })
			requireNamespaces(t, e)
			ctx := context.Background()

			// Another tenant's worker, on a network of its own, running an
			// agent the old way: listening on its 6PN address.
			if _, err := e.fly.CreateApp(ctx, fly.CreateAppRequest{Name: "hangar-other", OrgSlug: "personal", Network: "tenant-b"}); err != nil {
				t.Fatal(err)
			}
			other, err := e.fly.CreateMachine(ctx, "hangar-other", fly.CreateMachineRequest{Region: region, Config: &fly.MachineConfig{
				Image: "hangar-worker:test", Env: map[string]string{
					pool.EnvBrokerPublicKey: e.template.Config.Env[pool.EnvBrokerPublicKey], "HANGAR_WORKSPACE": "workspace",
				},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.fly.WaitMachine(ctx, "hangar-other", other.ID, fly.WaitOptions{States: []string{fly.StateStarted}, Timeout: 30 * time.Second}); err != nil {
				t.Fatal(err)
			}
			otherAgent := net.JoinHostPort(other.PrivateIP, strconv.Itoa(pool.DefaultAgentPort))
			// The design before tunnels: the daemon dials a worker's 6PN
			// address. On an isolated network that dial cannot succeed.
			if c, err := net.DialTimeout("tcp", otherAgent, 3*time.Second); err == nil {
				c.Close()
				t.Fatalf("the host reached an isolated worker at %s", otherAgent)
			}

			d := e.start(t, "")
			a := newAPI(t, d.URL, "")
			tn := a.createTenant("acme", nil)
			ua := a.with(tn.APIKey)
			git := e.git(t)
			repo := git.CreateRepo(t, "iso", map[string]string{"README.md": "isolated\n"})
			var s session
			ua.json("POST", "/v1/sessions", map[string]any{
				"pool": testPool, "repo": repo, "command": []string{"bash", "--norc", "--noprofile"},
				"env": map[string]string{"PS1": "$ "}, "credentials": map[string]string{"git_token": git.Token},
			}, http.StatusAccepted, &s)
			s = ua.waitState(s.ID, isState("ready", "failed"))
			if s.State != "ready" {
				t.Fatalf("session on an isolated network: %s (%s)", s.State, s.Reason)
			}
			if !d.Tunnels.Connected(s.MachineID) {
				t.Fatalf("session machine %s is ready but has no tunnel to the replica", s.MachineID)
			}
			tm, err := dialAttach(t, wsURL(d.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			tm.send("echo typed-$((20+22))\n")
			tm.readUntil("typed-42")

			// What the worker reaches, seen from its own shell.
			lbAddr := strings.TrimPrefix(e.lb.URL, "http://")
			checks := []struct {
				name, addr string
				want       bool
			}{
				{"public", lbAddr, true},                               // the daemon's public URL (its tunnel)
				{"git", strings.TrimPrefix(git.URL, "https://"), true}, // the internet
				{"othertenant", otherAgent, false},                     // another tenant's worker
				{"internal", d.InternalAddr(), false},                  // the daemon's replica-to-replica listener
				{"listen", d.addr, false},                              // the daemon's own loopback listener
			}
			for _, c := range checks {
				if got := probe(tm, c.name, c.addr); got != c.want {
					t.Errorf("from the worker, connect to %s (%s) = %v; want %v", c.name, c.addr, got, c.want)
				}
			}
			// The agent listens on no TCP port: it dialled out.
			tm.send("echo LISTENERS=$(ss -Hltn | wc -l); echo counted-$((2+2))\n")
			tm.readUntil("counted-4")
			if !bytes.Contains(tm.out, []byte("LISTENERS=0\r\n")) {
				i := bytes.LastIndex(tm.out, []byte("LISTENERS="))
				t.Errorf("TCP listeners in the worker: %q", tm.out[i:])
			}
			tm.send("echo made-on-an-isolated-network > iso.txt; echo saved-$((1+1))\n")
			tm.readUntil("saved-2")
			tm.close()

			ua.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
			ended := ua.waitState(s.ID, isState("ended", "failed"))
			if ended.State != "ended" || ended.Push == nil || !ended.Push.OK {
				t.Fatalf("ended: %+v push %+v", ended, ended.Push)
			}
			if content, ok := git.ReadFile(t, "iso", ended.Push.Commit, "iso.txt"); !ok || !strings.Contains(content, "isolated-network") {
				t.Fatalf("iso.txt in the pushed commit: %q %v", content, ok)
			}
			assertMachineGone(t, e, ended.MachineID)
		})
	}
}

// TestTunnelAcrossReplicas: two replicas on one Postgres; the tunnel, the
// claim and the attach land on different replicas in three combinations,
// then a 20 MB stream survives its tunnel being cut and the replica holding
// the tunnel being restarted, with no byte lost or doubled and no keystroke
// applied twice.
func TestTunnelAcrossReplicas(t *testing.T) {
	dsn := storetest.StartPostgres(t)
	e := newEnv(t, 3, 8)
	d1, d2 := e.start(t, dsn), e.start(t, dsn)
	tn := newAPI(t, d1.URL, "").createTenant("multi", nil)
	replicas := map[string]*replica{"1": d1, "2": d2}

	for _, combo := range []string{"122", "221", "121"} { // tunnel, claim, attach
		dt, dc, da := replicas[combo[:1]], replicas[combo[1:2]], replicas[combo[2:]]
		t.Run("tunnel"+combo[:1]+"_claim"+combo[1:2]+"_attach"+combo[2:], func(t *testing.T) {
			e.lb.pin(dt.addr)
			uc, ua := newAPI(t, dc.URL, tn.APIKey), newAPI(t, da.URL, tn.APIKey)
			var s session
			uc.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"}}, http.StatusAccepted, &s)
			s = uc.waitState(s.ID, isState("ready", "failed"))
			if s.State != "ready" {
				t.Fatalf("session: %s (%s)", s.State, s.Reason)
			}
			if !dt.Tunnels.Connected(s.MachineID) {
				t.Fatalf("the tunnel of %s is not on the pinned replica", s.MachineID)
			}
			tm, err := dialAttach(t, wsURL(da.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			tm.send("echo combo-" + combo + "-$((3*3))\n")
			tm.readUntil("combo-" + combo + "-9")
			tm.close()
			ua.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
			if got := uc.waitState(s.ID, isState("ended", "failed")); got.State != "ended" {
				t.Fatalf("ended: %+v", got)
			}
		})
	}

	t.Run("cut_and_restart_during_20MB", func(t *testing.T) {
		e.lb.pin(d1.addr)
		u2 := newAPI(t, d2.URL, tn.APIKey)
		var s session
		u2.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"},
			"env": map[string]string{"PS1": "$ "}}, http.StatusAccepted, &s)
		s = u2.waitState(s.ID, isState("ready", "failed"))
		if s.State != "ready" || !d1.Tunnels.Connected(s.MachineID) {
			t.Fatalf("session %s (%s), tunnel on replica 1: %v", s.State, s.Reason, d1.Tunnels.Connected(s.MachineID))
		}
		// The client attaches to replica 2; the tunnel is on replica 1.
		tm, err := dialAttach(t, wsURL(d2.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		const lines = 2_400_000 // ~21 MB through the PTY
		// 2 MB/s: the agent's 8 MiB ring outlasts the outages below (a PTY
		// never waits for a client; a client gone for longer gets a gap).
		tm.send(fmt.Sprintf("echo STA''RT; for b in $(seq 0 %d); do seq $((b*12000+1)) $((b*12000+12000)); sleep 0.05; done; echo E''ND\n", lines/12000-1))
		sc := &seqCheck{want: lines}
		cutAt, restartAt := 3<<20, 10<<20
		cut, restarted := false, false
		var got int
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for !sc.done {
			typ, data, err := tm.c.Read(ctx)
			if err != nil {
				t.Fatalf("after %d bytes (%d lines): %v", got, sc.next-1, err)
			}
			if typ != websocket.MessageBinary {
				m, err := wire.Decode(data)
				if err != nil {
					t.Fatal(err)
				}
				switch m := m.(type) {
				case *wire.Ping:
					tm.c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Pong{TS: m.TS}))
				case *wire.Gap:
					t.Fatalf("gap during the stream: %+v", m)
				}
				continue
			}
			if got/(2<<20) != (got+len(data))/(2<<20) {
				t.Logf("%d MB received, %d lines", (got+len(data))>>20, sc.next-1)
			}
			got += len(data)
			if err := sc.feed(data); err != nil {
				t.Fatal(err)
			}
			if !cut && got >= cutAt {
				cut = true
				if n := e.lb.cut(); n == 0 {
					t.Fatal("no tunnel connection to cut")
				}
			}
			if !restarted && got >= restartAt {
				restarted = true
				// Restart the replica holding the tunnel: the agent redials and
				// lands on replica 2, where the client is.
				e.lb.remove(d1.addr)
				d1.Close()
				e.start(t, dsn)
			}
		}
		if !cut || !restarted {
			t.Fatalf("the stream ended before the faults (cut %v, restart %v, %d bytes)", cut, restarted, got)
		}
		// Keystrokes after the faults apply once.
		tm.out = nil
		tm.send("echo typed >> keys.txt; echo KEYS=$(wc -l < keys.txt); echo counted-$((3+4))\n")
		tm.readUntil("counted-7")
		if !bytes.Contains(tm.out, []byte("KEYS=1\r\n")) {
			t.Fatalf("keystrokes after the faults: %q", tm.out)
		}
		tm.close()
		t.Logf("streamed %d bytes (%d lines) through a cut tunnel and a replica restart", got, lines)
		u2.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
		if got := u2.waitState(s.ID, isState("ended", "failed")); got.State != "ended" {
			t.Fatalf("ended: %+v", got)
		}
	})
}

// seqCheck verifies `echo START; seq 1 N; echo END` output arriving in
// pieces: every number once, in order, nothing between.
type seqCheck struct {
	want    int
	started bool
	next    int
	partial []byte
	done    bool
}

func (c *seqCheck) feed(b []byte) error {
	c.partial = append(c.partial, b...)
	for {
		i := bytes.Index(c.partial, []byte("\r\n"))
		if i < 0 {
			return nil
		}
		line := string(c.partial[:i])
		c.partial = c.partial[i+2:]
		if !c.started {
			// bash leaves terminal-mode sequences ending in \r (bracketed
			// paste off) in front of the command's first line.
			if line == "START" || strings.HasSuffix(line, "\rSTART") {
				c.started, c.next = true, 1
			}
			continue
		}
		if c.next > c.want {
			if line != "END" {
				return fmt.Errorf("after %d: %q, want END", c.want, line)
			}
			c.done = true
			return nil
		}
		if line != strconv.Itoa(c.next) {
			return fmt.Errorf("line %d is %q: output lost or doubled", c.next, line)
		}
		c.next++
	}
}

// TestForgedIdentity: tunnels with a token that is expired, replayed, for
// another audience, signed by a foreign key, naming a machine that is no
// standby or session machine, or a machine of an app that is not a pool are
// refused, and nothing is claimed.
func TestForgedIdentity(t *testing.T) {
	e := newEnv(t, 2, 6)
	d := e.start(t, "")
	ctx := context.Background()
	aud := e.lb.URL
	standby, standby2 := e.standbys[0], e.standbys[1]

	if _, err := e.fly.CreateApp(ctx, fly.CreateAppRequest{Name: "not-a-pool", OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}
	stranger, err := e.fly.CreateMachine(ctx, "not-a-pool", fly.CreateMachineRequest{Region: region, SkipLaunch: true,
		Config: &fly.MachineConfig{Image: "hangar-worker:test"}})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(app, id, audience string, life time.Duration) string {
		t.Helper()
		tok, err := e.emu.OIDCToken(app, id, audience, life)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	replayed := mint(testApp, standby, aud, 5*time.Minute)
	if st := dialTunnel(t, d.URL, replayed); st != http.StatusSwitchingProtocols {
		t.Fatalf("a valid token for standby %s: status %d, want 101", standby, st)
	}
	cases := []struct {
		name  string
		token string
		want  int
	}{
		{"expired", mint(testApp, standby2, aud, -time.Minute), http.StatusUnauthorized},
		{"replayed", replayed, http.StatusUnauthorized},
		{"wrong_audience", mint(testApp, standby2, "https://elsewhere.example", 5*time.Minute), http.StatusUnauthorized},
		{"foreign_key", foreignToken(t, e, mint(testApp, standby2, aud, 5*time.Minute)), http.StatusUnauthorized},
		{"template_machine", mint(testApp, e.template.ID, aud, 5*time.Minute), http.StatusForbidden},
		{"app_not_a_pool", mint("not-a-pool", stranger.ID, aud, 5*time.Minute), http.StatusForbidden},
		{"garbage", "not-a-jwt", http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if st := dialTunnel(t, d.URL, c.token); st != c.want {
				t.Fatalf("status %d, want %d", st, c.want)
			}
		})
	}
	if d.Tunnels.Connected(standby2) || d.Tunnels.Connected(e.template.ID) || d.Tunnels.Connected(stranger.ID) {
		t.Fatal("a refused identity got a tunnel")
	}
	// Nothing was claimed: no session exists, every standby is still one.
	ss, err := d.Store.ListSessions(ctx, store.SessionFilter{})
	if err != nil || len(ss) != 0 {
		t.Fatalf("sessions after forged tunnels: %v, %v", ss, err)
	}
	for _, id := range e.standbys {
		m, err := e.fly.GetMachine(ctx, testApp, id)
		if err != nil {
			t.Fatal(err)
		}
		if !pool.IsStandby(m) || m.State != fly.StateCreated {
			t.Fatalf("standby %s after forged tunnels: %s %v", id, m.State, pool.MetadataOf(m))
		}
	}
	if strings.Contains(d.logs.String(), replayed) {
		t.Fatal("a machine identity token was logged")
	}
}

// dialTunnel opens an agent tunnel with token and returns the HTTP status.
func dialTunnel(t *testing.T, base, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	challenge := make([]byte, 32)
	rand.Read(challenge)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	h.Set(tunnel.HeaderChallenge, base64.RawURLEncoding.EncodeToString(challenge))
	c, resp, err := websocket.Dial(ctx, wsURL(base)+tunnel.Path, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{tunnel.Subprotocol}})
	if err != nil {
		if resp != nil {
			return resp.StatusCode
		}
		t.Fatalf("dial tunnel: %v", err)
	}
	defer c.CloseNow()
	return resp.StatusCode
}

// foreignToken re-signs a genuine token's header and claims with a key that
// is not the issuer's: same iss, same kid.
func foreignToken(t *testing.T, e *env, genuine string) string {
	t.Helper()
	parts := strings.Split(genuine, ".")
	var hdr map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(genuine, claims); err != nil {
		t.Fatal(err)
	}
	claims["jti"] = "forged-" + fmt.Sprint(time.Now().UnixNano())
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = hdr["kid"]
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
