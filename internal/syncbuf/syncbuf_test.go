package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				_, _ = b.Write([]byte("ab"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if b.Len() != 8*100*2 || strings.Count(b.String(), "ab") != 800 {
		t.Fatalf("got %d bytes, %d runs of ab", b.Len(), strings.Count(b.String(), "ab"))
	}
}

func TestTail(t *testing.T) {
	var b Buffer
	if got := b.Tail(4); got != "" {
		t.Fatalf("empty buffer's tail = %q", got)
	}
	_, _ = b.Write([]byte("hello, world"))
	for _, c := range []struct {
		n    int
		want string
	}{{0, ""}, {5, "world"}, {12, "hello, world"}, {100, "hello, world"}} {
		if got := b.Tail(c.n); got != c.want {
			t.Errorf("Tail(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
