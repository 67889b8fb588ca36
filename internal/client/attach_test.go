package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/syncbuf"
	"github.com/hangarhq/hangar/internal/wire"
)

// fakeSession is a tiny stand-in for the daemon+agent end of an attach: an
// output log with absolute offsets and an echo of every input byte. It drops
// the connection after dropEvery frames, to exercise reconnects.
type fakeSession struct {
	mu        sync.Mutex
	out       []byte
	applied   []byte
	dropEvery int
	attaches  []wire.Attach
	cols      int
	rows      int
	exitAfter int // exit once this many input bytes were applied
	closeCode websocket.StatusCode
	httpCode  int
}

func (f *fakeSession) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer key" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"unauthorized","message":"bad API key"}}`)
		return
	}
	if f.httpCode != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.httpCode)
		fmt.Fprint(w, `{"error":{"code":"session_ended","message":"session has ended"}}`)
		return
	}
	if r.URL.Path == "/v1/sessions/s1" {
		fmt.Fprint(w, `{"id":"s1","state":"ready"}`)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolPTY}})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	_, data, err := c.Read(ctx)
	if err != nil {
		return
	}
	m, err := wire.Decode(data)
	if err != nil {
		return
	}
	att := m.(*wire.Attach)
	f.mu.Lock()
	f.attaches = append(f.attaches, *att)
	if f.closeCode != 0 {
		f.mu.Unlock()
		c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: "x", Message: "no way"}))
		c.Close(f.closeCode, "")
		return
	}
	if att.Cols > 0 {
		f.cols, f.rows = att.Cols, att.Rows
	}
	from := att.From
	if from < 0 {
		from = int64(len(f.out))
	}
	c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.State{State: "starting", Detail: "booting"}))
	c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attached{Session: "s1", Role: att.Role, From: from, Head: int64(len(f.out)), InputApplied: int64(len(f.applied)), Cols: 80, Rows: 24}))
	frames := 0
	if from < int64(len(f.out)) {
		c.Write(ctx, websocket.MessageBinary, f.out[from:])
		frames++
	}
	f.mu.Unlock()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageText {
			if m, _ := wire.Decode(data); m != nil {
				if rs, ok := m.(*wire.Resize); ok {
					f.mu.Lock()
					f.cols, f.rows = rs.Cols, rs.Rows
					f.mu.Unlock()
				}
			}
			continue
		}
		f.mu.Lock()
		f.applied = append(f.applied, data...)
		echo := []byte(strings.ToUpper(string(data)))
		f.out = append(f.out, echo...)
		frames++
		drop := f.dropEvery > 0 && frames%f.dropEvery == 0
		exit := f.exitAfter > 0 && len(f.applied) >= f.exitAfter
		at := int64(len(f.out))
		f.mu.Unlock()
		if drop {
			// The echo is in the log but never sent: a reconnect must replay it.
			c.CloseNow()
			return
		}
		c.Write(ctx, websocket.MessageBinary, echo)
		if exit {
			c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Exit{Code: 3, At: at}))
			c.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}

func TestAttachReconnectLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		earlier string // input the session applied before this client came
	}{
		{"fresh session", ""},
		// The session counts input over all clients: this client's input
		// starts at the session's input_applied, not at 0.
		{"session with earlier input", "typed by an earlier client\r"},
	} {
		t.Run(tc.name, func(t *testing.T) { testReconnectLosesNothing(t, tc.earlier) })
	}
}

func testReconnectLosesNothing(t *testing.T, earlier string) {
	fs := &fakeSession{dropEvery: 4, exitAfter: len(earlier) + 120, applied: []byte(earlier), out: []byte(strings.ToUpper(earlier))}
	srv := httptest.NewServer(fs)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "key", nil)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	reconnects := 0
	a := c.Attach("s1", AttachOptions{
		Cols: 100, Rows: 30,
		OnState:        func(s wire.State) { states = append(states, s.State) },
		OnReconnecting: func(int, error) { reconnects++ },
	})
	var out syncbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var input strings.Builder
	go func() {
		for i := 0; i < 120; i++ {
			ch := string(rune('a' + i%26))
			input.WriteString(ch)
			a.Write([]byte(ch))
			time.Sleep(time.Millisecond)
		}
	}()
	exit, err := a.Run(ctx, &out)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if exit == nil || exit.Code != 3 {
		t.Fatalf("exit = %+v, want code 3", exit)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if string(fs.applied) != earlier+input.String() {
		t.Errorf("server applied %q, client typed %q after %q", fs.applied, input.String(), earlier)
	}
	if out.String() != string(fs.out) {
		t.Errorf("client rendered %q, server output %q", out.String(), fs.out)
	}
	if reconnects == 0 || len(fs.attaches) < 2 {
		t.Errorf("expected reconnects, got %d (%d attaches)", reconnects, len(fs.attaches))
	}
	for i, at := range fs.attaches[1:] {
		if at.From <= 0 || at.InputFrom <= 0 {
			t.Errorf("attach %d: from=%d input_from=%d, want resume offsets", i+1, at.From, at.InputFrom)
		}
	}
	if fs.cols != 100 || fs.rows != 30 {
		t.Errorf("size %dx%d, want 100x30", fs.cols, fs.rows)
	}
	if len(states) == 0 || states[0] != "starting" {
		t.Errorf("states = %v", states)
	}
}

func TestAttachPermanentErrors(t *testing.T) {
	cases := []struct {
		name  string
		fs    *fakeSession
		token string
		want  error
		text  string
	}{
		{"bad key", &fakeSession{}, "nope", nil, "bad API key"},
		{"ended before upgrade", &fakeSession{httpCode: http.StatusConflict}, "key", ErrSessionGone, "session has ended"},
		{"superseded", &fakeSession{closeCode: wire.CloseSuperseded}, "key", ErrSuperseded, "no way"},
		{"gone", &fakeSession{closeCode: wire.CloseSessionGone}, "key", ErrSessionGone, ""},
		{"forbidden", &fakeSession{closeCode: wire.CloseForbidden}, "key", ErrForbidden, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.fs)
			t.Cleanup(srv.Close)
			c, _ := New(srv.URL, tc.token, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := c.Attach("s1", AttachOptions{}).Run(ctx, &syncbuf.Buffer{})
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err = %v, want it to mention %q", err, tc.text)
			}
		})
	}
}

func TestAttachReadOnlyRefusesInput(t *testing.T) {
	c, _ := New("http://127.0.0.1:1", "key", nil)
	a := c.Attach("s1", AttachOptions{Role: wire.RoleReader})
	if _, err := a.Write([]byte("x")); !errors.Is(err, ErrForbidden) {
		t.Fatalf("write on ro attachment: %v", err)
	}
}
