package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteTime is how SQLite stores a time: fixed-width UTC text, so that
// string order is time order.
const sqliteTime = "2006-01-02T15:04:05.000000Z"

// busyTimeout is how long one SQLite statement waits for another
// connection's (or process's) lock before SQLITE_BUSY; writes retry on top.
const busyTimeout = 10 * time.Second

// sqliteStore keeps everything in one SQLite file in WAL mode. All writes go
// through a single connection in IMMEDIATE transactions, so goroutines of
// one process queue for it instead of failing with SQLITE_BUSY; reads use a
// separate pool and never wait for the writer. Other processes on the same
// file wait up to busyTimeout, and writes retry SQLITE_BUSY until ctx ends.
type sqliteStore struct {
	sqlCommon
	w, r *sql.DB
	rate localRate

	closeOnce sync.Once
	closeErr  error
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date. The directory must exist.
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	return asStore(openSQLite(ctx, path, ""))
}

func openSQLite(ctx context.Context, path, userQuery string) (*sqliteStore, error) {
	q, err := url.ParseQuery(userQuery)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: bad query %q: %w", path, userQuery, err)
	}
	if path == ":memory:" || strings.EqualFold(q.Get("mode"), "memory") {
		return nil, fmt.Errorf("open sqlite %s: in-memory databases are not supported (readers and the writer must share one file)", path)
	}
	// The file holds key hashes and session metadata: create it private.
	// SQLite gives its -wal and -shm files the same mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if q.Get("_busy_timeout") == "" && q.Get("_timeout") == "" {
		q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	}
	q.Set("_foreign_keys", "1")
	q.Set("_synchronous", "NORMAL") // durable across crashes of the process in WAL mode
	wq := cloneValues(q)
	wq.Set("_journal_mode", "WAL")
	wq.Set("_txlock", "immediate")
	w, err := sql.Open("sqlite", "file:"+path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &sqliteStore{w: w}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// SQLite opens a file it cannot write read-only without a word, and
	// then every write of the process fails. Fail here instead, loudly.
	if err := s.probeWrite(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: the store is not writable (check the file's and its directory's permissions and free space): %w", path, err)
	}
	// Readers open after the writer has switched the file to WAL.
	r, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	s.r = r
	s.sqlCommon = sqlCommon{
		d:        sqliteDialect,
		isUnique: isSQLiteUnique,
		queryRow: func(ctx context.Context, q string, args ...any) scanner { return r.QueryRowContext(ctx, q, args...) },
		query: func(ctx context.Context, q string, args ...any) (rowIter, func(), error) {
			rows, err := r.QueryContext(ctx, q, args...)
			if err != nil {
				return nil, nil, err
			}
			return rows, func() { rows.Close() }, nil
		},
		exec: s.execTx,
		inTx: func(ctx context.Context, fn func(txOps) error) error {
			return s.tx(ctx, func(tx *sql.Tx) error { return fn(sqlTxOps(tx)) })
		},
	}
	return s, nil
}

