package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgStore keeps hangard's state in Postgres, shared by any number of
// replicas. Compare-and-set goes through SELECT … FOR UPDATE; leadership is a
// session advisory lock held on a connection of its own.
type pgStore struct {
	sqlCommon
	pool   *pgxpool.Pool
	schema string // current_schema() of the store's connections

	rateCalls atomic.Int64 // ReserveRate calls, to sweep idle buckets now and then

	mu      sync.Mutex // guards leaders, idle and closed
	leaders map[string]*pgLeader
	idle    []*pgx.Conn // lock connections holding no lock, for reuse
	closed  bool
}

// pgLeader is one advisory lock this store holds, on its own connection.
type pgLeader struct {
	mu   sync.Mutex // a pgx.Conn is not safe for concurrent use
	key  int64
	conn *pgx.Conn
}

// lockKey maps a name to an advisory lock key. Advisory locks are scoped to
// a database, so the key includes the schema: deployments that share a
// database in separate schemas do not share locks.
func (s *pgStore) lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("hangar\x00" + s.schema + "\x00" + name))
	return int64(h.Sum64())
}

// OpenPostgres connects to Postgres (a postgres:// or postgresql:// URL, or
// a key=value connection string) and brings the schema up to date.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from its parse errors.
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgx's default (the number of CPUs, at least 4) is small for a
		// daemon whose claim workers and HTTP handlers all use the store.
		cfg.MaxConns = 10
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &pgStore{pool: pool, leaders: map[string]*pgLeader{}}
	s.sqlCommon = sqlCommon{
		d:        pgDialect,
		isUnique: isPgUnique,
		queryRow: func(ctx context.Context, q string, args ...any) scanner { return pool.QueryRow(ctx, q, args...) },
		query: func(ctx context.Context, q string, args ...any) (rowIter, func(), error) {
			rows, err := pool.Query(ctx, q, args...)
			if err != nil {
				return nil, nil, err
			}
			return rows, rows.Close, nil
		},
		exec: func(ctx context.Context, q string, args ...any) (int64, error) {
			tag, err := pool.Exec(ctx, q, args...)
			return tag.RowsAffected(), err
		},
		inTx: func(ctx context.Context, fn func(txOps) error) error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return fn(pgTxOps(tx)) })
		},
	}
	var schema *string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if schema == nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: no schema selected (the search_path names no existing schema)")
	}
	s.schema = *schema
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return s, nil
}

