// Package flyemutest starts a Fly emulator for a test and tears it down with
// the test.
package flyemutest

import (
	"net/http/httptest"
	"os"
	"testing"

	"github.com/hangarhq/hangar/internal/flyemu"
)

// NetworkEnv, when set, is the network mode of emulators whose config names
// none (flyemu.NetworkLoopback, say, to compare a failure across modes).
const NetworkEnv = "FLYEMU_NETWORK"

// Server is a running emulator.
type Server struct {
	*flyemu.Emulator
	// URL is the base URL without /v1, as FLY_API_URL and fly.Options take it.
	URL string
}

// Start starts an emulator with cfg on a loopback port. Cleanup closes the
// HTTP server and the emulator, which kills every machine process. An empty
// cfg.DataDir becomes a directory under t.TempDir(); an empty cfg.Network
// comes from NetworkEnv.
func Start(t testing.TB, cfg flyemu.Config) *Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Network == "" {
		cfg.Network = os.Getenv(NetworkEnv)
	}
	e, err := flyemu.New(cfg)
	if err != nil {
		t.Fatalf("start fly emulator: %v", err)
	}
	srv := httptest.NewServer(e)
	e.SetBaseURL(srv.URL)
	t.Cleanup(func() {
		// Close the emulator first: it ends long-polling waits that would
		// otherwise keep the HTTP server's Close blocked.
		if err := e.Close(); err != nil {
			t.Errorf("close fly emulator: %v", err)
		}
		srv.Close()
	})
	return &Server{Emulator: e, URL: srv.URL}
}
