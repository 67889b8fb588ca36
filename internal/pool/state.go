package pool

import (
	"context"
	"fmt"
	"sort"

	"github.com/hangarhq/hangar/internal/fly"
)

// Template is a template machine and the spec decoded from it: what
// standbys and session machines of one image of a pool are cloned from.
type Template struct {
	// Machine is the template machine itself, whose config is cloned.
	Machine *fly.Machine
	Spec    Spec
	// Hash is the spec hash stored on the template (KeySpec); standbys of
	// the current spec carry the same.
	Hash string
}

// State is a pool's live state on Fly: its templates, standbys and session
// machines. Machines without a hangar role (other machines of an adopted
// app) and destroyed machines are left out.
type State struct {
	// App is the Fly app.
	App string
	// Templates by tenant image name ("" = the pool's default template).
	Templates map[string]*Template
	// ExtraTemplates are further templates for a tenant image that already
	// has one (left by an interrupted update); the oldest one wins.
	ExtraTemplates []*fly.Machine
	// BadTemplates are templates whose metadata could not be decoded.
	BadTemplates []error
	// Standbys and Sessions, ordered by creation time.
	Standbys []*fly.Machine
	Sessions []*fly.Machine
}

// Load lists the machines of app and sorts them into templates, standbys and
// session machines.
func Load(ctx context.Context, c Client, app string) (*State, error) {
	ms, err := c.ListMachines(ctx, app, fly.ListMachinesOptions{})
	if err != nil {
		return nil, fmt.Errorf("load pool state of %s: %w", app, err)
	}
	return FromMachines(app, ms), nil
}

// FromMachines builds a State from a machine listing of app.
func FromMachines(app string, ms []fly.Machine) *State {
	sorted := make([]*fly.Machine, 0, len(ms))
	for i := range ms {
		m := &ms[i]
		if m.State == fly.StateDestroyed || m.State == fly.StateDestroying {
			continue
		}
		sorted = append(sorted, m)
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].CreatedAt != sorted[j].CreatedAt {
			return sorted[i].CreatedAt < sorted[j].CreatedAt
		}
		return sorted[i].ID < sorted[j].ID
	})
	st := &State{App: app, Templates: map[string]*Template{}}
	for _, m := range sorted {
		switch role(m) {
		case RoleTemplate:
			spec, err := FromTemplate(app, m)
			if err != nil {
				st.BadTemplates = append(st.BadTemplates, err)
				continue
			}
			if _, dup := st.Templates[spec.TenantImage]; dup {
				st.ExtraTemplates = append(st.ExtraTemplates, m)
				continue
			}
			st.Templates[spec.TenantImage] = &Template{Machine: m, Spec: spec, Hash: SpecHashOf(m)}
		case RoleStandby:
			st.Standbys = append(st.Standbys, m)
		case RoleSession:
			st.Sessions = append(st.Sessions, m)
		}
	}
	return st
}

// Default returns the pool's default template, or nil.
func (s *State) Default() *Template { return s.Templates[""] }

// StandbysOf returns the standbys of one template (by tenant image name).
func (s *State) StandbysOf(tenantImage string) []*fly.Machine {
	var out []*fly.Machine
	for _, m := range s.Standbys {
		if TenantImageOf(m) == tenantImage {
			out = append(out, m)
		}
	}
	return out
}

// StandbysIn returns the standbys of one template in one region.
func (s *State) StandbysIn(tenantImage, region string) []*fly.Machine {
	var out []*fly.Machine
	for _, m := range s.StandbysOf(tenantImage) {
		if m.Region == region {
			out = append(out, m)
		}
	}
	return out
}

// SessionsOf returns the session machines of one template.
func (s *State) SessionsOf(tenantImage string) []*fly.Machine {
	var out []*fly.Machine
	for _, m := range s.Sessions {
		if TenantImageOf(m) == tenantImage {
			out = append(out, m)
		}
	}
	return out
}

// Stale returns the standbys of one template whose spec hash differs from
// the template's.
func (s *State) Stale(tenantImage string) []*fly.Machine {
	t := s.Templates[tenantImage]
	if t == nil {
		return nil
	}
	var out []*fly.Machine
	for _, m := range s.StandbysOf(tenantImage) {
		if SpecHashOf(m) != SpecHashOf(t.Machine) {
			out = append(out, m)
		}
	}
	return out
}

// Forget drops the standbys and session machines whose ids are in gone (the
// caller destroyed them), so that what is counted next leaves them out
// without listing the app again.
func (s *State) Forget(gone map[string]bool) {
	if len(gone) == 0 {
		return
	}
	keep := func(ms []*fly.Machine) []*fly.Machine {
		out := ms[:0]
		for _, m := range ms {
			if !gone[m.ID] {
				out = append(out, m)
			}
		}
		return out
	}
	s.Standbys, s.Sessions = keep(s.Standbys), keep(s.Sessions)
}

// ActiveImages returns the tenant image names of the templates that are not
// draining, sorted ("" — the default template — first).
func (s *State) ActiveImages() []string {
	images := make([]string, 0, len(s.Templates))
	for name, t := range s.Templates {
		if !t.Spec.Draining {
			images = append(images, name)
		}
	}
	sort.Strings(images)
	return images
}

// Machines is the number of machines max_machines counts: every standby and
// session machine of the pool.
func (s *State) Machines() int { return len(s.Standbys) + len(s.Sessions) }

// Counts is a summary of a pool's machines for dashboards.
type Counts struct {
	// Standby counts standbys by machine state (created, suspended, ...).
	Standby map[string]int
	// StandbyByRegion counts standbys by region.
	StandbyByRegion map[string]int
	// Sessions is the number of session machines.
	Sessions int
	// Total is standbys plus session machines.
	Total int
}

// Count summarises the standbys and sessions of the templates accepted by
// match (nil = all).
func (s *State) Count(match func(tenantImage string) bool) Counts {
	c := Counts{Standby: map[string]int{}, StandbyByRegion: map[string]int{}}
	for _, m := range s.Standbys {
		if match != nil && !match(TenantImageOf(m)) {
			continue
		}
		c.Standby[m.State]++
		c.StandbyByRegion[m.Region]++
		c.Total++
	}
	for _, m := range s.Sessions {
		if match != nil && !match(TenantImageOf(m)) {
			continue
		}
		c.Sessions++
		c.Total++
	}
	return c
}
