package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/wire"
)

// RelayCommand is the subcommand that runs the reference relay.
const RelayCommand = "relay"

// RelayMain runs a bare WebSocket relay, the floor any daemon hop has to
// pay on this machine (the design before tunnels, stripped to the copy): it accepts /relay?to=<agent attach URL>, dials the
// agent with the caller's Authorization header and subprotocol, and copies
// messages both ways with the same WebSocket library as hangard, without
// authentication, offsets, keepalive or reconnects. It prints its address
// and serves until stdin closes.
func RelayMain(args []string) error {
	fs := flag.NewFlagSet(RelayCommand, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address (loopback)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := r.URL.Query().Get("to")
		u, err := url.Parse(to)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "http") || !isLocal(u.Hostname()) {
			http.Error(w, "bad target", http.StatusBadRequest)
			return
		}
		h := http.Header{}
		h.Set("Authorization", r.Header.Get("Authorization"))
		agent, resp, err := websocket.Dial(r.Context(), to, &websocket.DialOptions{
			HTTPClient: hc, HTTPHeader: h, Subprotocols: []string{wire.SubprotocolPTY},
		})
		if err != nil {
			status := http.StatusBadGateway
			if resp != nil {
				status = resp.StatusCode
			}
			http.Error(w, err.Error(), status)
			return
		}
		defer agent.CloseNow()
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolPTY}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		agent.SetReadLimit(64 << 20)
		c.SetReadLimit(64 << 20)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { defer cancel(); copyMessages(ctx, agent, c) }()
		copyMessages(ctx, c, agent)
	})}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println(ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return srv.Close()
}

// isLocal admits loopback and private targets only: agents sit on a
// loopback address in the emulator's loopback mode and on a 6PN address
// (fdaa::/16, a ULA) in namespace mode. The relay is an open proxy
// otherwise.
func isLocal(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsPrivate())
}

// copyMessages copies messages from src to dst until either fails.
func copyMessages(ctx context.Context, dst, src *websocket.Conn) {
	for {
		typ, r, err := src.Reader(ctx)
		if err != nil {
			return
		}
		w, err := dst.Writer(ctx, typ)
		if err != nil {
			return
		}
		if _, err := io.Copy(w, r); err != nil {
			return
		}
		if err := w.Close(); err != nil {
			return
		}
	}
}

// relayProc is a running reference relay.
type relayProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

func startRelay(self string) (*relayProc, error) {
	cmd := exec.Command(self, RelayCommand)
	cmd.Stderr = os.Stderr
	dieWithParent(cmd, syscall.SIGKILL)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the reference relay: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, errors.New("the reference relay did not start")
	}
	return &relayProc{cmd: cmd, stdin: in, addr: strings.TrimSpace(line)}, nil
}

func (p *relayProc) stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// relayPath attaches to the agent through the reference relay.
type relayPath struct {
	relay    string
	agentURL string // ws:// attach URL
	machine  string
	session  string
	signer   *agentauth.Signer
	client   *http.Client
}

func newRelayPath(relayAddr, agentBase, machineID, session string, signer *agentauth.Signer, hc *http.Client) *relayPath {
	a := agentapi.NewClient(agentBase, signer, machineID)
	return &relayPath{relay: relayAddr, agentURL: a.AttachURL(), machine: machineID, session: session, signer: signer, client: hc}
}

func (p *relayPath) name() string      { return PathRelay }
func (p *relayPath) sessionID() string { return p.session }

func (p *relayPath) dial(ctx context.Context, role wire.Role) (*websocket.Conn, error) {
	tok, err := p.signer.Token(p.machine, p.session)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	u := "ws://" + p.relay + "/relay?" + url.Values{"to": {p.agentURL}}.Encode()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: p.client, HTTPHeader: h, Subprotocols: []string{wire.SubprotocolPTY}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("attach through the relay: %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("attach through the relay: %w", err)
	}
	return c, nil
}
