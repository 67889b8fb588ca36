package provider

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/diag"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// The steps hangar_pool and hangar_tenant_image both take on a template and
// its standbys. A pool's default template is the tenant image "".

// createTemplate creates spec's template machine and records it in st.
func createTemplate(ctx context.Context, c *fly.Client, st *pool.State, spec pool.Spec) (*pool.Template, error) {
	m, err := c.CreateMachine(ctx, st.App, spec.CreateTemplateRequest())
	if err != nil {
		return nil, err
	}
	t := &pool.Template{Machine: m, Spec: spec}
	st.Templates[spec.TenantImage] = t
	return t, nil
}

// topUp creates the standbys a template is missing.
func topUp(ctx context.Context, c *fly.Client, st *pool.State, tenantImage string) error {
	_, err := pool.TopUp(ctx, c, st, tenantImage, createConcurrency, pool.StandbyOptions{})
	return err
}

// destroyMachines destroys every machine, going on past failures.
func destroyMachines(ctx context.Context, c *fly.Client, app string, machines []*fly.Machine) error {
	var errs []error
	for _, m := range machines {
		if err := destroyMachine(ctx, c, app, m.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// markDraining marks templates draining so that daemons stop claiming and
// refilling them; on failure it returns the template it could not mark.
func markDraining(ctx context.Context, c *fly.Client, app string, templates []*fly.Machine) (*fly.Machine, error) {
	for _, t := range templates {
		if err := c.SetMetadata(ctx, app, t.ID, pool.KeyDraining, "true", ""); err != nil && !errors.Is(err, fly.ErrNotFound) {
			return t, err
		}
	}
	return nil, nil
}

// unmarkDraining takes the mark back when destroy refuses after all.
func unmarkDraining(ctx context.Context, c *fly.Client, app string, templates []*fly.Machine) {
	for _, t := range templates {
		_ = c.DeleteMetadata(ctx, app, t.ID, pool.KeyDraining, "")
	}
}

// sessionList names session machines, with their session IDs, for a
// diagnostic.
func sessionList(sessions []*fly.Machine) string {
	ids := make([]string, 0, len(sessions))
	for _, m := range sessions {
		s := m.ID
		if sid := pool.MetadataOf(m)[pool.KeySession]; sid != "" {
			s += " (session " + sid + ")"
		}
		ids = append(ids, s)
	}
	return strings.Join(ids, ", ")
}

// standbyProblems lists what an apply repairs on a template's standbys:
// stale ones, and missing ones by region (sorted).
func standbyProblems(st *pool.State, tenantImage string) []string {
	var problems []string
	if n := len(st.Stale(tenantImage)); n > 0 {
		problems = append(problems, fmt.Sprintf("%d standby machine(s) were built from an older spec", n))
	}
	missing := pool.TopUpPlan(st, tenantImage)
	regions := make([]string, 0, len(missing))
	for r := range missing {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, reg := range regions {
		problems = append(problems, fmt.Sprintf("region %s is missing %d standby machine(s)", reg, missing[reg]))
	}
	return problems
}

// loadForPlan reads a pool's live state to plan repairs; ok is false when
// the app is gone or could not be read (a warning with summary says so).
func loadForPlan(ctx context.Context, c *fly.Client, app, summary string, diags *diag.Diagnostics) (*pool.State, bool) {
	st, err := pool.Load(ctx, c, app)
	if errors.Is(err, fly.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		diags.AddWarning(summary, flyErrorDetail("read the pool's machines to plan repairs", err))
		return nil, false
	}
	return st, true
}
