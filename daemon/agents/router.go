package agents

import (
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/tunnel"
)

// Router reaches a machine's agent: through the agent's tunnel when the
// machine's agent dials home (its env names a daemon URL, set from the
// pool's daemon_url), else straight at its private IP — the design before
// tunnels, which only works for workers on the daemon's own network.
type Router struct {
	// Tunnels holds this replica's agent tunnels (nil: none; every agent
	// is dialled).
	Tunnels *tunnel.Registry
	// Direct dials agents of pools without daemon_url (default: a 10 s
	// dial timeout and no overall timeout; calls are bounded by contexts).
	Direct *http.Client
}

// DirectClient is the default Router.Direct.
func DirectClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second,
	}}
}

// Tunnelled reports whether m's agent dials home rather than listening.
func Tunnelled(m *fly.Machine) bool {
	return m.GetConfig() != nil && m.GetConfig().Env[tunnel.EnvDaemonURL] != ""
}

// Agent returns the base URL of m's agent and the client that reaches it.
// port is the pool's agent port, used for dialled agents unless the
// machine's env names its own.
func (r *Router) Agent(m *fly.Machine, port int) (string, *http.Client) {
	if Tunnelled(m) && r.Tunnels != nil {
		return tunnel.AgentURL(m.ID), r.Tunnels.HTTPClient()
	}
	if cfg := m.GetConfig(); cfg != nil {
		if v, err := strconv.Atoi(cfg.Env[pool.EnvAgentPort]); err == nil && v > 0 {
			port = v
		}
	}
	hc := r.Direct
	if hc == nil {
		hc = defaultDirect
	}
	return agentapi.BaseURL(m.PrivateIP, port), hc
}

var defaultDirect = DirectClient()

// Client returns an agent API client for m (signer may be nil for health).
func (r *Router) Client(m *fly.Machine, port int, signer *agentauth.Signer) *agentapi.Client {
	u, hc := r.Agent(m, port)
	c := agentapi.NewClient(u, signer, m.ID)
	c.HTTPClient = hc
	return c
}
