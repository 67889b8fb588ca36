package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/reconcile"
	"github.com/hangarhq/hangar/daemon/service"
)

func init() {
	register("serve", "run the hangar runtime daemon", runServe)
}

// backgroundWorkers are the loops every replica runs beside the API (serve
// and dev alike). The pool reconciler plugs in here.
func backgroundWorkers() []service.Worker {
	return []service.Worker{reconcile.Worker()}
}

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	flags := config.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg, err := flags.Load(config.Default(), os.Getenv)
	if err != nil {
		return err
	}
	// Refuse to start without the shared broker key, before anything else.
	if _, err := cfg.LoadBrokerKey(); err != nil {
		return err
	}
	return service.Run(ctx, service.Options{Config: cfg, Workers: backgroundWorkers()}, func(d *service.Daemon) {
		fmt.Printf("hangard ready at %s\n", d.URL)
	})
}
