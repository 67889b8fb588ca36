package flyemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// EnvFlyAPISocket names the machine's local Machines API socket in its
// environment. On Fly the socket is at /.fly/api; the emulator cannot put it
// there for every machine of the host.
const EnvFlyAPISocket = "HANGAR_FLY_API_SOCKET"

// localAPI is one machine's local API socket. Who connects to it is the
// machine: tokens it hands out name the machine it was made for, never
// anything the caller claims.
type localAPI struct {
	path string
	srv  *http.Server
}

// serveLocalAPILocked opens m's socket. Sockets live in a short per-emulator
// directory, not the machine's, because a unix socket path must fit in 108
// bytes and test temp dirs are long.
func (e *Emulator) serveLocalAPILocked(m *machine) (*localAPI, error) {
	path := filepath.Join(e.sockDir, m.id+".sock")
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("serve machine API socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens/oidc", func(w http.ResponseWriter, r *http.Request) {
		e.serveMachineToken(w, r, m)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		errResp(http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)).write(w)
	})
	api := &localAPI{path: path, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	// Every socket is also known here, so Close ends them all even when a
	// machine left its app's map without closing its own (an app deleted).
	e.apis[api] = true
	e.apiWG.Add(1)
	go func() {
		defer e.apiWG.Done()
		if err := api.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Warn("machine API socket", "machine", m.id, "error", err)
		}
	}()
	return api, nil
}

// socketPath is the socket's path, "" for none.
func (a *localAPI) socketPath() string {
	if a == nil {
		return ""
	}
	return a.path
}

// close stops serving and removes the socket file.
func (a *localAPI) close() {
	if a == nil {
		return
	}
	_ = a.srv.Close()
	_ = os.Remove(a.path)
}

// serveMachineToken is POST /v1/tokens/oidc: {"aud": "..."} in, the raw JWT
// out as text/plain, as Fly's local API answers.
func (e *Emulator) serveMachineToken(w http.ResponseWriter, r *http.Request, m *machine) {
	var req struct {
		Aud string `json:"aud"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		errResp(http.StatusBadRequest, "read request body: "+err.Error()).write(w)
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		errResp(http.StatusBadRequest, "invalid JSON body: "+err.Error()).write(w)
		return
	}
	if strings.TrimSpace(req.Aud) == "" {
		errResp(http.StatusBadRequest, "aud is required").write(w)
		return
	}
	e.mu.Lock()
	if m.state == fly.StateDestroyed || m.state == fly.StateDestroying {
		e.mu.Unlock()
		errResp(http.StatusNotFound, "machine is destroyed").write(w)
		return
	}
	claims, err := e.oidcClaimsLocked(m, req.Aud, 0)
	e.mu.Unlock()
	var tok string
	if err == nil {
		tok, err = e.signOIDC(claims)
	}
	if err != nil {
		errResp(http.StatusInternalServerError, err.Error()).write(w)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, tok)
}
