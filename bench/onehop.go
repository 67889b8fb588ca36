package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/coder/websocket"
	"github.com/creack/pty"

	"github.com/hangarhq/hangar/internal/wire"
)

// OneHopCommand is the subcommand that runs the one-hop reference server.
const OneHopCommand = "onehop"

// PathOneHop names the one-hop reference server's path.
const PathOneHop = "onehop"

// OneHopMain runs the minimal one-hop terminal server every hangar figure
// is set against: what anyone would write in Go with the same two
// libraries (coder/websocket, creack/pty) — per connection, the session's
// command in a fresh PTY, its output sent as binary frames as read, binary
// frames written to it. It speaks just enough of hangar's wire protocol for
// the benchmark's client (an attach frame in, an attached frame out) and
// has no ring, offsets, credit, authentication or keepalive. The command
// is everything after "--". It prints its address and serves until stdin
// closes.
func OneHopMain(args []string) error {
	fs := flag.NewFlagSet(OneHopCommand, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address (loopback)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("no command (after --)")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolPTY}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := context.Background()
		if _, _, err := c.Read(ctx); err != nil { // the attach frame
			return
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 120, Rows: 40})
		if err != nil {
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: "spawn", Message: err.Error()}))
			return
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		defer f.Close()
		waitRaw(f)
		if err := c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attached{Role: wire.RoleWriter, Cols: 120, Rows: 40})); err != nil {
			return
		}
		go func() {
			defer c.CloseNow()
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 && c.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				if _, err := f.Write(b); err != nil {
					return
				}
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println(ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return srv.Close()
}

// oneHopPath attaches to the one-hop reference server. Each attachment is
// a fresh PTY, so there is no session to share and no ring to replay.
type oneHopPath struct {
	addr   string
	client *http.Client
	pid    int // the server's (the echo programs are its children)
}

func (p *oneHopPath) cpuPID() int { return p.pid }

func (p *oneHopPath) name() string      { return PathOneHop }
func (p *oneHopPath) sessionID() string { return PathOneHop }

func (p *oneHopPath) dial(ctx context.Context, role wire.Role) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/", &websocket.DialOptions{HTTPClient: p.client, Subprotocols: []string{wire.SubprotocolPTY}})
	if err != nil {
		return nil, fmt.Errorf("attach to the one-hop server: %w", err)
	}
	return c, nil
}

// rawPTY is the floor of every figure on this machine: the echo program
// in a PTY of the benchmark's own process, no network, read with a 64 KiB
// buffer.
type rawPTY struct {
	cmd *exec.Cmd
	f   *os.File
	buf []byte
}

func startRawPTY(argv []string) (*rawPTY, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 120, Rows: 40})
	if err != nil {
		return nil, fmt.Errorf("start the echo program in a pty: %w", err)
	}
	waitRaw(f)
	return &rawPTY{cmd: cmd, f: f, buf: make([]byte, 64<<10)}, nil
}

func (p *rawPTY) close() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.f.Close()
}

// echo sends n keystrokes one at a time and returns their echo latencies.
func (p *rawPTY) echo(n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		key := byte('a' + i%26)
		t0 := time.Now()
		if _, err := p.f.Write([]byte{key}); err != nil {
			return nil, fmt.Errorf("raw pty: write: %w", err)
		}
		for got := false; !got; {
			k, err := p.f.Read(p.buf)
			if err != nil {
				return nil, fmt.Errorf("raw pty: read echo: %w", err)
			}
			got = bytes.IndexByte(p.buf[:k], key) >= 0
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// burst asks for one burst of size bytes and reads it.
func (p *rawPTY) burst(size int) (Throughput, error) {
	t0 := time.Now()
	if _, err := p.f.Write([]byte{BurstByte}); err != nil {
		return Throughput{}, fmt.Errorf("raw pty: ask for a burst: %w", err)
	}
	for got := 0; got < size; {
		n, err := p.f.Read(p.buf)
		if err != nil {
			return Throughput{}, fmt.Errorf("raw pty: read burst: %w", err)
		}
		got += n
	}
	return Throughput{bytes: int64(size), dur: time.Since(t0)}, nil
}

// oneHopProc is a running one-hop reference server.
type oneHopProc struct{ relayProc }

func startOneHop(self string, argv []string) (*oneHopProc, error) {
	p, err := startHelper(self, append([]string{OneHopCommand, "--"}, argv...), "the one-hop reference server")
	if err != nil {
		return nil, err
	}
	return &oneHopProc{*p}, nil
}
