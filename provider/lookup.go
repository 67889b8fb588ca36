package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// errPoolNotFound is returned by findPoolApp when no app holds the pool.
var errPoolNotFound = errors.New("pool not found")

// findPoolApp returns the Fly app holding pool name's default template. It
// tries the conventional app names first ("hangar-<pool>", "<pool>"), then
// every app of the organization.
func findPoolApp(ctx context.Context, c *fly.Client, org, name string) (string, error) {
	holds := func(app string) (bool, error) {
		ms, err := c.ListMachines(ctx, app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyPool: name, pool.KeyRole: pool.RoleTemplate}})
		if errors.Is(err, fly.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for i := range ms {
			md := pool.MetadataOf(&ms[i])
			if md[pool.KeyPool] == name && md[pool.KeyRole] == pool.RoleTemplate && md[pool.KeyTenantImage] == "" &&
				ms[i].State != fly.StateDestroyed && ms[i].State != fly.StateDestroying {
				return true, nil
			}
		}
		return false, nil
	}
	tried := map[string]bool{}
	for _, app := range []string{"hangar-" + name, name} {
		tried[app] = true
		ok, err := holds(app)
		if err != nil {
			return "", fmt.Errorf("look for pool %q in app %s: %w", name, app, err)
		}
		if ok {
			return app, nil
		}
	}
	apps, err := c.ListApps(ctx, org)
	if err != nil {
		return "", fmt.Errorf("list apps of organization %q: %w", org, err)
	}
	for _, a := range apps {
		if tried[a.Name] {
			continue
		}
		ok, err := holds(a.Name)
		if err != nil {
			return "", fmt.Errorf("look for pool %q in app %s: %w", name, a.Name, err)
		}
		if ok {
			return a.Name, nil
		}
	}
	return "", fmt.Errorf("no app in organization %q holds a template machine of pool %q: %w", org, name, errPoolNotFound)
}

// destroyMachine destroys a machine with force, waiting out a lease held by
// someone else (a daemon claiming it) for up to a minute.
func destroyMachine(ctx context.Context, c *fly.Client, app, id string) error {
	deadline := time.Now().Add(time.Minute)
	delay := 250 * time.Millisecond
	for {
		err := c.DestroyMachine(ctx, app, id, true, "")
		if err == nil || errors.Is(err, fly.ErrNotFound) {
			return nil
		}
		if !errors.Is(err, fly.ErrConflict) || time.Now().After(deadline) {
			return fmt.Errorf("destroy machine %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("destroy machine %s: %w", id, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 4*time.Second)
	}
}

// retireStandbys destroys standbys the pool no longer wants (regions removed,
// min_standby lowered), each under its lease; standbys leased by someone
// else are left alone (a daemon is claiming them).
func retireStandbys(ctx context.Context, c *fly.Client, app string, ms []*fly.Machine) error {
	var errs []error
	for _, m := range ms {
		lease, err := c.AcquireLease(ctx, app, m.ID, pool.LeaseTTL, "hangar: retire standby")
		if errors.Is(err, fly.ErrConflict) || errors.Is(err, fly.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lease standby %s: %w", m.ID, err))
			continue
		}
		cur, err := c.GetMachine(ctx, app, m.ID)
		if err != nil || !pool.IsStandby(cur) {
			_ = c.ReleaseLease(ctx, app, m.ID, lease.Nonce())
			continue
		}
		if err := c.DestroyMachine(ctx, app, m.ID, true, lease.Nonce()); err != nil && !errors.Is(err, fly.ErrNotFound) {
			_ = c.ReleaseLease(ctx, app, m.ID, lease.Nonce())
			errs = append(errs, fmt.Errorf("destroy standby %s: %w", m.ID, err))
		}
	}
	return errors.Join(errs...)
}

// surplus returns the standbys of a template beyond what its spec asks for:
// those in regions no longer listed, and the newest beyond min_standby per region.
func surplus(st *pool.State, tenantImage string) []*fly.Machine {
	t := st.Templates[tenantImage]
	if t == nil {
		return nil
	}
	want := map[string]bool{}
	for _, r := range t.Spec.Regions {
		want[r] = true
	}
	var out []*fly.Machine
	perRegion := map[string]int{}
	for _, m := range st.StandbysOf(tenantImage) { // oldest first
		if !want[m.Region] {
			out = append(out, m)
			continue
		}
		perRegion[m.Region]++
		if perRegion[m.Region] > t.Spec.MinStandby {
			out = append(out, m)
		}
	}
	return out
}

// poolNotFoundDetail explains that no app of the organization holds a pool,
// with advice on what to do.
func poolNotFoundDetail(org, name, advice string, err error) string {
	return fmt.Sprintf("No Fly app in organization %q holds pool %q. %s\n\nOriginal Error: %s", org, name, advice, err)
}

// loadNamedPool loads the live state of pool poolName from app, or, when app
// is empty, from the app found to hold it. A pool no app holds is reported
// on attribute at with advice; another failure to find it under
// findSummary.
func loadNamedPool(ctx context.Context, d *providerData, poolName, app string, at path.Path, advice, findSummary string, diags *diag.Diagnostics) (*pool.State, bool) {
	if app == "" {
		var err error
		app, err = findPoolApp(ctx, d.client, d.org, poolName)
		if errors.Is(err, errPoolNotFound) {
			diags.AddAttributeError(at, "Pool Not Found", poolNotFoundDetail(d.org, poolName, advice, err))
			return nil, false
		}
		if err != nil {
			addFlyError(diags, findSummary, "find the app of pool "+poolName, err)
			return nil, false
		}
	}
	st, err := pool.Load(ctx, d.client, app)
	if err != nil {
		addFlyError(diags, "Read Pool Error", "list the machines of app "+app, err)
		return nil, false
	}
	return st, true
}
