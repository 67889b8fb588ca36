package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/daemon/store/storetest"
)

func openStore(t *testing.T, dsn string) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sqliteDSN(t *testing.T) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "hangar.db")
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openStore(t, sqliteDSN(t)) })
}

// Two stores on one file stand for two processes sharing it: locking
// between them is SQLite's, through the busy timeout and retries.
func TestSQLiteReplicas(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		dsn := sqliteDSN(t)
		return openStore(t, dsn), openStore(t, dsn)
	}, false)
}

func TestPostgres(t *testing.T) {
	cluster := storetest.StartPostgres(t)
	t.Run("suite", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return openStore(t, storetest.CreateSchema(t, cluster)) })
	})
	t.Run("replicas", func(t *testing.T) {
		storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
			dsn := storetest.CreateSchema(t, cluster)
			return openStore(t, dsn), openStore(t, dsn)
		}, true)
	})
	t.Run("migrations", func(t *testing.T) {
		dsn := storetest.CreateDatabase(t, cluster)
		openConcurrently(t, dsn, 4)
		openStore(t, dsn) // and once more, later
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, migrationsQuery)
		if err == nil {
			defer rows.Close()
		}
		checkMigrations(t, rows, err)
	})
	t.Run("schemas_are_separate", func(t *testing.T) {
		// Two deployments in two schemas of one database: separate data,
		// separate leader locks.
		a := openStore(t, storetest.CreateSchema(t, cluster))
		b := openStore(t, storetest.CreateSchema(t, cluster))
		ctx := context.Background()
		if err := a.CreateTenant(ctx, &store.Tenant{Name: "same"}); err != nil {
			t.Fatal(err)
		}
		if err := b.CreateTenant(ctx, &store.Tenant{Name: "same"}); err != nil {
			t.Fatalf("a tenant name in one schema blocked it in another: %v", err)
		}
		okA, releaseA, err := a.TryLeader(ctx, "reconciler")
		if err != nil || !okA {
			t.Fatalf("TryLeader(a) = %v, %v", okA, err)
		}
		defer releaseA()
		okB, releaseB, err := b.TryLeader(ctx, "reconciler")
		if err != nil || !okB {
			t.Fatalf("TryLeader(b) in another schema = %v, %v; want granted", okB, err)
		}
		releaseB()
	})
	t.Run("notices_separate_and_survive_a_lost_listener", func(t *testing.T) {
		dsnA := storetest.CreateSchema(t, cluster)
		a, a2 := openStore(t, dsnA), openStore(t, dsnA)
		b := openStore(t, storetest.CreateSchema(t, cluster))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		msgs := make(chan string, 16)
		defer a2.Notifier().Subscribe("t", func(m string) {
			select {
			case msgs <- m:
			default:
			}
		})()
		next := func() string {
			t.Helper()
			select {
			case m := <-msgs:
				return m
			case <-ctx.Done():
				t.Fatal("no notice")
				return ""
			}
		}
		// Another schema's notices are not this one's.
		if err := b.Notifier().Publish(ctx, "t", "from-b"); err != nil {
			t.Fatal(err)
		}
		if err := a.Notifier().Publish(ctx, "t", "from-a"); err != nil {
			t.Fatal(err)
		}
		if m := next(); m != "from-a" {
			t.Fatalf("got %q, want from-a (and never from-b)", m)
		}
		// Kill every listener connection: subscribers hear that notices
		// may be lost, once at the loss and once listening again; then
		// notices flow again.
		conn, err := pgx.Connect(ctx, dsnA)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'`); err != nil {
			t.Fatal(err)
		}
		for lost := 0; lost < 2; {
			if next() == store.Lost {
				lost++
			}
		}
		if err := a.Notifier().Publish(ctx, "t", "again"); err != nil {
			t.Fatal(err)
		}
		if m := next(); m != "again" {
			t.Fatalf("after reconnecting got %q, want again", m)
		}
	})
	t.Run("missing_schema", func(t *testing.T) {
		dsn := storetest.CreateDatabase(t, cluster) + "&search_path=nope"
		if s, err := store.Open(context.Background(), dsn); err == nil {
			s.Close()
			t.Fatal("Open with a search_path naming no schema succeeded")
		}
	})
	t.Run("open_dsn", func(t *testing.T) {
		dsn := storetest.CreateDatabase(t, cluster)
		for _, d := range []string{dsn, "postgresql" + strings.TrimPrefix(dsn, "postgres")} {
			s := openStore(t, d)
			if err := s.CreateTenant(context.Background(), &store.Tenant{Name: "x" + d[:10]}); err != nil {
				t.Fatalf("store from %s: %v", d, err)
			}
		}
	})
}

// versionRows is a result set of either driver (*sql.Rows, pgx.Rows).
type versionRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

