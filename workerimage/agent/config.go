// Package agent is hangar-agent, the only hangar code inside a worker VM: it
// turns the VM into one user's session. It clones the user's repository,
// runs Claude Code under a PTY (or in stream-json mode), serves the stream
// over an authenticated WebSocket (internal/wire), and pushes the work back
// to git when the session finishes. Its own exit ends the VM (auto_destroy).
//
// The agent normally dials home: with HANGAR_DAEMON_URL set it opens the
// tunnel to the daemon (internal/tunnel), authenticated by the machine's Fly
// OIDC token, and serves its HTTP API on the streams the daemon opens through
// it — no TCP port is listened on unless HANGAR_AGENT_ADDR is set explicitly
// (then it serves both). SIGUSR1 makes it drop the tunnel and dial again (it
// is sent after a resume). Without HANGAR_DAEMON_URL it listens on TCP as
// before (HANGAR_AGENT_ADDR, else [FLY_PRIVATE_IP]:HANGAR_AGENT_PORT).
package agent

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/tunnel"
)

// Environment variables read by the agent.
const (
	EnvAddr            = "HANGAR_AGENT_ADDR"        // full listen address (with a daemon URL: also listen on TCP here)
	EnvPort            = "HANGAR_AGENT_PORT"        // port on FLY_PRIVATE_IP (default 8080; without a daemon URL)
	EnvDaemonURL       = tunnel.EnvDaemonURL        // dial the daemon's tunnel here instead of listening on TCP
	EnvFlyAPISocket    = tunnel.EnvFlyAPISocket     // local Machines API socket for OIDC tokens (default /.fly/api)
	EnvPublicKey       = agentauth.EnvPublicKey     // broker public key(s), required
	EnvWorkspace       = "HANGAR_WORKSPACE"         // default /workspace; relative = against cwd
	EnvBuffer          = "HANGAR_AGENT_BUFFER"      // output ring size, bytes (suffixes K, M, KiB, MiB)
	EnvMaxFrame        = "HANGAR_AGENT_MAX_FRAME"   // largest accepted incoming frame, bytes
	EnvExitGrace       = "HANGAR_AGENT_EXIT_GRACE"  // finish-less wait after exit or failed init
	EnvClaudeBin       = "HANGAR_CLAUDE_BIN"        // program for the default commands (default claude)
	EnvClaudeConfigDir = "HANGAR_CLAUDE_CONFIG_DIR" // CLAUDE_CONFIG_DIR for the CLI (default $HOME/.claude)
	EnvLogLevel        = "HANGAR_LOG_LEVEL"         // trace, debug, info (default), warn, error
	EnvMachineID       = "FLY_MACHINE_ID"           // the token audience, required
	EnvPrivateIP       = "FLY_PRIVATE_IP"           // default listen IP
	DefaultWorkspace   = "/workspace"               //
	DefaultBufferSize  = 8 << 20                    // 8 MiB
	DefaultMaxFrame    = 1 << 20                    // 1 MiB
	DefaultExitGrace   = 10 * time.Minute           //
	maxFramePayload    = 32 << 10                   // outgoing pty frames are coalesced up to this
	minBufferSize      = 1 << 10                    //
	defaultClaude      = "claude"                   //
	defaultCols        = 80                         //
	defaultRows        = 24                         //
	maxCols            = 2000                       // larger resizes are refused
	maxRows            = 1000                       //
	stopGrace          = 3 * time.Second            // TERM -> KILL on finish
	drainAfterExit     = 500 * time.Millisecond     // output read after the process ended
	writeTimeout       = 30 * time.Second           // a client write that takes longer drops the client
	attachTimeout      = 10 * time.Second           // the first frame must come within this
	maxViolations      = 16                         // refused writes before a viewer is closed with 4003
	defaultSessionBase = "hangar/"                  //
	checkpointRefBase  = "refs/hangar/checkpoints/" //
	maxInitBody        = 1 << 20                    //
	defaultAuthorName  = "hangar"                   //
	defaultAuthorEmail = "hangar@localhost"         //
)

// Config is the agent's configuration, normally from the environment.
type Config struct {
	Addr            string // TCP listen address; "" = none (tunnel only)
	DaemonURL       string // dial home through internal/tunnel; "" = TCP only
	FlyAPISocket    string // where the machine's OIDC tokens come from
	PublicKeys      []ed25519.PublicKey
	MachineID       string
	Workspace       string
	BufferSize      int
	MaxFrame        int
	ExitGrace       time.Duration
	ClaudeBin       string
	ClaudeConfigDir string
	LogLevel        string
}

