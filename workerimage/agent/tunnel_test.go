package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/syncbuf"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/internal/tunnel"
)

// stubVerifier accepts the fake Fly API's token for one machine.
type stubVerifier struct{ machineID string }

func (v stubVerifier) Verify(_ context.Context, raw string) (*tunnel.Identity, error) {
	if raw != "fly-oidc-token" {
		return nil, tunnel.ErrUnauthorized
	}
	return &tunnel.Identity{MachineID: v.machineID, AppName: "workers"}, nil
}

// TestAgentDialsHome runs the agent binary in tunnel mode: it takes its
// token from the local Machines API socket, serves its API through the
// tunnel, listens on no TCP port, and on SIGUSR1 keeps a tunnel that
// answers and redials one that does not.
func TestAgentDialsHome(t *testing.T) {
	bin := testbin.Path(t, testbin.Agent)
	key, _ := agentauth.GenerateKey()
	signer := agentauth.NewSigner(key)
	root := t.TempDir()
	machineID := "m-tunnel"

	// The fake local Machines API.
	sock := filepath.Join(root, "fly-api")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var audience atomic.Value
	api := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		audience.Store(string(b))
		io.WriteString(w, "fly-oidc-token")
	})}
	go func() { _ = api.Serve(ln) }()
	t.Cleanup(func() { _ = api.Close() })

	// The daemon side.
	var connects atomic.Int32
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	reg, err := tunnel.NewRegistry(tunnel.RegistryConfig{
		Audience: srv.URL, Signer: signer, Verifier: stubVerifier{machineID},
		OnConnect: func(*tunnel.Identity) { connects.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	mux.HandleFunc("GET "+tunnel.Path, reg.ServeTunnel)

	logs := &syncbuf.Buffer{}
	cmd := exec.Command(bin)
	cmd.Dir = root
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(root, "home"),
		"HANGAR_DAEMON_URL=" + srv.URL,
		"HANGAR_FLY_API_SOCKET=" + sock,
		"HANGAR_BROKER_PUBLIC_KEY=" + agentauth.EncodePublicKeys(signer.PublicKey()),
		"FLY_MACHINE_ID=" + machineID,
		"FLY_PRIVATE_IP=127.0.0.1",
		"HANGAR_WORKSPACE=" + filepath.Join(root, "workspace"),
		"HANGAR_LOG_LEVEL=debug",
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})

	client := agentapi.NewClient(tunnel.AgentURL(machineID), signer, machineID)
	client.HTTPClient = reg.HTTPClient()
	health := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h, err := client.Health(ctx)
		if err != nil || !h.OK {
			t.Fatalf("health through the tunnel: %+v, %v", h, err)
		}
	}
	health()
	if got, _ := audience.Load().(string); got != `{"aud":"`+srv.URL+`"}` {
		t.Fatalf("token request body %q", got)
	}
	// An authenticated call (broker token checked by the agent).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := client.Status(ctx, "s1"); err != nil || st.State != agentapi.StateIdle {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if strings.Contains(logs.String(), "addr=") {
		t.Fatalf("the agent listened on TCP in tunnel mode: %s", logs.String())
	}

	// SIGUSR1 while the tunnel answers: the agent keeps it (a redial would
	// cut the calls running on it).
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "tunnel answers; keeping it") {
		if time.Now().After(deadline) {
			t.Fatalf("SIGUSR1 not handled: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := connects.Load(); n != 1 {
		t.Fatalf("%d tunnels after SIGUSR1 on a live one", n)
	}
	health()

	// The daemon drops its side (as after finding it dead): SIGUSR1 or the
	// close itself makes the agent dial again.
	reg.Disconnect(machineID)
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for connects.Load() < 2 || !reg.Connected(machineID) {
		if time.Now().After(deadline) {
			t.Fatalf("no second tunnel after SIGUSR1 (%d connects)", connects.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	health()
}
