package claim

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/fly"
)

// Destroy force-destroys a machine, ignoring one that is already gone. A
// machine it cannot destroy now (still leased by a claim of a replica that
// died, or Fly failing) is recorded in the store as owed: the destroy loop
// of any replica retries it (DestroyOwed), after a crash of this one too.
func (cl *Claimer) Destroy(app, id, nonce string) {
	if app == "" || id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cl.fly.DestroyMachine(ctx, app, id, true, nonce)
	if err == nil || errors.Is(err, fly.ErrNotFound) {
		cl.log.Debug("destroyed machine", "machine", id)
		return
	}
	level := hclog.Warn
	if errors.Is(err, fly.ErrConflict) {
		level = hclog.Debug // a dead claim's lease: expected, short
	}
	cl.log.Log(level, "destroy machine; retrying from the store", "machine", id, "error", err)
	if rerr := cl.store.RecordDestroy(ctx, app, id, "destroy failed", err.Error(), time.Now()); rerr != nil {
		cl.log.Error("record a destroy owed; the reaper's grace is left", "machine", id, "error", rerr)
	}
}

// DestroyOwed retries the machine destroys recorded in the store (by any
// replica), forgetting each one that is done or whose machine is gone.
func (cl *Claimer) DestroyOwed(ctx context.Context) {
	owed, err := cl.store.PendingDestroys(ctx, 100)
	if err != nil {
		if ctx.Err() == nil {
			cl.log.Warn("list destroys owed", "error", err)
		}
		return
	}
	for _, p := range owed {
		if ctx.Err() != nil {
			return
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := cl.fly.DestroyMachine(dctx, p.App, p.MachineID, true, "")
		cancel()
		if err == nil || errors.Is(err, fly.ErrNotFound) {
			if err := cl.store.DestroyDone(ctx, p.App, p.MachineID); err != nil {
				cl.log.Warn("forget a destroy done", "machine", p.MachineID, "error", err)
				continue
			}
			cl.log.Info("destroyed machine owed", "machine", p.MachineID, "reason", p.Reason, "since", p.Since, "attempts", p.Attempts)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if err := cl.store.RecordDestroy(ctx, p.App, p.MachineID, p.Reason, err.Error(), time.Now()); err != nil {
			cl.log.Warn("note a destroy attempt", "machine", p.MachineID, "error", err)
		}
	}
}