const migrationsQuery = `SELECT version FROM schema_migrations ORDER BY version`

// openConcurrently opens n stores on one fresh database at once: the
// migrations must run once, and no Open may fail.
func openConcurrently(t *testing.T, dsn string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := store.Open(context.Background(), dsn)
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
}

// checkMigrations reads rows (from migrationsQuery, or the error running it)
// and wants versions 1..n, each once.
func checkMigrations(t *testing.T, rows versionRows, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	var versions []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("read schema_migrations: %v", err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	if len(versions) == 0 {
		t.Fatal("schema_migrations is empty")
	}
	for i, v := range versions {
		if v != i+1 {
			t.Fatalf("schema_migrations versions = %v; want 1..%d each once", versions, len(versions))
		}
	}
}

func TestSQLiteMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	openConcurrently(t, "sqlite://"+path, 4)
	openStore(t, path)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(migrationsQuery)
	if err == nil {
		defer rows.Close()
	}
	checkMigrations(t, rows, err)
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestOpenSQLiteDSNs(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cases := []struct{ dsn, file string }{
		{"sqlite://" + filepath.Join(dir, "abs.db"), filepath.Join(dir, "abs.db")},
		{"sqlite://relative.db", filepath.Join(dir, "relative.db")},
		{"sqlite://" + filepath.Join(dir, "q.db") + "?_pragma=cache_size(-4000)", filepath.Join(dir, "q.db")},
		{filepath.Join(dir, "plain.db"), filepath.Join(dir, "plain.db")},
		{"plain-relative.db", filepath.Join(dir, "plain-relative.db")},
		{"file:" + filepath.Join(dir, "uri.sqlite") + "?mode=rwc", filepath.Join(dir, "uri.sqlite")},
	}
	for _, tc := range cases {
		s := openStore(t, tc.dsn)
		if err := s.CreateTenant(context.Background(), &store.Tenant{Name: "t"}); err != nil {
			t.Fatalf("%s: CreateTenant: %v", tc.dsn, err)
		}
		if _, err := os.Stat(tc.file); err != nil {
			t.Fatalf("%s: database file %s not created: %v", tc.dsn, tc.file, err)
		}
	}
}

// Another process holding the write lock longer than the busy timeout
// delays a write; it does not fail it.
func TestSQLiteRetriesWhenBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.db")
	s := openStore(t, "sqlite://"+path+"?_busy_timeout=20")
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.SetMaxOpenConns(1)
	ctx := context.Background()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO daemons (id, last_seen) VALUES ('other', '2030-01-01T00:00:00.000000Z')`); err != nil {
		t.Fatal(err)
	}
	// The lock is held for many busy timeouts, then committed.
	committed := make(chan error, 1)
	time.AfterFunc(300*time.Millisecond, func() {
		_, err := conn.ExecContext(ctx, `COMMIT`)
		committed <- err
	})
	if err := s.CreateTenant(ctx, &store.Tenant{Name: "patient"}); err != nil {
		t.Fatalf("CreateTenant while another connection held the lock: %v", err)
	}
	if err := <-committed; err != nil {
		t.Fatalf("commit of the other connection: %v", err)
	}
	if dead, err := s.DeadDaemons(ctx, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil || len(dead) != 1 {
		t.Fatalf("the other connection's write = %v, %v; want [other]", dead, err)
	}
}

func TestSQLiteFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.db")
	s := openStore(t, path)
	if err := s.CreateTenant(context.Background(), &store.Tenant{Name: "t", KeyHash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want no access for group and others", p, fi.Mode().Perm())
		}
	}
}

func TestOpenBadDSNs(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{
		"",
		"mysql://user@host/db",
		"postgress://admin:hunter2@host/db",
		"hangar.txt",
		"sqlite://",
		"file:",
		"sqlite://:memory:",
		"file::memory:?cache=shared",
		"file:x.db?mode=memory",
		"sqlite:///nonexistent-dir-for-hangar-test/x.db",
		"postgres://admin:hunter2@[::1/db",
	} {
		s, err := store.Open(ctx, dsn)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded; want an error", dsn)
			continue
		}
		if s != nil {
			t.Errorf("Open(%q) returned a store with its error", dsn)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error leaks the password: %v", dsn, err)
		}
	}
	s, err := store.Open(ctx, "mysql://x")
	if err == nil || !strings.Contains(err.Error(), "postgres://") || !strings.Contains(err.Error(), "sqlite://") {
		t.Fatalf("error for an unknown scheme should name the accepted forms: %v (store %v)", err, s)
	}
}

func TestContextCancelled(t *testing.T) {
	s := openStore(t, sqliteDSN(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetTenant(ctx, "x"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetTenant with a cancelled context = %v; want the context's error", err)
	}
}
