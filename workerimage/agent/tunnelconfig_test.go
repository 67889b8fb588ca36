package agent

import (
	"testing"

	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/tunnel"
)

func TestConfigTunnelMode(t *testing.T) {
	key, _ := agentauth.GenerateKey()
	base := map[string]string{
		EnvPublicKey: agentauth.EncodePublicKey(agentauth.NewSigner(key).PublicKey()),
		EnvMachineID: "m1",
		EnvPrivateIP: "fdaa::2",
		EnvWorkspace: t.TempDir(),
		"HOME":       t.TempDir(),
		EnvClaudeBin: "true",
		EnvLogLevel:  "info",
	}
	cfg := func(extra map[string]string) (*Config, error) {
		return ConfigFromEnv(func(k string) string {
			if v, ok := extra[k]; ok {
				return v
			}
			return base[k]
		})
	}
	// Legacy: TCP on the private IP.
	c, err := cfg(nil)
	if err != nil || c.DaemonURL != "" || c.Addr != "[fdaa::2]:8080" {
		t.Fatalf("legacy: %+v, %v", c, err)
	}
	// Tunnel: no TCP port unless HANGAR_AGENT_ADDR says so.
	c, err = cfg(map[string]string{EnvDaemonURL: "https://hangar.example", EnvPort: "9000"})
	if err != nil || c.DaemonURL != "https://hangar.example" || c.Addr != "" || c.FlyAPISocket != tunnel.DefaultFlyAPISocket {
		t.Fatalf("tunnel: %+v, %v", c, err)
	}
	c, err = cfg(map[string]string{EnvDaemonURL: "http://10.0.0.1:4000", EnvAddr: "127.0.0.1:0", EnvFlyAPISocket: "/tmp/api"})
	if err != nil || c.Addr != "127.0.0.1:0" || c.FlyAPISocket != "/tmp/api" {
		t.Fatalf("tunnel and TCP: %+v, %v", c, err)
	}
	for _, bad := range []string{"hangar.example", "ftp://x", "http://"} {
		if _, err := cfg(map[string]string{EnvDaemonURL: bad}); err == nil {
			t.Errorf("daemon URL %q accepted", bad)
		}
	}
}
