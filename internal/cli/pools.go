package cli

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
)

func poolsCmd(e *env) *cobra.Command {
	run := func(ctx context.Context, _, _ []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		pools, err := c.ListPools(ctx)
		if err != nil {
			return err
		}
		rows := make([]string, 0, len(pools))
		for _, p := range pools {
			rows = append(rows, row(p.Name, p.AppName, strings.Join(p.Regions, ","), p.MinStandby, p.MaxMachines, p.StandbyMode))
		}
		return e.out.table(apiJSONList(pools), "NAME\tAPP\tREGIONS\tMIN STANDBY\tMAX MACHINES\tSTANDBY MODE", rows)
	}
	// "hangar pools" and "hangar pools ls" are the same command; ls is
	// hidden so that pools reads as the single command it is.
	name := map[string]string{"name": "pools ls"}
	c := leaf(e, &cobra.Command{
		Use:         "pools [ls]",
		Short:       "list the pools you may use",
		Annotations: name,
	}, 0, 0, run)
	c.AddCommand(leaf(e, &cobra.Command{
		Use:         "ls",
		Short:       "list the pools you may use",
		Hidden:      true,
		Annotations: name,
	}, 0, 0, run))
	return c
}
