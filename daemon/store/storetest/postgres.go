package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// StartPostgres starts a throw-away PostgreSQL cluster for t and returns
// the DSN of an empty database in it, "postgres:///hangar?host=<dir>&…".
// The cluster listens only on a unix socket in its own temp dir, trusts
// local connections, and is shut down (immediate mode) and removed when t
// ends; the postmaster also dies with the test process.
//
// initdb and postgres refuse to run as root: as root the cluster runs as
// the "postgres" user, in a directory handed to it. Without initdb (on PATH
// or in /usr/lib/postgresql/*/bin) the test fails: CI machines have it
// (Debian: apt-get install postgresql).
//
// With -short (make test-unit) it skips t instead: the inner loop needs no
// PostgreSQL.
func StartPostgres(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short (make test-unit): PostgreSQL tests run in make test")
	}
	bin, err := postgresBinDir()
	if err != nil {
		t.Fatalf("storetest: cannot start PostgreSQL: %v", err)
	}
	var cred *syscall.Credential
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("storetest: running as root, PostgreSQL must run as the user \"postgres\": %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir: its parents are 0700 root and the socket path must stay
	// short (unix socket paths are limited to 107 bytes).
	base := "/tmp"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "hangar-pg-") //nolint:usetesting // see above: t.TempDir is unfit
	if err != nil {
		t.Fatalf("storetest: make postgres dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("storetest: chmod %s: %v", dir, err)
	}
	if cred != nil {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("storetest: chown %s to postgres: %v", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("storetest: create %s: %v", logPath, err)
	}
	defer logf.Close()

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("storetest: initdb: %v\n%s", err, out)
	}

	port := 20000 + rand.IntN(40000) // only names the socket file: no TCP listener
	pg := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	pg.Dir = dir
	pg.Stdout, pg.Stderr = logf, logf
	pg.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// Pdeathsig fires when the OS thread that started the child exits, not
	// the process: start it from a locked thread that lives as long as the
	// postmaster does.
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := pg.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = pg.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		t.Fatalf("storetest: start postgres: %v", err)
	}
	t.Cleanup(func() {
		// SIGQUIT is pg_ctl's "immediate" shutdown.
		_ = pg.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-pg.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	admin := fmt.Sprintf("postgres:///postgres?host=%s&port=%d&user=postgres&sslmode=disable", url.QueryEscape(dir), port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn *pgx.Conn
	for {
		conn, err = pgx.Connect(ctx, admin)
		if err == nil {
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("storetest: postgres exited during start-up:\n%s", b)
		case <-ctx.Done():
			b, _ := os.ReadFile(logPath)
			t.Fatalf("storetest: postgres did not accept connections in time: %v\n%s", err, b)
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE DATABASE hangar`); err != nil {
		t.Fatalf("storetest: create database: %v", err)
	}
	return withDatabase(admin, "hangar")
}

var dbSeq atomic.Int64

// CreateDatabase creates a fresh, empty database in the cluster that dsn
// points at (for example one from StartPostgres) and returns its DSN. The
// database is left to die with the cluster.
func CreateDatabase(t testing.TB, dsn string) string {
	t.Helper()
	name := fmt.Sprintf("hangar_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("storetest: connect to create a database: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("storetest: create database %s: %v", name, err)
	}
	return withDatabase(dsn, name)
}

var schemaSeq atomic.Int64

// CreateSchema creates a fresh, empty schema in the database that dsn
// points at and returns a DSN whose connections use it (search_path). It is
// a thousand times cheaper than CreateDatabase; stores in different schemas
// of one database are fully separate (their advisory locks included).
func CreateSchema(t testing.TB, dsn string) string {
	t.Helper()
	name := fmt.Sprintf("hangar_%d_%d", os.Getpid(), schemaSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("storetest: connect to create a schema: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("storetest: create schema %s: %v", name, err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("storetest: dsn is not a URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name) // pgx sends unknown parameters as run-time settings
	u.RawQuery = q.Encode()
	return u.String()
}

func withDatabase(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(fmt.Sprintf("storetest: dsn %q is not a URL: %v", dsn, err))
	}
	u.Path = "/" + name
	return u.String()
}

// postgresBinDir finds the directory holding initdb and postgres.
func postgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Debian links initdb into PATH; the real directory also holds
		// postgres, which may be absent from PATH.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			if dir := filepath.Dir(real); hasPostgres(dir) {
				return dir, nil
			}
		}
		if dir := filepath.Dir(p); hasPostgres(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasPostgres(dir) {
			return dir, nil
		}
	}
	return "", errors.New("initdb and postgres not found on PATH nor in /usr/lib/postgresql/*/bin; install PostgreSQL (Debian: apt-get install postgresql)")
}

func hasPostgres(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(strings.Split(filepath.Base(filepath.Dir(binDir)), ".")[0])
	return v
}
