package flyemu

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// gunzip (the system's gzip when present) reads a stream back whole, reports
// a corrupt one at its end, and can be closed before the end.
func TestGunzip(t *testing.T) {
	dir := t.TempDir()
	want := bytes.Repeat([]byte("layer bytes "), 100000)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	open := func(name string, b []byte) *os.File {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	rc, err := gunzip(open("ok.gz", z.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("read %d bytes (want %d): %v", len(got), len(want), err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("close: %v", err)
	}

	// Cut short: an error, not a short layer taken for a whole one.
	rc, err = gunzip(open("cut.gz", z.Bytes()[:z.Len()/2]))
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil {
		t.Error("a truncated stream read without error")
	}

	// Closed early: the decompressor is stopped, Close returns.
	rc, err = gunzip(open("early.gz", z.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("early close: %v", err)
	}
}
