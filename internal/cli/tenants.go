package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangarhq/hangar/internal/client"
)

func tenantsCmd(e *env) *cobra.Command {
	c := group(e, &cobra.Command{
		Use:   "tenants <command>",
		Short: "manage tenants (admin key)",
		Long:  "Manages tenants; every tenants command takes the admin key: HANGAR_ADMIN_TOKEN or --admin-token.",
	})
	c.AddCommand(tenantsCreateCmd(e), tenantsListCmd(e), tenantsRemoveCmd(e), tenantsRotateCmd(e))
	return c
}

func tenantsCreateCmd(e *env) *cobra.Command {
	var pools []string
	var maxSessions int
	var maxDur string
	c := leaf(e, &cobra.Command{
		Use:   "create NAME [--pool P]… [--max-sessions N] [--max-session-duration D]",
		Short: "create a tenant; its API key is printed this once",
	}, 1, 1, func(ctx context.Context, pos, _ []string) error {
		if maxSessions < 0 {
			return usagef("tenants create: --max-sessions must not be negative")
		}
		if maxDur != "" {
			if d, err := time.ParseDuration(maxDur); err != nil || d <= 0 {
				return usagef("tenants create: --max-session-duration %q is not a positive duration such as 8h", maxDur)
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
		t, err := c.CreateTenant(ctx, client.CreateTenantRequest{Name: pos[0], Pools: list, MaxSessions: maxSessions, MaxSessionDuration: maxDur})
		if err != nil {
			return err
		}
		return e.printKey(t)
	})
	// A string array, not a slice: pflag's slices read CSV (quotes and all);
	// the commas are split above, as they always were.
	c.Flags().StringArrayVar(&pools, "pool", nil, "a `POOL` the tenant may use (repeatable, or comma-separated; default none)")
	c.Flags().IntVar(&maxSessions, "max-sessions", 0, "the `NUMBER` of concurrent sessions allowed (0 = server default)")
	c.Flags().StringVar(&maxDur, "max-session-duration", "", "longest session allowed, a Go `DURATION` such as 8h")
	return c
}

// printKey prints a tenant with its new API key; the key is not shown again.
func (e *env) printKey(t *client.Tenant) error {
	return e.out.print(apiJSON(t.Raw, t), func(w io.Writer) error {
		fmt.Fprintf(w, "tenant %s (%s)\napi key: %s\n", t.Name, t.ID, t.APIKey)
		fmt.Fprintln(e.io.Err, "(the key is shown only this once)")
		return nil
	})
}

func tenantsListCmd(e *env) *cobra.Command {
	return leaf(e, &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "list tenants",
	}, 0, 0, func(ctx context.Context, _, _ []string) error {
		c, err := e.adminClient()
		if err != nil {
			return err
		}
		list, err := c.ListTenants(ctx)
		if err != nil {
			return err
		}
		rows := make([]string, 0, len(list))
		for _, t := range list {
			ms := "-"
			if t.MaxSessions > 0 {
				ms = fmt.Sprint(t.MaxSessions)
			}
			rows = append(rows, row(t.ID, t.Name, dash(strings.Join(t.Pools, ",")), ms, dash(t.MaxSessionDuration)))
		}
		return e.out.table(apiJSONList(list), "ID\tNAME\tPOOLS\tMAX SESSIONS\tMAX DURATION", rows)
	})
}

func tenantsRemoveCmd(e *env) *cobra.Command {
	c := leaf(e, &cobra.Command{
		Use:   "rm ID|NAME",
		Short: "delete a tenant",
	}, 1, 1, func(ctx context.Context, pos, _ []string) error {
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
		return e.out.print(map[string]any{"id": t.ID, "name": t.Name, "deleted": true}, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "tenant %s (%s) deleted\n", t.Name, t.ID)
			return err
		})
	})
	c.ValidArgsFunction = e.completeTenants
	return c
}

func tenantsRotateCmd(e *env) *cobra.Command {
	c := leaf(e, &cobra.Command{
		Use:   "rotate ID|NAME",
		Short: "issue a new API key (the old one stops working)",
	}, 1, 1, func(ctx context.Context, pos, _ []string) error {
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
	})
	c.ValidArgsFunction = e.completeTenants
	return c
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
