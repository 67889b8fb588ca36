package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (x/sys/unix does not name it).
const fsImmutableFL = 0x10

// setImmutable sets or clears the immutable attribute of path (chattr +i),
// which makes the file unwritable even for root; the test is skipped where
// the file system or the privileges do not allow it.
func setImmutable(t *testing.T, path string, on bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("file attributes unsupported here: %v", err)
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		t.Skipf("cannot set file attributes here (needs root): %v", err)
	}
}

// TestSQLiteUnwritableFailsAtOpen: a store whose file cannot be written
// fails to open, loudly, instead of opening read-only (SQLite's silent
// fallback) and failing every write for the life of the process; once the
// file is writable again, it opens and takes writes.
func TestSQLiteUnwritableFailsAtOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	path := filepath.Join(t.TempDir(), "h.db")
	s, err := openSQLite(ctx, path, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	setImmutable(t, path, true)
	t.Cleanup(func() { setImmutable(t, path, false) })

	if s, err := openSQLite(ctx, path, ""); err == nil {
		s.Close()
		t.Fatal("opened an unwritable store")
	} else if !strings.Contains(err.Error(), "not writable") {
		t.Errorf("error %q does not say the store is not writable", err)
	}

	setImmutable(t, path, false)
	s, err = openSQLite(ctx, path, "")
	if err != nil {
		t.Fatalf("open after the file became writable: %v", err)
	}
	defer s.Close()
	if err := s.CreateTenant(ctx, &Tenant{Name: "t", KeyHash: []byte("k")}); err != nil {
		t.Fatalf("write after the file became writable: %v", err)
	}
}

// TestSQLiteWriterRecovers: a writer connection that went read-only (here
// by query_only, as SQLite's read-only fallback leaves it) is replaced on
// its first failure, so writes work again without a restart.
func TestSQLiteWriterRecovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := openSQLite(ctx, filepath.Join(t.TempDir(), "h.db"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// One writer connection: this pins it read-only.
	if _, err := s.w.ExecContext(ctx, "PRAGMA query_only = 1"); err != nil {
		t.Fatal(err)
	}
	err = s.CreateTenant(ctx, &Tenant{Name: "t1", KeyHash: []byte("k1")})
	if err != nil && !errors.Is(err, ErrConflict) {
		// One failed write is allowed; the next must succeed.
		t.Logf("first write after the writer broke: %v", err)
	}
	if err := s.CreateTenant(ctx, &Tenant{Name: "t2", KeyHash: []byte("k2")}); err != nil {
		t.Fatalf("writer did not recover: %v", err)
	}
}