// ConfigFromEnv reads the configuration; it fails without a valid broker
// public key or machine id.
func ConfigFromEnv(getenv func(string) string) (*Config, error) {
	c := &Config{
		Addr:         listenAddr(getenv),
		DaemonURL:    strings.TrimSpace(getenv(EnvDaemonURL)),
		FlyAPISocket: getenv(EnvFlyAPISocket),
		MachineID:    getenv(EnvMachineID),
		LogLevel:     getenv(EnvLogLevel),
		ClaudeBin:    getenv(EnvClaudeBin),
	}
	if c.DaemonURL != "" {
		u, err := url.Parse(c.DaemonURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s=%q: want an http:// or https:// URL", EnvDaemonURL, c.DaemonURL)
		}
		// Tunnel mode: TCP only when asked for explicitly.
		c.Addr = getenv(EnvAddr)
	}
	if c.FlyAPISocket == "" {
		c.FlyAPISocket = tunnel.DefaultFlyAPISocket
	}
	if c.ClaudeBin == "" {
		c.ClaudeBin = defaultClaude
	}
	keys := getenv(EnvPublicKey)
	if strings.TrimSpace(keys) == "" {
		return nil, fmt.Errorf("%s is not set: refusing to start without a broker public key", EnvPublicKey)
	}
	pk, err := agentauth.ParsePublicKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvPublicKey, err)
	}
	c.PublicKeys = pk
	if c.MachineID == "" {
		return nil, fmt.Errorf("%s is not set: tokens cannot be checked", EnvMachineID)
	}
	ws := getenv(EnvWorkspace)
	if ws == "" {
		ws = DefaultWorkspace
	}
	if c.Workspace, err = filepath.Abs(ws); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvWorkspace, err)
	}
	c.BufferSize = DefaultBufferSize
	if v := getenv(EnvBuffer); v != "" {
		n, err := parseSize(v)
		if err != nil || n < minBufferSize {
			return nil, fmt.Errorf("%s=%q: want a size of at least %d bytes", EnvBuffer, v, minBufferSize)
		}
		c.BufferSize = int(n)
	}
	c.MaxFrame = DefaultMaxFrame
	if v := getenv(EnvMaxFrame); v != "" {
		n, err := parseSize(v)
		if err != nil || n < 64 {
			return nil, fmt.Errorf("%s=%q: want a size of at least 64 bytes", EnvMaxFrame, v)
		}
		c.MaxFrame = int(n)
	}
	c.ExitGrace = DefaultExitGrace
	if v := getenv(EnvExitGrace); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%s=%q: want a positive duration", EnvExitGrace, v)
		}
		c.ExitGrace = d
	}
	c.ClaudeConfigDir = getenv(EnvClaudeConfigDir)
	if c.ClaudeConfigDir == "" {
		if home := getenv("HOME"); home != "" {
			c.ClaudeConfigDir = filepath.Join(home, ".claude")
		} else {
			c.ClaudeConfigDir = filepath.Join(os.TempDir(), "hangar-claude")
		}
	}
	if c.ClaudeConfigDir, err = filepath.Abs(c.ClaudeConfigDir); err != nil {
		return nil, err
	}
	if within(c.ClaudeConfigDir, c.Workspace) {
		return nil, errors.New("the Claude config dir must not be inside the workspace (it would be committed)")
	}
	return c, nil
}

func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// listenAddr: HANGAR_AGENT_ADDR, else [FLY_PRIVATE_IP]:port, else 0.0.0.0:port
// (the TCP address without a daemon URL).
func listenAddr(getenv func(string) string) string {
	if a := getenv(EnvAddr); a != "" {
		return a
	}
	port := getenv(EnvPort)
	if port == "" {
		port = strconv.Itoa(agentapi.DefaultPort)
	}
	if ip := getenv(EnvPrivateIP); ip != "" {
		return net.JoinHostPort(ip, port)
	}
	return net.JoinHostPort("0.0.0.0", port)
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	upper := strings.ToUpper(s)
	for _, suf := range []struct {
		s string
		m int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(upper, suf.s) {
			mult = suf.m
			s = strings.TrimSpace(s[:len(s)-len(suf.s)])
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
