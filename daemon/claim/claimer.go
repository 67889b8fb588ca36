// Package claim is the claim: it takes a pending session's machine, brings
// it up and hands the session to the agent. The session lifecycle (package
// sessions) decides when a claim runs and what becomes of its session.
package claim

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/fly"
)

// Config wires a Claimer.
type Config struct {
	Store store.Store
	Fly   Fly
	// Logger is the session manager's: the claim's log lines keep the name
	// they always had ("sessions").
	Logger hclog.Logger
}

// Fly is the part of the Fly client a claim uses.
type Fly interface {
	ListMachines(ctx context.Context, app string, opts fly.ListMachinesOptions) ([]fly.Machine, error)
	GetMachine(ctx context.Context, app, id string) (*fly.Machine, error)
	CreateMachine(ctx context.Context, app string, req fly.CreateMachineRequest) (*fly.Machine, error)
	StartMachine(ctx context.Context, app, id, nonce string) (*fly.StartResponse, error)
	WaitMachine(ctx context.Context, app, id string, opts fly.WaitOptions) (*fly.WaitResponse, error)
	DestroyMachine(ctx context.Context, app, id string, force bool, nonce string) error
	AcquireLease(ctx context.Context, app, id string, ttl time.Duration, description string) (*fly.Lease, error)
	ReleaseLease(ctx context.Context, app, id, nonce string) error
	UpdateMetadata(ctx context.Context, app, id string, req fly.UpdateMetadataRequest, nonce string) error
	SignalMachine(ctx context.Context, app, id, signal, nonce string) error
	RefreshLease(ctx context.Context, app, id, nonce string, ttl time.Duration) (*fly.Lease, error)
}

// Claimer claims machines for this replica's sessions. Create it with New.
type Claimer struct {
	cfg   Config
	store store.Store
	fly   Fly
	log   hclog.Logger
}

// New makes a Claimer.
func New(cfg Config) *Claimer {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Claimer{cfg: cfg, store: cfg.Store, fly: cfg.Fly, log: cfg.Logger}
}
