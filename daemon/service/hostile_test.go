package service_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/server"
	"github.com/hangarhq/hangar/daemon/service"
	"github.com/hangarhq/hangar/internal/wire"
)

// TestHTTPTimeouts: with short server timeouts a trickled request body is
// cut off, while an event stream and an attach live on past the write
// timeout (the stream extends its deadline, the attach was upgraded).
func TestHTTPTimeouts(t *testing.T) {
	const write = 400 * time.Millisecond
	e := newEnv(t, 1, 4)
	d := e.startWith(t, "", func(o *service.Options) {
		o.HTTPTimeouts = service.HTTPTimeouts{Read: 500 * time.Millisecond, Write: write}
	})
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("slow", nil)
	u := admin.with(tn.APIKey)

	// A body trickled at a byte per 100 ms would take 20 s; the server
	// gives up long before.
	conn, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n", tn.APIKey)
	var sent atomic.Int64
	go func() {
		for range 200 {
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
			sent.Add(1)
			time.Sleep(100 * time.Millisecond) // the trickle itself
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = bufio.NewReader(conn).ReadString('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a trickled body held the connection for 30 s")
	}
	if n := sent.Load(); n >= 200 {
		t.Fatalf("the server read the whole trickled body (%d bytes)", n)
	}

	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc"}}, http.StatusAccepted, &s)
	req, _ := http.NewRequest("GET", d.URL+"/v1/sessions/"+s.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tn.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	events := make(chan string, 64)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "data: ") {
				events <- line
			}
		}
	}()
	u.waitState(s.ID, isState("ready"))
	tm, err := dialAttach(t, wsURL(d.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tm.close)
	// Well past the write timeout (a condition on the clock, which is what
	// is under test)...
	past := time.Now().Add(3 * write)
	for time.Now().Before(past) {
		time.Sleep(past.Sub(time.Now()))
	}
	// ...the attach still carries input and output,
	tm.send("echo still-$((40+2))\n")
	tm.readUntil("still-42")
	// and the event stream still reports changes.
	u.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
	for ev := range events {
		if strings.Contains(ev, `"state":"ended"`) || strings.Contains(ev, `"state":"ending"`) {
			return
		}
	}
	t.Fatal("the event stream ended before it reported the end")
}

// TestAttachLimits: the attachments one ticket or one session may hold at a
// time are capped; the refusal is an error frame with retry_after_ms, then
// close 4029; a freed slot can be taken again.
func TestAttachLimits(t *testing.T) {
	e := newEnv(t, 1, 4)
	d := e.startWith(t, "", func(o *service.Options) {
		o.AttachLimits = server.AttachLimits{PerTicket: 2, PerSession: 3}
	})
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("many", nil)
	u := admin.with(tn.APIKey)
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"bash", "--norc"}}, http.StatusAccepted, &s)
	u.waitState(s.ID, isState("ready"))
	var share ticket
	u.json("POST", "/v1/sessions/"+s.ID+"/tickets", map[string]any{"role": "ro", "uses": 100, "ttl": "1h"}, http.StatusCreated, &share)

	refused := func(what string, err error) {
		t.Helper()
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.ErrCodeRateLimited || we.RetryAfterMS <= 0 {
			t.Fatalf("%s: %v; want a rate_limited error with retry_after_ms", what, err)
		}
	}
	var held []*term
	for range 2 {
		tm, err := dialAttach(t, share.URL, nil, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, tm)
	}
	_, err := dialAttach(t, share.URL, nil, -1, 0)
	refused("third attach with one ticket", err)
	key := wsURL(d.URL) + "/v1/sessions/" + s.ID + "/attach?role=ro"
	tm, err := dialAttach(t, key, bearer(tn.APIKey), -1, 0)
	if err != nil {
		t.Fatalf("an attach with the key while the ticket is at its limit: %v", err)
	}
	held = append(held, tm)
	_, err = dialAttach(t, key, bearer(tn.APIKey), -1, 0)
	refused("fourth attach to one session", err)
	held[0].close()
	// The slot is freed when the daemon sees the close: wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		tm, err := dialAttach(t, share.URL, nil, -1, 0)
		if err == nil {
			tm.close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the freed slot was never reusable: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // poll the condition
	}
	for _, h := range held[1:] {
		h.close()
	}
}
