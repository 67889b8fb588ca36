package server

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"time"

	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/pools"
	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/pool"
)

// ---- pools ----

type standbyJSON struct {
	Total    int            `json:"total"`
	ByState  map[string]int `json:"by_state"`
	Stale    int            `json:"stale"`
	Sessions int            `json:"sessions"`
}

type tenantImageJSON struct {
	Name       string      `json:"name"`
	Tenant     string      `json:"tenant"`
	Image      string      `json:"image"`
	MinStandby int         `json:"min_standby"`
	Draining   bool        `json:"draining"`
	Standby    standbyJSON `json:"standby"`
}

type poolJSON struct {
	Name         string            `json:"name"`
	AppName      string            `json:"app_name"`
	Regions      []string          `json:"regions"`
	Image        string            `json:"image"`
	MinStandby   int               `json:"min_standby"`
	MaxMachines  int               `json:"max_machines"`
	Machines     int               `json:"machines"`
	StandbyMode  string            `json:"standby_mode"`
	IdleTimeout  string            `json:"idle_timeout"`
	SessionTTL   string            `json:"session_ttl"`
	Draining     bool              `json:"draining"`
	Standby      standbyJSON       `json:"standby"`
	TenantImages []tenantImageJSON `json:"tenant_images"`
}

func standbyOf(c *pools.Counts) standbyJSON {
	if c == nil {
		return standbyJSON{ByState: map[string]int{}}
	}
	return standbyJSON{Total: c.StandbyTotal, ByState: c.Standby, Stale: c.Stale, Sessions: c.Sessions}
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
	out := []poolJSON{}
	for _, p := range s.cfg.Pools.List() {
		if t != nil && !sessions.Granted(t, p.Name) {
			continue
		}
		spec := p.Spec()
		pj := poolJSON{
			Name: p.Name, AppName: p.App, Regions: spec.Regions, Image: spec.Image, MinStandby: spec.MinStandby,
			MaxMachines: spec.MaxMachines, Machines: p.Machines, StandbyMode: string(spec.StandbyMode),
			IdleTimeout: pool.FormatDuration(spec.IdleTimeout), SessionTTL: pool.FormatDuration(spec.SessionTTL),
			Draining: spec.Draining, Standby: standbyOf(p.Counts[""]), TenantImages: []tenantImageJSON{},
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
			pj.TenantImages = append(pj.TenantImages, tenantImageJSON{
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

type tenantRequest struct {
	Name               string   `json:"name"`
	Pools              []string `json:"pools"`
	MaxSessions        int      `json:"max_sessions"`
	MaxSessionDuration string   `json:"max_session_duration"`
}

type tenantJSON struct {
	ID                 string    `json:"id"`
	Name               string    `json:"name"`
	Pools              []string  `json:"pools"`
	MaxSessions        int       `json:"max_sessions"`
	MaxSessionDuration string    `json:"max_session_duration"`
	CreatedAt          time.Time `json:"created_at"`
	APIKey             string    `json:"api_key,omitempty"`
}

func tenantOut(t *store.Tenant, key string) tenantJSON {
	d := ""
	if t.MaxSessionDuration > 0 {
		d = t.MaxSessionDuration.String()
	}
	p := t.Pools
	if p == nil {
		p = []string{}
	}
	return tenantJSON{ID: t.ID, Name: t.Name, Pools: p, MaxSessions: t.MaxSessions, MaxSessionDuration: d, CreatedAt: t.CreatedAt, APIKey: key}
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var req tenantRequest
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
	out := make([]tenantJSON, 0, len(ts))
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
