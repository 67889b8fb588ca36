package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
)

func runPools(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "ls" {
		args = args[1:]
	}
	fs := e.flagSet("pools ls")
	if _, _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	pools, err := c.ListPools(ctx)
	if err != nil {
		return err
	}
	if e.json() {
		return e.printJSON(apiJSONList(pools))
	}
	tw := tabwriter.NewWriter(e.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tAPP\tREGIONS\tMIN STANDBY\tMAX MACHINES\tSTANDBY MODE")
	for _, p := range pools {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", p.Name, p.AppName, strings.Join(p.Regions, ","), p.MinStandby, p.MaxMachines, p.StandbyMode)
	}
	return tw.Flush()
}
