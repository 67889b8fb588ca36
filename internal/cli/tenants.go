package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hangarhq/hangar/internal/client"
)

const tenantsUsage = `usage: hangar tenants <command>   (admin key: HANGAR_ADMIN_TOKEN or --admin-token)

  create NAME [--pool P]… [--max-sessions N] [--max-session-duration D]
                       create a tenant; its API key is printed this once
  ls                   list tenants
  rm ID|NAME           delete a tenant
  rotate ID|NAME       issue a new API key (the old one stops working)
`

func runTenants(ctx context.Context, e *env, args []string) error {
	return dispatch(ctx, e, "tenants", args, map[string]func(context.Context, *env, []string) error{
		"create": tenantsCreate,
		"ls":     tenantsList,
		"list":   tenantsList,
		"rm":     tenantsRemove,
		"rotate": tenantsRotate,
	}, tenantsUsage)
}

func tenantsCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("tenants create")
	var pools stringList
	fs.Var(&pools, "pool", "pool the tenant may use (repeatable; default none)")
	maxSessions := fs.Int("max-sessions", 0, "concurrent sessions allowed (0 = server default)")
	maxDur := fs.String("max-session-duration", "", "longest session allowed, a Go duration such as 8h")
	pos, _, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *maxSessions < 0 {
		return usagef("tenants create: --max-sessions must not be negative")
	}
	if *maxDur != "" {
		if d, err := time.ParseDuration(*maxDur); err != nil || d <= 0 {
			return usagef("tenants create: --max-session-duration %q is not a positive duration such as 8h", *maxDur)
		}
	}
	var list []string
	for _, p := range pools {
		for _, s := range strings.Split(p, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
	}
	c, err := e.adminClient()
	if err != nil {
		return err
	}
	t, err := c.CreateTenant(ctx, client.CreateTenantRequest{Name: pos[0], Pools: list, MaxSessions: *maxSessions, MaxSessionDuration: *maxDur})
	if err != nil {
		return err
	}
	return e.printKey(t)
}

func (e *env) printKey(t *client.Tenant) error {
	if e.json() {
		return e.printJSON(apiJSON(t.Raw, t))
	}
	fmt.Fprintf(e.io.Out, "tenant %s (%s)\napi key: %s\n", t.Name, t.ID, t.APIKey)
	fmt.Fprintln(e.io.Err, "(the key is shown only this once)")
	return nil
}

func tenantsList(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("tenants ls")
	if _, _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := e.adminClient()
	if err != nil {
		return err
	}
	list, err := c.ListTenants(ctx)
	if err != nil {
		return err
	}
	if e.json() {
		return e.printJSON(apiJSONList(list))
	}
	tw := tabwriter.NewWriter(e.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPOOLS\tMAX SESSIONS\tMAX DURATION")
	for _, t := range list {
		ms := "-"
		if t.MaxSessions > 0 {
			ms = fmt.Sprint(t.MaxSessions)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, dash(strings.Join(t.Pools, ",")), ms, dash(t.MaxSessionDuration))
	}
	return tw.Flush()
}

func tenantsRemove(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("tenants rm")
	pos, _, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := e.adminClient()
	if err != nil {
		return err
	}
	t, err := resolveTenant(ctx, c, pos[0])
	if err != nil {
		return err
	}
	if err := c.DeleteTenant(ctx, t.ID); err != nil {
		return err
	}
	if e.json() {
		return e.printJSON(map[string]any{"id": t.ID, "name": t.Name, "deleted": true})
	}
	fmt.Fprintf(e.io.Out, "tenant %s (%s) deleted\n", t.Name, t.ID)
	return nil
}

func tenantsRotate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("tenants rotate")
	pos, _, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := e.adminClient()
	if err != nil {
		return err
	}
	cur, err := resolveTenant(ctx, c, pos[0])
	if err != nil {
		return err
	}
	t, err := c.RotateTenantKey(ctx, cur.ID)
	if err != nil {
		return err
	}
	if t.Name == "" && t.Raw == nil {
		t.Name = cur.Name
	}
	return e.printKey(t)
}

// resolveTenant finds the tenant that arg names: its id, or else its name
// (people create tenants by name and pass the name back).
func resolveTenant(ctx context.Context, c *client.Client, arg string) (*client.Tenant, error) {
	list, err := c.ListTenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("find tenant %q: %w", arg, err)
	}
	for i := range list {
		if list[i].ID == arg {
			return &list[i], nil
		}
	}
	var byName []*client.Tenant
	for i := range list {
		if list[i].Name == arg {
			byName = append(byName, &list[i])
		}
	}
	switch len(byName) {
	case 0:
		return nil, fmt.Errorf("no tenant with id or name %q (see hangar tenants ls)", arg)
	case 1:
		return byName[0], nil
	}
	ids := make([]string, len(byName))
	for i, t := range byName {
		ids[i] = t.ID
	}
	return nil, fmt.Errorf("%d tenants are named %q (ids %s): pass the id", len(byName), arg, strings.Join(ids, ", "))
}
