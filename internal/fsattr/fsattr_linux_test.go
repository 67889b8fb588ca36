package fsattr

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSetImmutable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SetImmutable(path, true); errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = SetImmutable(path, false) })
	if err := os.WriteFile(path, []byte("y"), 0o644); err == nil {
		t.Fatal("wrote an immutable file")
	}
	if err := SetImmutable(path, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("y"), 0o644); err != nil {
		t.Fatalf("write after clearing the attribute: %v", err)
	}
	if err := SetImmutable(filepath.Join(t.TempDir(), "missing"), true); err == nil || errors.Is(err, ErrUnsupported) {
		t.Fatalf("missing file: %v, want a plain error", err)
	}
}
