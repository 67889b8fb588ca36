package agent

import (
	"net/http"
	"testing"
)

// TestHTTPServerTimeouts: every timeout is set (a trickled request or an idle
// keep-alive connection was held for ever), and init/finish can outlast the
// write timeout.
func TestHTTPServerTimeouts(t *testing.T) {
	srv := NewHTTPServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("timeouts: header %v read %v write %v idle %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	if longCallTimeout <= srv.WriteTimeout {
		t.Fatal("init and finish would be cut by the write timeout")
	}
}
