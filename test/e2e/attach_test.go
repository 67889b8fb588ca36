package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/syncbuf"
	"github.com/hangarhq/hangar/internal/wire"
	"github.com/hangarhq/hangar/test/devtest"
)

// cutter is an HTTP transport whose connections the test can cut.
type cutter struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
	}
	return conn, err
}

// cutAll closes every connection made so far, as a network failure would.
func (c *cutter) cutAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func waitFor(t *testing.T, out *syncbuf.Buffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never showed %q; it has:\n%s", want, devtest.Tail(out.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines returns the output lines that match re, in order.
func lines(out string, re *regexp.Regexp) []string {
	var got []string
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n") {
		// What a terminal shows: a bare CR returns to the line's start.
		if i := strings.LastIndexByte(l, '\r'); i >= 0 {
			l = l[i+1:]
		}
		if re.MatchString(l) {
			got = append(got, l)
		}
	}
	return got
}

func TestAttachSurvivesCutConnections(t *testing.T) {
	d := devtest.Start(t)
	cut := &cutter{}
	c, err := client.New(d.Env["HANGAR_URL"], d.Env["HANGAR_TOKEN"], &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{DialContext: cut.dial},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := c.CreateSession(ctx, client.CreateSessionRequest{Pool: "dev", Mode: "pty", Env: map[string]string{"PS1": "prompt:"}, Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = c.EndSession(ctx, s.ID)
	})

	var states []string
	var mu sync.Mutex
	reconnects := 0
	a := c.Attach(s.ID, client.AttachOptions{
		Cols: 100, Rows: 30, Window: 64 << 10,
		OnState:        func(st wire.State) { mu.Lock(); states = append(states, st.State); mu.Unlock() },
		OnReconnecting: func(int, error) { mu.Lock(); reconnects++; mu.Unlock() },
	})
	out := &syncbuf.Buffer{}
	runDone := make(chan error, 1)
	var exit *wire.Exit
	go func() {
		var err error
		exit, err = a.Run(ctx, out)
		runDone <- err
	}()
	waitFor(t, out, "prompt:", 90*time.Second)

	// Phase 1: output streams while the connection is cut every 100 ms.
	a.Write([]byte("for i in $(seq 1 300); do echo \"L$i\"; sleep 0.005; done; echo END-$((1+1))\r"))
	stop := make(chan struct{})
	storm := make(chan struct{})
	go func() {
		defer close(storm)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				cut.cutAll()
			}
		}
	}()
	waitFor(t, out, "END-2", 2*time.Minute)

	// Phase 2: typing while the connection keeps being cut.
	for i := 1; i <= 15; i++ {
		fmt.Fprintf(a, "echo K-$((%d*1))\r", i)
		time.Sleep(40 * time.Millisecond)
	}
	waitFor(t, out, "K-15", time.Minute)
	close(stop)
	<-storm

	text := out.String()
	got := lines(text, regexp.MustCompile(`^L\d+$`))
	want := make([]string, 300)
	for i := range want {
		want[i] = fmt.Sprintf("L%d", i+1)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("output lost or doubled across cuts: got %d lines %v…", len(got), got[:min(len(got), 20)])
	}
	gotK := lines(text, regexp.MustCompile(`^K-\d+$`))
	var wantK []string
	for i := 1; i <= 15; i++ {
		wantK = append(wantK, fmt.Sprintf("K-%d", i))
	}
	if strings.Join(gotK, ",") != strings.Join(wantK, ",") {
		t.Errorf("keystrokes lost or applied twice: %v", gotK)
	}
	if t.Failed() {
		t.Logf("output: %q", devtest.Tail(text, 40))
	}
	mu.Lock()
	t.Logf("%d reconnects", reconnects)
	if reconnects == 0 {
		t.Error("the connection was never cut: the test proved nothing")
	}
	mu.Unlock()
	if int64(out.Len()) > a.Offset() {
		t.Errorf("wrote %d bytes but the output offset is %d", out.Len(), a.Offset())
	}

	// Bulk output through a small credit window: acks keep it flowing.
	a.Write([]byte("seq 1 100000; echo BULK-$((2*2))\r"))
	waitFor(t, out, "BULK-4", 2*time.Minute)
	if got := lines(out.String(), regexp.MustCompile(`^(99999|100000)$`)); len(got) != 2 {
		t.Errorf("bulk output incomplete: %v", got)
	}

	// The process's exit ends Run with its status.
	a.Write([]byte("exit 3\r"))
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if exit == nil || exit.Code != 3 {
			t.Fatalf("exit = %+v, want code 3", exit)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after the process exited")
	}
}
