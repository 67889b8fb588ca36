// Package store keeps hangard's durable state: tenants and their API keys,
// sessions and their claims, tickets, and the liveness of daemon replicas.
// It never holds a Claude credential or a git token. Locks (locks.go) are
// named locks over it, held in the process and across replicas.
//
// Two implementations share one interface and one test suite (package
// storetest): SQLite (modernc.org/sqlite, the default, one replica) and
// Postgres (pgx v5, several replicas). Open picks one from the DSN. Both
// apply their embedded, versioned migrations on open.
//
// Times are stored in UTC with microsecond precision: what a method stores
// is truncated to that, and what it returns is in UTC.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors returned by every implementation.
var (
	// ErrNotFound: no such row (or not visible to the caller's tenant).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint was violated (e.g. tenant name taken).
	ErrConflict = errors.New("conflict")
	// ErrStateChanged: a compare-and-set transition found the session in a
	// state other than the expected ones.
	ErrStateChanged = errors.New("session state changed")
	// ErrTicketInvalid: unknown, expired or used-up ticket.
	ErrTicketInvalid = errors.New("ticket invalid")
)

// SessionState is a session's place in its life cycle
// (pending → claiming → starting → ready → ending → ended, or failed).
type SessionState string

// Session states.
const (
	StatePending  SessionState = "pending"
	StateClaiming SessionState = "claiming"
	StateStarting SessionState = "starting"
	StateReady    SessionState = "ready"
	StateEnding   SessionState = "ending"
	StateEnded    SessionState = "ended"
	StateFailed   SessionState = "failed"
)

// Live reports whether the session still owns (or may come to own) a machine.
func (s SessionState) Live() bool {
	return s != StateEnded && s != StateFailed
}

// Tenant is one customer of the service.
type Tenant struct {
	ID                 string
	Name               string
	Pools              []string      // pools granted; empty means none
	MaxSessions        int           // concurrent live sessions; 0 = unlimited
	MaxSessionDuration time.Duration // 0 = pool's session TTL only
	KeyHash            []byte        // SHA-256 of the API key
	CreatedAt          time.Time
}

