package agent

import (
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// HTTP server timeouts. Upgraded connections (attach) leave them behind at
// the hijack; init and finish, which wait for git, extend their own write
// deadline (longCall).
const (
	readHeaderTimeout = 10 * time.Second
	// readTimeout bounds reading a whole request (bodies are at most 1 MiB).
	readTimeout = 30 * time.Second
	// httpWriteTimeout bounds writing an answer, counted from the request.
	httpWriteTimeout = time.Minute
	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 2 * time.Minute
	// longCallTimeout is the write deadline of init and finish, which answer
	// after a clone or a push: longer than any caller waits (the daemon gives
	// up after its ready timeout or 3 minutes).
	longCallTimeout = 15 * time.Minute
)

// NewHTTPServer returns the agent's HTTP server for h with read, write and
// idle timeouts, so a trickled request or an idle connection cannot be held
// open for ever.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       idleTimeout,
	}
}

// longCall lifts the server's write timeout for a handler that answers only
// after slow work (init: clone; finish: commit and push).
func longCall(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(longCallTimeout))
}

// unauthLogInterval is how often refused requests are logged at most: the
// agent's port is reachable from the whole private network, and logging
// every refusal at warn would let anyone there flood the logs.
const unauthLogInterval = 10 * time.Second

// unauthLogger logs refused requests at most once per unauthLogInterval,
// counting the ones it held back.
type unauthLogger struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (u *unauthLogger) log(log hclog.Logger, r *http.Request, err error) {
	u.mu.Lock()
	now := time.Now()
	if !u.last.IsZero() && now.Sub(u.last) < unauthLogInterval {
		u.suppressed++
		u.mu.Unlock()
		return
	}
	n := u.suppressed
	u.last, u.suppressed = now, 0
	u.mu.Unlock()
	log.Warn("unauthorized request", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error(),
		"suppressed_since_last", n)
}