func (s *pgStore) migrate(ctx context.Context) (err error) {
	migs, err := loadMigrations("migrations/postgres")
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	// Replicas starting together take turns: the lock is held across every
	// migration, and even CREATE TABLE IF NOT EXISTS is not safe to race.
	migrationLockKey := s.lockKey("schema_migrations")
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("migrate: take lock: %w", err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockKey); uerr != nil {
			// The lock dies with the session: make sure the session does.
			conn.Hijack().Close(context.Background())
			if err == nil {
				err = fmt.Errorf("migrate: release lock: %w", uerr)
			}
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for _, m := range migs {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return fmt.Errorf("check migration %s: %w", m.name, err)
			}
			if n > 0 {
				return nil
			}
			// No arguments: pgx uses the simple protocol, which runs a
			// multi-statement script.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// pgDialect binds times as timestamptz; a row read for update is locked
// until its transaction ends.
var pgDialect = dialect{
	ph:      func(n int) string { return fmt.Sprintf("$%d", n) },
	time:    func(t time.Time) any { return normTime(t) },
	json:    jsonOrNil,
	lockRow: " FOR UPDATE",
}

func pgTxOps(tx pgx.Tx) txOps {
	return txOps{
		queryRow: func(ctx context.Context, q string, args ...any) scanner { return tx.QueryRow(ctx, q, args...) },
		exec: func(ctx context.Context, q string, args ...any) (int64, error) {
			tag, err := tx.Exec(ctx, q, args...)
			return tag.RowsAffected(), err
		},
	}
}

func isPgUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// Tickets.

func (s *pgStore) UseTicket(ctx context.Context, hash []byte, sessionID string, at time.Time) (*Ticket, error) {
	if len(hash) == 0 || sessionID == "" {
		return nil, fmt.Errorf("use ticket: %w", ErrTicketInvalid)
	}
	// One statement: the row lock taken by UPDATE makes racing uses queue,
	// and each re-checks uses_left after the one before it committed.
	t, err := scanTicket(s.pool.QueryRow(ctx, `UPDATE tickets SET uses_left = uses_left - 1
		WHERE hash = $1 AND session_id = $3 AND uses_left > 0 AND expires_at > $2
		RETURNING `+ticketReturning, hash, normTime(at), sessionID), hash)
	if isNoRows(err) {
		return nil, fmt.Errorf("use ticket: %w", ErrTicketInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("use ticket: %w", err)
	}
	return t, nil
}

// Leadership.

// TryLeader takes the session advisory lock for name on a connection of its
// own, held until release (or Close). The lock is exclusive across stores
// and within one: while this store holds name, TryLeader(name) answers false
// here too, so the lock doubles as a cluster-wide mutex.
func (s *pgStore) TryLeader(ctx context.Context, name string) (bool, func(), error) {
	noop := func() {}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, noop, fmt.Errorf("try leader %s: store closed", name)
	}
	_, held := s.leaders[name]
	s.mu.Unlock()
	if held {
		return false, noop, nil
	}
	key := s.lockKey("leader:" + name)
	conn, ok, err := s.tryLock(ctx, key)
	if err != nil {
		return false, noop, fmt.Errorf("try leader %s: %w", name, err)
	}
	if !ok {
		s.putLockConn(conn)
		return false, noop, nil
	}
	l := &pgLeader{key: key, conn: conn}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.unlockAndPut(l)
		return false, noop, fmt.Errorf("try leader %s: store closed", name)
	}
	s.leaders[name] = l
	s.mu.Unlock()
	return true, func() { s.release(name, l) }, nil
}

// tryLock runs pg_try_advisory_lock on an idle lock connection, or on a new
// one if there is none or the idle one turns out dead.
func (s *pgStore) tryLock(ctx context.Context, key int64) (*pgx.Conn, bool, error) {
	s.mu.Lock()
	var conn *pgx.Conn
	if n := len(s.idle); n > 0 {
		conn = s.idle[n-1]
		s.idle = s.idle[:n-1]
	}
	s.mu.Unlock()
	if conn != nil {
		var ok bool
		err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok)
		if err == nil {
			return conn, ok, nil
		}
		conn.Close(context.Background())
		if ctx.Err() != nil {
			return nil, false, err
		}
	}
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, false, fmt.Errorf("connect: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		conn.Close(context.Background())
		return nil, false, err
	}
	return conn, ok, nil
}

// maxIdleLockConns bounds the connections kept for the next TryLeader, so
// that polling for a lock does not open a connection each time.
const maxIdleLockConns = 2

// putLockConn keeps a connection that holds no lock for reuse, or closes it.
func (s *pgStore) putLockConn(conn *pgx.Conn) {
	s.mu.Lock()
	if !s.closed && len(s.idle) < maxIdleLockConns && !conn.IsClosed() {
		s.idle = append(s.idle, conn)
		conn = nil
	}
	s.mu.Unlock()
	if conn != nil {
		conn.Close(context.Background())
	}
}

// release gives up one held lock. The explicit unlock means another replica
// can take it as soon as this returns; if the unlock fails the connection is
// closed, and the lock dies with its session.
func (s *pgStore) release(name string, l *pgLeader) {
	s.mu.Lock()
	if s.leaders[name] == l {
		delete(s.leaders, name)
	}
	s.mu.Unlock()
	s.unlockAndPut(l)
}

func (s *pgStore) unlockAndPut(l *pgLeader) {
	l.mu.Lock()
	conn := l.conn
	l.conn = nil
	l.mu.Unlock()
	if conn == nil {
		return // released before
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var unlocked bool
	if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, l.key).Scan(&unlocked); err != nil || !unlocked {
		conn.Close(ctx)
		return
	}
	s.putLockConn(conn)
}

// Columns lists every table's columns, for the test that no column holds a
// credential.
func (s *pgStore) Columns(ctx context.Context) (map[string][]string, error) {
	return s.columns(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`)
}

// Close releases every leader lock this store holds and closes its pool.
func (s *pgStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	held := s.leaders
	s.leaders = map[string]*pgLeader{}
	s.mu.Unlock()
	for _, l := range held {
		s.unlockAndPut(l) // closed: the connection is closed, not kept
	}
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, c := range idle {
		c.Close(context.Background())
	}
	s.pool.Close()
	return nil
}