// Push is the result of the agent's finish call.
type Push struct {
	Ref     string `json:"ref"`
	Commit  string `json:"commit"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Session is one user session. It holds no credential.
type Session struct {
	ID                            string
	TenantID                      string
	Pool                          string
	TenantImage                   string
	Region                        string // requested region; after the claim, the machine's
	State                         SessionState
	Reason                        string // why it failed or ended
	MachineID                     string
	AppName                       string
	Repo                          string
	Branch                        string
	SessionBranch                 string
	Mode                          string   // "pty" | "jsonl"
	Command                       []string // argv; empty = the image's default (claude)
	Env                           map[string]string
	Cols, Rows                    int
	GitAuthorName, GitAuthorEmail string
	Owner                         string // id of the daemon replica that accepted it and holds its credentials
	CreatedAt                     time.Time
	ReadyAt                       *time.Time
	EndedAt                       *time.Time
	Push                          *Push
	CostUSD                       float64
	UpdatedAt                     time.Time
}

// SessionFilter narrows ListSessions. Zero fields match everything.
type SessionFilter struct {
	TenantID string
	States   []SessionState
	Owner    string
	Pool     string
	Limit    int
}

// Ticket is a short-lived credential for a browser WebSocket.
type Ticket struct {
	Hash      []byte // SHA-256 of the ticket string; the string itself is never stored
	SessionID string
	TenantID  string
	Role      string // "rw" | "ro"
	ExpiresAt time.Time
	UsesLeft  int
}

// Store is hangard's durable state. Every method is safe for concurrent use
// by several goroutines and, for Postgres, several replicas.
type Store interface {
	// Tenants.
	CreateTenant(ctx context.Context, t *Tenant) error // sets ID, CreatedAt; ErrConflict on duplicate name
	GetTenant(ctx context.Context, id string) (*Tenant, error)
	TenantByKeyHash(ctx context.Context, hash []byte) (*Tenant, error)
	ListTenants(ctx context.Context) ([]*Tenant, error)
	// DeleteTenant removes a tenant and its tickets; its sessions stay as
	// history. ErrNotFound if there is no such tenant.
	DeleteTenant(ctx context.Context, id string) error
	// SetTenantKey replaces a tenant's key hash and, in the same
	// transaction, revokes every ticket the tenant holds: rotating a key
	// that may have leaked must also kill the share links it minted.
	// ErrNotFound if there is no such tenant; ErrConflict if another tenant
	// has that hash.
	SetTenantKey(ctx context.Context, id string, hash []byte) error

	// Sessions.
	CreateSession(ctx context.Context, s *Session) error // sets CreatedAt/UpdatedAt; ID is chosen by the caller
	GetSession(ctx context.Context, id string) (*Session, error)
	ListSessions(ctx context.Context, f SessionFilter) ([]*Session, error) // oldest first
	// UpdateSession applies fn to the current row inside a transaction and
	// writes it back, but only while the row's state is one of from (any
	// state if from is empty); otherwise ErrStateChanged (fn not called).
	// The row stays locked while fn runs: fn must be quick and must not
	// call the store. fn may run more than once if the transaction is
	// retried. An error from fn aborts the update and is returned as is.
	// fn cannot change ID, TenantID or CreatedAt; UpdatedAt is set.
	UpdateSession(ctx context.Context, id string, from []SessionState, fn func(*Session) error) (*Session, error)
	// CountLiveSessions counts a tenant's sessions not ended or failed.
	CountLiveSessions(ctx context.Context, tenantID string) (int, error)
	// QueuePosition is 1 + the number of pending sessions of the same pool
	// created before this one; 0 when the session is not pending.
	QueuePosition(ctx context.Context, id string) (int, error)

	// Tickets.
	// CreateTicket stores a ticket (ErrConflict if its hash exists) and
	// sweeps expired and used-up tickets.
	CreateTicket(ctx context.Context, t *Ticket) error
	// UseTicket atomically checks that the ticket is for sessionID and not
	// expired, decrements UsesLeft and returns the ticket; ErrTicketInvalid
	// if unknown, for another session, expired or used up. A ticket that is
	// refused keeps every use: presenting it for the wrong session spends
	// nothing.
	UseTicket(ctx context.Context, hash []byte, sessionID string, now time.Time) (*Ticket, error)

	// Daemon replicas.
	Heartbeat(ctx context.Context, daemonID string, now time.Time) error
	// DeadDaemons lists replicas whose last heartbeat is older than before.
	DeadDaemons(ctx context.Context, before time.Time) ([]string, error)
	// ForgetDaemon removes a replica's heartbeat and the agent tunnels it
	// announced; forgetting an unknown one is not an error.
	ForgetDaemon(ctx context.Context, daemonID string) error
	// AdvertiseDaemon records the address other replicas reach daemonID on
	// (its internal listener) and counts as a heartbeat at at.
	AdvertiseDaemon(ctx context.Context, daemonID, addr string, at time.Time) error

	// Agent tunnels (internal/tunnel): which replica holds each machine's.
	// AnnounceTunnel records that daemonID holds machineID's tunnel (a later
	// announcement, from any replica, replaces it).
	AnnounceTunnel(ctx context.Context, machineID, daemonID string, at time.Time) error
	// WithdrawTunnel forgets machineID's tunnel if daemonID still holds it.
	WithdrawTunnel(ctx context.Context, machineID, daemonID string) error
	// TunnelOwner returns the replica holding machineID's tunnel and that
	// replica's advertised address ("" if it advertised none); ErrNotFound
	// when no replica holds one.
	TunnelOwner(ctx context.Context, machineID string) (daemonID, addr string, err error)
	// UseToken records a single-use token key (a jti, never a token; the
	// store keeps its SHA-256) until it expires; fresh is false if it was used before. Keys
	// past their expiry (before now) are swept.
	UseToken(ctx context.Context, key string, until, now time.Time) (fresh bool, err error)
	// TryLeader tries to become the one leader for name (Postgres: a session
	// advisory lock on a connection of its own; SQLite: always granted, one
	// process). In Postgres it is exclusive across replicas and within one
	// store alike (not re-entrant). release gives it up (calling it again is
	// harmless); Close gives up every lock the store holds.
	TryLeader(ctx context.Context, name string) (ok bool, release func(), err error)

	// Machine destroys still owed (a destroy that failed, typically
	// because a Fly lease still held the machine). Any replica may carry
	// them out; they outlive the replica that recorded them.
	// RecordDestroy notes that app's machineID must be destroyed, for
	// reason; recording it again keeps the first reason and time, counts an
	// attempt and keeps lastErr ("" leaves the last error as is).
	RecordDestroy(ctx context.Context, app, machineID, reason, lastErr string, at time.Time) error
	// PendingDestroys lists the destroys still owed, oldest first, at most limit (0: all).
	PendingDestroys(ctx context.Context, limit int) ([]*PendingDestroy, error)
	// DestroyDone forgets a destroy (done, or the machine is gone); an
	// unknown one is not an error.
	DestroyDone(ctx context.Context, app, machineID string) error
	// ReserveRate takes one request's turn from the rate bucket key, which
	// allows one request per interval with bursts of burst, and returns how
	// long the caller must wait before sending it. With Postgres the bucket
	// is shared by every replica (on the database's clock); with SQLite it
	// lives in the process. It keeps all replicas within Fly's rate limits
	// together (see fly.Pacer).
	ReserveRate(ctx context.Context, key string, interval time.Duration, burst int) (time.Duration, error)
	// SaveSnapshot records data read from Fly at readAt under key, unless a
	// newer snapshot is there; LoadSnapshot returns it (ErrNotFound if none).
	// Replicas share reads of Fly through them (the pools cache).
	SaveSnapshot(ctx context.Context, key string, data []byte, readAt time.Time) error
	LoadSnapshot(ctx context.Context, key string) (data []byte, readAt time.Time, err error)

	// Notifier is the store's change notices (see Notifier): every
	// CreateSession and UpdateSession publishes a SessionChange on
	// ChannelSessions, to this process (SQLite) or every replica (Postgres).
	Notifier() Notifier

	Close() error
}

// PendingDestroy is a machine that must be destroyed and was not yet.
type PendingDestroy struct {
	App, MachineID string
	Reason         string
	Since          time.Time
	Attempts       int
	LastError      string
}
