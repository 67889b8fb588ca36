package server

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"time"

	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/api"
	"github.com/hangarhq/hangar/internal/pool"
)

// ---- pools ----

func standbyOf(c *poolcache.Counts) api.StandbyCounts {
	if c == nil {
		return api.StandbyCounts{ByState: map[string]int{}}
	}
	return api.StandbyCounts{Total: c.StandbyTotal, ByState: c.Standby, Stale: c.Stale, Sessions: c.Sessions, Unreachable: c.Unreachable}
}

// listPools answers for a tenant (its granted pools and its own tenant
// images) or for the admin (everything).
func (s *Server) listPools(w http.ResponseWriter, r *http.Request) {
	key := auth.BearerToken(r)
	isAdmin := s.cfg.Auth.Admin(key)
	var t *store.Tenant
	if !isAdmin {
		var err error
		if t, err = s.cfg.Auth.Tenant(r.Context(), key); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hangar"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid API key")
			return
		}
	}
	if s.cfg.Pools.ReadAt().IsZero() {
		if err := s.cfg.Pools.Refresh(r.Context()); err != nil {
			s.fail(w, fmt.Errorf("read pools from Fly: %w", err))
			return
		}
	}
	out := []api.Pool{}
	for _, p := range s.cfg.Pools.List() {
		if t != nil && !sessions.Granted(t, p.Name) {
			continue
		}
		spec := p.Spec()
		pj := api.Pool{
			Name: p.Name, AppName: p.App, Regions: spec.Regions, Image: spec.Image, MinStandby: spec.MinStandby,
			MaxMachines: spec.MaxMachines, Machines: p.Machines, StandbyMode: string(spec.StandbyMode),
			IdleTimeout: pool.FormatDuration(spec.IdleTimeout), SessionTTL: pool.FormatDuration(spec.SessionTTL),
			Draining: spec.Draining, Standby: standbyOf(p.Counts[""]), TenantImages: []api.TenantImage{},
		}
		if pj.Regions == nil {
			pj.Regions = []string{}
		}
		names := make([]string, 0, len(p.TenantImages))
		for n := range p.TenantImages {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ti := p.TenantImages[n]
			if t != nil && ti.Spec.Tenant != t.Name {
				continue
			}
			pj.TenantImages = append(pj.TenantImages, api.TenantImage{
				Name: n, Tenant: ti.Spec.Tenant, Image: ti.Spec.Image, MinStandby: ti.Spec.MinStandby,
				Draining: ti.Spec.Draining, Standby: standbyOf(p.Counts[n]),
			})
		}
		out = append(out, pj)
	}
	writeJSON(w, http.StatusOK, out)
}

// ---- tenants (admin) ----

var tenantNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)
var poolNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// tenantOut is the API's tenant object; key is the new API key (create and
// rotate only).
func tenantOut(t *store.Tenant, key string) api.Tenant {
	d := ""
	if t.MaxSessionDuration > 0 {
		d = t.MaxSessionDuration.String()
	}
	p := t.Pools
	if p == nil {
		p = []string{}
	}
	created := t.CreatedAt
	return api.Tenant{ID: t.ID, Name: t.Name, Pools: p, MaxSessions: t.MaxSessions, MaxSessionDuration: d, CreatedAt: &created, APIKey: key}
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var req api.CreateTenantRequest
	if !decode(w, r, &req, false) {
		return
	}
	if !tenantNameRE.MatchString(req.Name) {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "name: want 1-128 letters, digits, '_', '.', '@' or '-', starting with a letter or digit")
		return
	}
	for _, p := range req.Pools {
		if p != "*" && !poolNameRE.MatchString(p) {
			writeError(w, http.StatusUnprocessableEntity, "invalid", fmt.Sprintf("pools: %q is not a pool name (or \"*\" for all pools)", p))
			return
		}
	}
	if req.MaxSessions < 0 {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "max_sessions: must not be negative")
		return
	}
	var maxDur time.Duration
	if req.MaxSessionDuration != "" {
		d, err := time.ParseDuration(req.MaxSessionDuration)
		if err != nil || d < 0 {
			writeError(w, http.StatusUnprocessableEntity, "invalid", "max_session_duration: want a Go duration such as \"2h\"")
			return
		}
		maxDur = d
	}
	key, err := auth.NewSecret(auth.TenantKeyPrefix)
	if err != nil {
		s.fail(w, err)
		return
	}
	t := &store.Tenant{Name: req.Name, Pools: req.Pools, MaxSessions: req.MaxSessions, MaxSessionDuration: maxDur, KeyHash: auth.Hash(key)}
	if err := s.cfg.Store.CreateTenant(r.Context(), t); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("a tenant named %q exists", req.Name))
			return
		}
		s.fail(w, err)
		return
	}
	s.log.Info("tenant created", "tenant", t.Name, "id", t.ID)
	writeJSON(w, http.StatusCreated, tenantOut(t, key))
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	ts, err := s.cfg.Store.ListTenants(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]api.Tenant, 0, len(ts))
	for _, t := range ts {
		out = append(out, tenantOut(t, ""))
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteTenant ends the tenant's live sessions, then deletes it.
func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, err := s.cfg.Store.GetTenant(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such tenant")
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	live, err := s.cfg.Store.ListSessions(r.Context(), store.SessionFilter{TenantID: t.ID, States: []store.SessionState{
		store.StatePending, store.StateClaiming, store.StateStarting, store.StateReady}})
	if err != nil {
		s.fail(w, err)
		return
	}
	for _, ss := range live {
		if _, err := s.cfg.Sessions.End(r.Context(), t.ID, ss.ID, "tenant deleted"); err != nil && !errors.Is(err, sessions.ErrWrongState) {
			s.fail(w, err)
			return
		}
	}
	if err := s.cfg.Store.DeleteTenant(r.Context(), t.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", "no such tenant")
			return
		}
		s.fail(w, err)
		return
	}
	s.log.Info("tenant deleted", "tenant", t.Name, "id", t.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	key, err := auth.NewSecret(auth.TenantKeyPrefix)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.cfg.Store.SetTenantKey(r.Context(), id, auth.Hash(key)); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", "no such tenant")
			return
		}
		s.fail(w, err)
		return
	}
	t, err := s.cfg.Store.GetTenant(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("tenant key rotated", "tenant", t.Name, "id", t.ID)
	writeJSON(w, http.StatusOK, tenantOut(t, key))
}

// whoami answers which tenant the caller's key belongs to (the key itself
// is never in the answer): the web terminal shows it, so that a page a link
// signed in says whose it is.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request, t *store.Tenant) {
	writeJSON(w, http.StatusOK, tenantOut(t, ""))
}
