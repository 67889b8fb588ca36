package reconcile

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hangarhq/hangar/daemon/service"
)

// Environment overrides of the reconciler's timing (Go durations), read when
// the replica starts.
const (
	EnvInterval  = "HANGARD_RECONCILE_INTERVAL"
	EnvReapGrace = "HANGARD_REAP_GRACE"
	// EnvUnknownGrace: how long a session machine whose session the store
	// does not know must stay so before it is reaped (default 15m).
	EnvUnknownGrace = "HANGARD_REAP_UNKNOWN_AFTER"
)

// Worker is the reconciler as a replica's background worker: every replica
// runs it, and the store's leader lock lets one act at a time.
func Worker() service.Worker {
	return service.Worker{Name: "reconciler", Run: func(ctx context.Context, d *service.Deps) error {
		cfg := Config{
			Fly: d.Fly, Org: d.Config.FlyOrg, Store: d.Store, Agents: d.Agents,
			Logger: d.Logger.Named("reconciler"),
		}
		if d.Sessions != nil {
			// One listing per round serves the claims too.
			cfg.OnStandbys = d.Sessions.ObserveStandbys
		}
		var err error
		if cfg.Interval, err = envDuration(EnvInterval); err != nil {
			return err
		}
		if cfg.ReapGrace, err = envDuration(EnvReapGrace); err != nil {
			return err
		}
		if cfg.UnknownGrace, err = envDuration(EnvUnknownGrace); err != nil {
			return err
		}
		if d.Metrics != nil {
			cfg.Metrics = NewMetrics(d.Metrics.Registry)
		}
		r, err := New(cfg)
		if err != nil {
			return err
		}
		return r.Run(ctx)
	}}
}

func envDuration(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: want a positive Go duration, got %q", name, v)
	}
	return d, nil
}
