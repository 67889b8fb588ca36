package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangarhq/hangar/internal/client"
)

// Shell completion comes from cobra: "hangar completion bash|zsh|fish|powershell"
// prints the script, which asks "hangar __complete …" for the words. The
// functions here complete the names only the daemon knows (session ids,
// pools, tenants) by asking it, with the settings of the command line being
// completed (--env-file, --url, --token …); when that fails, there is
// simply nothing to offer.

// completionTimeout bounds a completion's request: a shell waits for it.
const completionTimeout = 5 * time.Second

// completeFromAPI returns the completions that list reads from the daemon
// (with the admin key if admin), those that start with toComplete.
func (e *env) completeFromAPI(c *cobra.Command, admin bool, toComplete string, list func(context.Context, *client.Client) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(c.Context(), completionTimeout)
	defer cancel()
	newClient := e.client
	if admin {
		newClient = e.adminClient
	}
	cl, err := newClient()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	all, err := list(ctx, cl)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, v := range all {
		if strings.HasPrefix(v, toComplete) {
			out = append(out, v)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeSessions completes a command's one argument with the ids of your
// sessions (described by pool and state).
func (e *env) completeSessions(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return e.completeFromAPI(c, false, toComplete, func(ctx context.Context, cl *client.Client) ([]cobra.Completion, error) {
		list, err := cl.ListSessions(ctx, "")
		var out []cobra.Completion
		for _, s := range list {
			out = append(out, cobra.CompletionWithDesc(s.ID, s.Pool+" "+s.State))
		}
		return out, err
	})
}

// completePools completes --pool with the pools you may use.
func (e *env) completePools(c *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return e.completeFromAPI(c, false, toComplete, func(ctx context.Context, cl *client.Client) ([]cobra.Completion, error) {
		pools, err := cl.ListPools(ctx)
		var out []cobra.Completion
		for _, p := range pools {
			out = append(out, p.Name)
		}
		return out, err
	})
}

// completeTenants completes a command's one argument with tenant names
// (admin key), which tenants rm and rotate take as well as ids.
func (e *env) completeTenants(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return e.completeFromAPI(c, true, toComplete, func(ctx context.Context, cl *client.Client) ([]cobra.Completion, error) {
		list, err := cl.ListTenants(ctx)
		var out []cobra.Completion
		for _, t := range list {
			out = append(out, cobra.CompletionWithDesc(t.Name, t.ID))
		}
		return out, err
	})
}