func cloneValues(v url.Values) url.Values {
	c := url.Values{}
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// sqliteDialect binds times as fixed-width text. A row read for update needs
// no lock clause: every write transaction is IMMEDIATE and so already holds
// the file's write lock.
var sqliteDialect = dialect{
	ph:   func(int) string { return "?" },
	time: func(t time.Time) any { return fmtSQLiteTime(t) },
	json: textOrNil,
}

func (s *sqliteStore) migrate(ctx context.Context) error {
	migs, err := loadMigrations("migrations/sqlite")
	if err != nil {
		return err
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TEXT NOT NULL)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	// Each migration runs in its own IMMEDIATE transaction, which holds the
	// file's write lock: a second process opening the file at the same time
	// waits, then finds the version recorded and skips it.
	for _, m := range migs {
		err := s.tx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
				return fmt.Errorf("check migration %s: %w", m.name, err)
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, fmtSQLiteTime(now())); err != nil {
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

// tx runs fn in an IMMEDIATE transaction on the writer connection, and runs
// it again from the start if SQLite reports the file busy (another process
// holding the lock past the busy timeout).
func (s *sqliteStore) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	backoff := 5 * time.Millisecond
	for {
		err := s.tx1(ctx, fn)
		if !isSQLiteBusy(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

func sqlTxOps(tx *sql.Tx) txOps {
	return txOps{
		queryRow: func(ctx context.Context, q string, args ...any) scanner { return tx.QueryRowContext(ctx, q, args...) },
		exec: func(ctx context.Context, q string, args ...any) (int64, error) {
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		},
	}
}

// execTx runs one statement in a transaction of its own, as tx does.
func (s *sqliteStore) execTx(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = sqlTxOps(tx).exec(ctx, q, args...)
		return err
	})
	return n, err
}

// tx1 runs fn in one IMMEDIATE transaction. A writer connection that
// fails in a way that sticks to the connection (read-only, I/O error, file
// gone) is discarded, so the next transaction opens a fresh one: a store
// whose disk filled up or whose file was briefly unwritable recovers
// without a restart. tx1 then tries once more on the fresh connection.
func (s *sqliteStore) tx1(ctx context.Context, fn func(*sql.Tx) error) error {
	err := s.txOnConn(ctx, fn)
	if isSQLiteSticky(err) && ctx.Err() == nil {
		err = s.txOnConn(ctx, fn)
	}
	return err
}

func (s *sqliteStore) txOnConn(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("writer connection: %w", err)
	}
	defer func() {
		if isSQLiteSticky(err) {
			// driver.ErrBadConn from Raw makes database/sql close the
			// connection instead of returning it to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// probeWrite writes the database header (the user version, unchanged), the
// smallest write that fails on a read-only file.
func (s *sqliteStore) probeWrite(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var v int64
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return fmt.Errorf("read user_version: %w", err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
			return fmt.Errorf("write user_version: %w", err)
		}
		return nil
	})
}

func sqliteCode(err error) (int, bool) {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code(), true
	}
	return 0, false
}

func isSQLiteBusy(err error) bool {
	code, ok := sqliteCode(err)
	return ok && (code&0xff == sqlite3.SQLITE_BUSY || code&0xff == sqlite3.SQLITE_LOCKED)
}

// isSQLiteSticky reports errors that may stay with a connection until it
// is reopened: SQLite keeps a connection that fell back to read-only that
// way, and I/O errors can leave its file handles unusable.
func isSQLiteSticky(err error) bool {
	code, ok := sqliteCode(err)
	if !ok {
		return false
	}
	switch code & 0xff {
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL:
		return true
	}
	return false
}

func isSQLiteUnique(err error) bool {
	code, ok := sqliteCode(err)
	return ok && (code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func fmtSQLiteTime(t time.Time) string { return normTime(t).Format(sqliteTime) }

func parseSQLiteTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// Tickets.

func (s *sqliteStore) UseTicket(ctx context.Context, hash []byte, sessionID string, at time.Time) (*Ticket, error) {
	if len(hash) == 0 || sessionID == "" {
		return nil, fmt.Errorf("use ticket: %w", ErrTicketInvalid)
	}
	var t *Ticket
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = scanTicket(tx.QueryRowContext(ctx, `UPDATE tickets SET uses_left = uses_left - 1
			WHERE hash = ? AND session_id = ? AND uses_left > 0 AND expires_at > ?
			RETURNING `+ticketReturning, hash, sessionID, fmtSQLiteTime(at)), hash)
		if isNoRows(err) {
			return ErrTicketInvalid
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("use ticket: %w", err)
	}
	return t, nil
}

// Leadership.

// TryLeader always grants leadership: a SQLite store serves one replica.
func (s *sqliteStore) TryLeader(ctx context.Context, name string) (bool, func(), error) {
	if err := ctx.Err(); err != nil {
		return false, func() {}, fmt.Errorf("try leader %s: %w", name, err)
	}
	return true, func() {}, nil
}

// Columns lists every table's columns, for the test that no column holds a
// credential.
func (s *sqliteStore) Columns(ctx context.Context) (map[string][]string, error) {
	return s.columns(ctx, `SELECT m.name, p.name FROM sqlite_schema m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid`)
}

func (s *sqliteStore) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		errs = append(errs, s.w.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
