package agent

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestPTYMasterUsesThePoller: the master must be non-blocking and
// registered with the netpoller (deadlines work only then), so reads park a
// goroutine rather than an OS thread.
func TestPTYMasterUsesThePoller(t *testing.T) {
	master, tty, err := openPTY(80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer tty.Close()
	if err := master.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatalf("deadline on the pty master: %v", err)
	}
	if _, err := master.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
	p := &process{pty: master}
	if err := p.setSize(132, 43); err != nil {
		t.Fatal(err)
	}
	// Resizing must not have switched the master back to blocking mode.
	if err := master.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatalf("deadline after resize: %v", err)
	}
	if _, err := master.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after resize: %v", err)
	}
}
