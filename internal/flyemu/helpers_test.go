//go:build linux

package flyemu_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
	"github.com/hangarhq/hangar/internal/flyspec"
)

// helperEnv makes the test binary act as a helper program instead of
// running tests (see TestMain).
const helperEnv = "FLYEMU_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "setsid-sleep":
		// Leave the machine's process group, as a PTY child does, and idle.
		if _, err := syscall.Setsid(); err != nil {
			os.Exit(3)
		}
		time.Sleep(time.Hour)
		os.Exit(0)
	case "serve":
		serveHelper()
	case "dial":
		dialHelper(os.Args[1])
	default:
		os.Exit(2)
	}
}

// env is an emulator plus a real client whose every exchange is checked
// against Fly's OpenAPI document.
type env struct {
	srv *flyemutest.Server
	c   *fly.Client
}

// networkEnv picks the network mode of the tests' emulators (default:
// auto), so that the suite can run in both modes on one machine.
const networkEnv = "FLYEMU_TEST_NETWORK"

func start(t *testing.T, cfg flyemu.Config) *env {
	t.Helper()
	if cfg.Network == "" {
		cfg.Network = os.Getenv(networkEnv)
	}
	srv := flyemutest.Start(t, cfg)
	return &env{srv: srv, c: newClient(t, srv.URL, cfg.Token)}
}

func newClient(t *testing.T, url, token string) *fly.Client {
	t.Helper()
	c, err := fly.New(fly.Options{
		BaseURL:     url,
		Token:       token,
		HTTPClient:  &http.Client{Transport: flyspec.CheckingTransport(t, nil)},
		MaxAttempts: 10,
		MinBackoff:  5 * time.Millisecond,
		MaxBackoff:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("new fly client: %v", err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return c
}

func (e *env) app(t *testing.T, name string) string {
	t.Helper()
	if _, err := e.c.CreateApp(ctx(t), fly.CreateAppRequest{Name: name, OrgSlug: "personal"}); err != nil {
		t.Fatalf("create app %s: %v", name, err)
	}
	return name
}

// shell returns a machine config running script under sh -c.
func shell(script string) *fly.MachineConfig {
	return &fly.MachineConfig{
		Image:   "registry.example/test:1",
		Init:    &fly.Init{Exec: []string{"sh", "-c", script}},
		Restart: &fly.Restart{Policy: fly.RestartNo},
	}
}

func (e *env) create(t *testing.T, app string, req fly.CreateMachineRequest) *fly.Machine {
	t.Helper()
	m, err := e.c.CreateMachine(ctx(t), app, req)
	if err != nil {
		t.Fatalf("create machine: %v", err)
	}
	return m
}

func (e *env) wait(t *testing.T, app, id string, states ...string) *fly.WaitResponse {
	t.Helper()
	w, err := e.c.WaitMachine(ctx(t), app, id, fly.WaitOptions{States: states, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("wait for %s to be %v: %v", id, states, err)
	}
	return w
}

func (e *env) get(t *testing.T, app, id string) *fly.Machine {
	t.Helper()
	m, err := e.c.GetMachine(ctx(t), app, id)
	if err != nil {
		t.Fatalf("get machine %s: %v", id, err)
	}
	return m
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readFile returns a file's trimmed content, "" if it does not exist yet.
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func readInt(path string) (int, bool) {
	n, err := strconv.Atoi(readFile(path))
	return n, err == nil
}

// groupMembers lists the live (non-zombie) processes of process group pgid,
// with their state letter.
func groupMembers(pgid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", de.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 {
			continue
		}
		pg, _ := strconv.Atoi(f[2])
		if pg == pgid && f[0] != "Z" && f[0] != "X" {
			out[pid] = f[0]
		}
	}
	return out
}

func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	eventually(t, "process group "+strconv.Itoa(pgid)+" to be gone", func() bool { return len(groupMembers(pgid)) == 0 })
}

// raw sends a request without the client (for inputs the client never sends)
// and decodes a Fly error body when the status is an error.
// raw sends one hand-made call, waiting out Fly's rate limits (the emulator
// applies them, and Fly sends no Retry-After) as a paced client would.
func raw(t *testing.T, method, url, body string, header ...string) (int, fly.ErrorResponse, []byte) {
	t.Helper()
	for i := 0; ; i++ {
		code, er, b := rawOnce(t, method, url, body, header...)
		if code != http.StatusTooManyRequests || i >= 40 {
			return code, er, b
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// rawOnce sends one hand-made call once.
func rawOnce(t *testing.T, method, url, body string, header ...string) (int, fly.ErrorResponse, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx(t), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var er fly.ErrorResponse
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s %s: error content type %q", method, url, ct)
		}
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(&er); err != nil || er.Error == "" || er.Status == "" {
			t.Errorf("%s %s: error body %q is not Fly's {error, status}", method, url, b)
		}
	}
	return resp.StatusCode, er, b
}

func statusOf(err error) int {
	var fe *fly.Error
	if errors.As(err, &fe) {
		return fe.StatusCode
	}
	return 0
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

// serveHelper is a machine's server for the network tests: it listens on
// [::]:helperPort, says which machine it is to every connection, and marks
// its working directory once it listens.
func serveHelper() {
	l, err := net.Listen("tcp", net.JoinHostPort("::", helperPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(3)
	}
	if err := os.WriteFile("listening", []byte("yes"), 0o644); err != nil {
		os.Exit(3)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(3)
		}
		fmt.Fprintf(c, "hello from %s\n", os.Getenv("FLY_MACHINE_ID"))
		c.Close()
	}
}

// dialHelper connects to addr and prints the first line it reads; it exits
// 1 (printing the error) when the connection fails.
func dialHelper(addr string) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("read:", err)
		os.Exit(1)
	}
	fmt.Print(line)
	os.Exit(0)
}

// helperPort is where serveHelper listens.
const helperPort = "7000"
