package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Notifier carries short change notices between the users of one store:
// within the process for SQLite (one replica), and across every replica for
// Postgres (LISTEN/NOTIFY). It is the push half of the store, after coder's
// coderd/database/pubsub: a notice says "look again", never what the data
// is, and the store stays the truth. Notices can be lost (a replica that
// dies between its commit and its notice, a listener connection that
// breaks), so a subscriber keeps a slow safety poll as a backstop.
type Notifier interface {
	// Subscribe calls fn with the message of every notice published on
	// channel, until cancel is called (calling it again is harmless). fn
	// runs on the notifier's own goroutine, or the publisher's: it must
	// return at once (typically a non-blocking send on a channel) and must
	// not call the notifier. fn(Lost) says notices may have been missed
	// (the Postgres listener reconnected): re-read whatever is watched.
	Subscribe(channel string, fn func(msg string)) (cancel func())
	// Publish sends msg (at most a few hundred bytes) to every subscriber
	// of channel, on every replica of the store.
	Publish(ctx context.Context, channel, msg string) error
}

// Lost is the message a subscriber gets when notices may have been lost.
const Lost = ""

// ChannelSessions carries a SessionChange for every session created or
// updated through the store.
const ChannelSessions = "sessions"

// SessionChange is the notice of one session write: enough to decide
// whether to re-read, never the session itself.
type SessionChange struct {
	ID, TenantID, Pool, Owner string
	State                     SessionState
}

// String encodes the change as a notice message.
func (c SessionChange) String() string {
	return strings.Join([]string{c.ID, c.TenantID, c.Pool, c.Owner, string(c.State)}, " ")
}

// ParseSessionChange decodes a ChannelSessions message; ok is false for
// Lost or a message it cannot read, which the caller treats alike: re-read.
func ParseSessionChange(msg string) (c SessionChange, ok bool) {
	f := strings.Split(msg, " ")
	if len(f) != 5 || f[0] == "" {
		return SessionChange{}, false
	}
	return SessionChange{ID: f[0], TenantID: f[1], Pool: f[2], Owner: f[3], State: SessionState(f[4])}, true
}

// publishSession sends the notice of a session write. It runs after the
// write committed, on a context of its own: a caller that goes away right
// after its write must not swallow the notice.
func publishSession(ctx context.Context, n Notifier, s *Session) {
	if n == nil || s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// A notice that cannot be sent is a lost notice: subscribers' safety
	// polls find the change.
	_ = n.Publish(ctx, ChannelSessions, SessionChange{ID: s.ID, TenantID: s.TenantID, Pool: s.Pool, Owner: s.Owner, State: s.State}.String())
}

// localNotifier fans notices out within the process.
type localNotifier struct {
	mu   sync.Mutex
	next int
	subs map[string]map[int]func(string)
}

func newLocalNotifier() *localNotifier {
	return &localNotifier{subs: map[string]map[int]func(string){}}
}

func (n *localNotifier) Subscribe(channel string, fn func(string)) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := n.next
	n.next++
	if n.subs[channel] == nil {
		n.subs[channel] = map[int]func(string){}
	}
	n.subs[channel][id] = fn
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.subs[channel], id)
	}
}

func (n *localNotifier) Publish(_ context.Context, channel, msg string) error {
	n.deliver(channel, msg)
	return nil
}

// deliver calls channel's subscribers with msg, outside the lock (a
// subscriber may cancel itself from fn's goroutine meanwhile).
func (n *localNotifier) deliver(channel, msg string) {
	n.mu.Lock()
	fns := make([]func(string), 0, len(n.subs[channel]))
	for _, fn := range n.subs[channel] {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(msg)
	}
}

// lost tells every subscriber of every channel that notices may be lost.
func (n *localNotifier) lost() {
	n.mu.Lock()
	var fns []func(string)
	for _, subs := range n.subs {
		for _, fn := range subs {
			fns = append(fns, fn)
		}
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(Lost)
	}
}

// pgNotifier carries notices across replicas with Postgres LISTEN/NOTIFY.
// Every notice travels on one Postgres channel per schema (channels are
// database-wide; deployments sharing a database in separate schemas must
// not hear each other), as "<channel> <msg>"; one listener connection per
// store receives them all, the publisher's own included, and fans them out
// in process.
type pgNotifier struct {
	local   *localNotifier
	pool    *pgxpool.Pool
	channel string // the Postgres channel
	cancel  context.CancelFunc
	done    chan struct{}
}

// pgChannel is the Postgres channel of a schema's notices.
func pgChannel(schema string) string {
	h := fnv.New64a()
	h.Write([]byte(schema))
	return fmt.Sprintf("hangar_notices_%x", h.Sum64())
}

// startPgNotifier listens before it returns, so that nothing published
// after OpenPostgres returns is missed; then it keeps listening in the
// background, reconnecting (and telling subscribers notices may be lost)
// when its connection breaks.
func startPgNotifier(ctx context.Context, pool *pgxpool.Pool, schema string) (*pgNotifier, error) {
	n := &pgNotifier{local: newLocalNotifier(), pool: pool, channel: pgChannel(schema), done: make(chan struct{})}
	conn, err := n.listen(ctx)
	if err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go n.run(bg, conn)
	return n, nil
}

func (n *pgNotifier) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, n.pool.Config().ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("listen for notices: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen for notices: %w", err)
	}
	return conn, nil
}

func (n *pgNotifier) run(ctx context.Context, conn *pgx.Conn) {
	defer close(n.done)
	backoff := 100 * time.Millisecond
	for {
		for conn != nil {
			nt, err := conn.WaitForNotification(ctx)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				break
			}
			backoff = 100 * time.Millisecond
			if channel, msg, ok := strings.Cut(nt.Payload, " "); ok {
				n.local.deliver(channel, msg)
			}
		}
		if ctx.Err() != nil {
			return
		}
		// Whatever was published while the connection was down is gone.
		n.local.lost()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		c, err := n.listen(ctx)
		if err == nil {
			conn = c
			n.local.lost() // and whatever came between the loss and LISTEN
		}
	}
}

func (n *pgNotifier) Subscribe(channel string, fn func(string)) func() {
	return n.local.Subscribe(channel, fn)
}

func (n *pgNotifier) Publish(ctx context.Context, channel, msg string) error {
	if strings.Contains(channel, " ") {
		return errors.New("publish: a channel name has no spaces")
	}
	if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, n.channel, channel+" "+msg); err != nil {
		return fmt.Errorf("publish on %s: %w", channel, err)
	}
	return nil
}

// close stops listening.
func (n *pgNotifier) close() {
	n.cancel()
	<-n.done
}
