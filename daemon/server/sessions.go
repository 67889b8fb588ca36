package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/api"
)

// sessionJSON is the API's session object. It never carries a credential.
func (s *Server) sessionJSON(ctx context.Context, t *store.Tenant, ss *store.Session) api.Session {
	created := ss.CreatedAt
	return api.Session{
		ID: ss.ID, Tenant: t.Name, Pool: ss.Pool, TenantImage: ss.TenantImage, Region: ss.Region,
		State: string(ss.State), Reason: ss.Reason, QueuePosition: s.cfg.Sessions.QueuePosition(ctx, ss),
		MachineID: ss.MachineID, Repo: ss.Repo, Branch: ss.Branch, SessionBranch: ss.SessionBranch,
		Mode: ss.Mode, CreatedAt: &created, ReadyAt: ss.ReadyAt, EndedAt: ss.EndedAt, Push: (*api.Push)(ss.Push),
		CostUSD: s.cfg.Sessions.Cost(ctx, ss, time.Now()),
	}
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	if s.isDraining() {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "this replica is shutting down; retry on another")
		return
	}
	var req api.CreateSessionRequest
	if !decode(w, r, &req, false) {
		return
	}
	ss, err := s.cfg.Sessions.Create(r.Context(), t, &req)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Location", "/v1/sessions/"+ss.ID)
	writeJSON(w, http.StatusAccepted, s.sessionJSON(r.Context(), t, ss))
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	f := store.SessionFilter{TenantID: t.ID}
	for _, st := range r.URL.Query()["state"] {
		for _, one := range splitComma(st) {
			if !validState(one) {
				writeError(w, http.StatusUnprocessableEntity, "invalid", fmt.Sprintf("state: %q is not a session state", one))
				return
			}
			f.States = append(f.States, store.SessionState(one))
		}
	}
	list, err := s.cfg.Store.ListSessions(r.Context(), f)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]api.Session, 0, len(list))
	for _, ss := range list {
		out = append(out, s.sessionJSON(r.Context(), t, ss))
	}
	writeJSON(w, http.StatusOK, out)
}

func validState(v string) bool {
	switch store.SessionState(v) {
	case store.StatePending, store.StateClaiming, store.StateStarting, store.StateReady,
		store.StateEnding, store.StateEnded, store.StateFailed:
		return true
	}
	return false
}

func splitComma(v string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(v); i++ {
		if i == len(v) || v[i] == ',' {
			if i > start {
				out = append(out, v[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	ss, err := s.cfg.Sessions.Get(r.Context(), t.ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sessionJSON(r.Context(), t, ss))
}

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	ss, err := s.cfg.Sessions.End(r.Context(), t.ID, r.PathValue("id"), "ended by request")
	if err != nil {
		if errors.Is(err, sessions.ErrWrongState) && ss != nil {
			writeError(w, http.StatusConflict, "wrong_state", fmt.Sprintf("session %s is already %s", ss.ID, ss.State))
			return
		}
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, s.sessionJSON(r.Context(), t, ss))
}

// events streams the session as server-sent events ("event: session",
// data = the session object) whenever it changes, until it is ended or
// failed. It reads the store, so it sees changes made by any replica.
// eventsWriteWindow is how long one event-stream write may take: longer
// than the 15 s keepalive, so a reading client is never cut off.
const eventsWriteWindow = time.Minute

func (s *Server) events(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	id := r.PathValue("id")
	ss, err := s.cfg.Sessions.Get(r.Context(), t.ID, id)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var last string
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	// The server's write timeout counts from the request; a stream lives on
	// by moving the deadline before every write, so that only a client that
	// stops reading for eventsWriteWindow is cut off.
	extend := func() { _ = rc.SetWriteDeadline(time.Now().Add(eventsWriteWindow)) }
	for {
		js := s.sessionJSON(r.Context(), t, ss)
		// The cost grows every second; only real changes make an event.
		if key := fmt.Sprint(ss.UpdatedAt.UnixNano(), js.State, js.QueuePosition); key != last {
			b, _ := json.Marshal(js)
			extend()
			if _, err := fmt.Fprintf(w, "event: session\ndata: %s\n\n", b); err != nil {
				return
			}
			rc.Flush()
			last = key
		}
		if !ss.State.Live() {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			extend()
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			rc.Flush()
			continue
		case <-poll.C:
		}
		next, err := s.cfg.Sessions.Get(r.Context(), t.ID, id)
		if err != nil {
			return
		}
		ss = next
	}
}
