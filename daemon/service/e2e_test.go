package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/store/storetest"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// TestEndToEnd: a session with bash on a repo, attached through the daemon,
// a command's output, a disconnect and a reattach from the last offset that
// loses and repeats no byte, the end pushing a commit, the machine destroyed,
// and no secret anywhere.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t, 1, 10)
	dbPath := filepath.Join(t.TempDir(), "hangard.db")
	d := e.start(t, "sqlite://"+dbPath)
	a := newAPI(t, d.URL, "")
	tn := a.createTenant("acme", nil)
	ua := a.with(tn.APIKey)

	git := e.git(t)
	repo := git.CreateRepo(t, "proj", map[string]string{"README.md": "hello\n"})
	const apiKey = "sk-ant-api03-e2e-SECRET-7d1c0ffee"
	var s session
	ua.json("POST", "/v1/sessions", map[string]any{
		"pool": testPool, "repo": repo, "command": []string{"bash", "--norc", "--noprofile"},
		"env":         map[string]string{"PS1": "$ "},
		"git_author":  map[string]string{"name": "E2E Tester", "email": "e2e@example.com"},
		"credentials": map[string]string{"anthropic_api_key": apiKey, "git_token": git.Token},
	}, http.StatusAccepted, &s)
	if s.State != "pending" || s.Tenant != "acme" || s.SessionBranch != "hangar/"+s.ID {
		t.Fatalf("created session: %+v", s)
	}

	url := wsURL(d.URL) + "/v1/sessions/" + s.ID + "/attach"
	var sent int64
	send := func(tm *term, in string) { tm.send(in); sent += int64(len(in)) }

	// Attach at once: progress arrives as state frames until ready.
	tm, err := dialAttach(t, url, bearer(tn.APIKey), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	send(tm, "echo hello-$((6*7))\n")
	tm.readUntil("hello-42")

	// Output keeps streaming while the client drops its connection.
	send(tm, "for i in $(seq 1 40); do echo line-$i; sleep 0.02; done; echo ALL-DONE\n")
	tm.readUntil("line-5\r\n")
	first := append([]byte(nil), tm.out...)
	off := tm.start + int64(len(first))
	tm.close()

	tm2, err := dialAttach(t, url, bearer(tn.APIKey), off, sent)
	if err != nil {
		t.Fatal(err)
	}
	if tm2.attached.From != off || tm2.attached.InputApplied != sent {
		t.Fatalf("reattach: %+v, want from %d input_applied %d", tm2.attached, off, sent)
	}
	tm2.readUntil("line-40\r\nALL-DONE")
	stream := append(first, tm2.out...)
	tm2.close()

	// A replay from 0 must equal what the two attachments saw, byte for byte.
	tm3, err := dialAttach(t, url, bearer(tn.APIKey), 0, sent)
	if err != nil {
		t.Fatal(err)
	}
	tm3.readUntil("line-40\r\nALL-DONE")
	tm3.readAtLeast(len(stream))
	if tm3.start != 0 || len(tm3.out) < len(stream) || !bytes.Equal(tm3.out[:len(stream)], stream) {
		t.Fatalf("reconnect lost or repeated bytes:\nseen:   %q\nreplay: %q", stream, tm3.out)
	}
	for i := 1; i <= 40; i++ {
		if n := bytes.Count(stream, []byte(fmt.Sprintf("line-%d\r\n", i))); n != 1 {
			t.Fatalf("line-%d seen %d times", i, n)
		}
	}
	send(tm3, "echo from-the-session > result.txt; echo written-$((1+1))\n")
	tm3.readUntil("written-2")
	tm3.close()

	var ended session
	ua.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, &ended)
	ended = ua.waitState(s.ID, isState("ended", "failed"))
	if ended.State != "ended" || ended.Push == nil || !ended.Push.OK || ended.Push.Commit == "" {
		t.Fatalf("ended session: %+v push %+v", ended, ended.Push)
	}
	if got := git.Commit(t, "proj", "refs/heads/"+ended.SessionBranch); got != ended.Push.Commit {
		t.Fatalf("session branch at %q, push reported %q", got, ended.Push.Commit)
	}
	if content, ok := git.ReadFile(t, "proj", ended.Push.Commit, "result.txt"); !ok || !strings.Contains(content, "from-the-session") {
		t.Fatalf("result.txt in the pushed commit: %q %v", content, ok)
	}
	assertMachineGone(t, e, ended.MachineID)

	// Attaching to an ended session is refused before the upgrade.
	if _, err := dialAttach(t, url, bearer(tn.APIKey), 0, 0); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("attach to ended session: %v", err)
	}

	// No secret in logs, API responses, machine configs, metadata, env or the store.
	d.Close()
	ms, err := e.fly.ListMachines(context.Background(), testApp, fly.ListMachinesOptions{IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	machines, _ := json.Marshal(ms)
	places := map[string]string{"daemon logs": d.logs.String(), "API responses": strings.Join(*ua.seen, "\n"), "machine configs": string(machines)}
	for _, f := range []string{dbPath, dbPath + "-wal"} {
		if b, err := os.ReadFile(f); err == nil {
			places["store file "+filepath.Base(f)] = string(b)
		}
	}
	for where, text := range places {
		for _, secret := range []string{apiKey, git.Token, tn.APIKey} {
			if secret == tn.APIKey && where == "API responses" {
				continue // shown once, by design, in the answer to the tenant's creation
			}
			if strings.Contains(text, secret) {
				t.Errorf("a secret (%.8s…) appears in %s", secret, where)
			}
		}
	}
	if !strings.Contains(d.logs.String(), "session ready") {
		t.Error("the log scan saw no log at all")
	}
}

func assertMachineGone(t *testing.T, e *env, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := e.fly.GetMachine(context.Background(), testApp, id)
		if errors.Is(err, fly.ErrNotFound) || err == nil && m.State == fly.StateDestroyed {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.State != fly.StateDestroying || time.Now().After(deadline) {
			t.Fatalf("machine %s is %s, want destroyed", id, m.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoReplicasPostgres: two daemons share one Postgres; a session created
// on one is attached through the other and ended through it; then both race
// for 50 sessions and never claim one standby twice.
func TestTwoReplicasPostgres(t *testing.T) {
	dsn := storetest.StartPostgres(t)
	// 60 sessions at once against Fly's rate limits (the emulator's default):
	// 19 from standbys, the rest cloned at Fly's pace (1 create/s per app).
	const standbys, total = 20, 60
	e := newEnv(t, standbys, total+5)
	d1, d2 := e.start(t, dsn), e.start(t, dsn)
	tn := newAPI(t, d1.URL, "").createTenant("multi", nil)
	u1, u2 := newAPI(t, d1.URL, tn.APIKey), newAPI(t, d2.URL, tn.APIKey)

	var s session
	u1.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"}}, http.StatusAccepted, &s)
	tm, err := dialAttach(t, wsURL(d2.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tm.send("echo across-$((40+2))\n")
	tm.readUntil("across-42")
	tm.close()
	u2.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
	if got := u1.waitState(s.ID, isState("ended", "failed")); got.State != "ended" {
		t.Fatalf("session ended through the other replica: %+v", got)
	}

	// The race: half of the sessions through each replica, all at once.
	var standbySet = map[string]bool{}
	for _, id := range e.standbys {
		standbySet[id] = true
	}
	ids := make([]string, total)
	var wg sync.WaitGroup
	for i := 0; i < total; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			u := u1
			if i%2 == 1 {
				u = u2
			}
			var s session
			u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
			ids[i] = s.ID
		}(i)
	}
	wg.Wait()
	byMachine := map[string]string{}
	fromStandby := 0
	for _, id := range ids {
		s := u1.waitState(id, isState("ready", "failed", "ended"))
		if s.State != "ready" {
			t.Fatalf("session %s: %s (%s)", id, s.State, s.Reason)
		}
		if other, dup := byMachine[s.MachineID]; dup {
			t.Fatalf("machine %s claimed by both %s and %s", s.MachineID, other, id)
		}
		byMachine[s.MachineID] = id
		if standbySet[s.MachineID] {
			fromStandby++
		}
		m, err := e.fly.GetMachine(context.Background(), testApp, s.MachineID)
		if err != nil {
			t.Fatal(err)
		}
		if md := pool.MetadataOf(m); md[pool.KeySession] != id || md[pool.KeyRole] != pool.RoleSession {
			t.Fatalf("machine %s metadata %v, want session %s", m.ID, md, id)
		}
	}
	if fromStandby != standbys-1 { // the first session above took one standby
		t.Errorf("%d sessions came from standbys, want %d", fromStandby, standbys-1)
	}
	// No claim failed for a 429 (every one is ready); how many Fly answered
	// shows how close the replicas' shared budget keeps them to the limits.
	t.Logf("%d sessions ready across 2 replicas; Fly (the emulator) answered %d calls 429", total, e.emu.RateLimited())
	for i, id := range ids {
		wg.Add(1)
		go func(i int, id string) {
			defer wg.Done()
			u := u1
			if i%2 == 0 {
				u = u2
			}
			u.json("DELETE", "/v1/sessions/"+id, nil, http.StatusAccepted, nil)
		}(i, id)
	}
	wg.Wait()
	for _, id := range ids {
		if s := u2.waitState(id, isState("ended", "failed")); s.State != "ended" {
			t.Errorf("session %s: %s (%s)", id, s.State, s.Reason)
		}
	}
	ms, err := e.fly.ListMachines(context.Background(), testApp, fly.ListMachinesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !pool.IsTemplate(&m) {
			assertMachineGone(t, e, m.ID)
		}
	}

	// A tenant limit holds across replicas under concurrent requests.
	capped := newAPI(t, d1.URL, "").createTenant("capped", map[string]any{"max_sessions": 3})
	c1, c2 := newAPI(t, d1.URL, capped.APIKey), newAPI(t, d2.URL, capped.APIKey)
	statuses := make([]int, 10)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			u := c1
			if i%2 == 1 {
				u = c2
			}
			statuses[i], _, _ = u.do("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}})
		}(i)
	}
	wg.Wait()
	accepted := 0
	for _, st := range statuses {
		switch st {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
		default:
			t.Errorf("status %d", st)
		}
	}
	if accepted != 3 {
		t.Fatalf("%d sessions accepted with max_sessions 3: %v", accepted, statuses)
	}
}
