package broker

import (
	"bytes"
	"testing"
)

func joined(chunks [][]byte) string { return string(bytes.Join(chunks, nil)) }

func TestInputLogPTY(t *testing.T) {
	l := newInputLog(false, 10)
	l.reset(100)
	for _, s := range []string{"ab", "cd", "efg"} {
		l.append([]byte(s))
	}
	for _, tc := range []struct {
		off  int64
		want string
		ok   bool
	}{
		{100, "abcdefg", true},
		{101, "bcdefg", true},
		{104, "efg", true},
		{105, "fg", true},
		{107, "", true},
		{99, "", false},
		{108, "", false},
	} {
		got, ok := l.since(tc.off)
		if ok != tc.ok || joined(got) != tc.want {
			t.Errorf("since(%d) = %q, %v; want %q, %v", tc.off, joined(got), ok, tc.want, tc.ok)
		}
	}

	l.trim(103)
	if got, ok := l.since(103); !ok || joined(got) != "defg" {
		t.Fatalf("after trim: %q %v", joined(got), ok)
	}
	if _, ok := l.since(102); ok {
		t.Fatal("trimmed input still offered")
	}
	if l.size != 4 {
		t.Fatalf("size = %d", l.size)
	}
}

func TestInputLogPTYEvictsOldest(t *testing.T) {
	l := newInputLog(false, 8)
	big := bytes.Repeat([]byte("x"), coalesceLimit) // fills one chunk
	l.append(big)
	l.append([]byte("12345"))
	// The big chunk exceeds the budget together with the newer one: it goes.
	if l.start != int64(len(big)) || l.size != 5 {
		t.Fatalf("start=%d size=%d", l.start, l.size)
	}
	if got, ok := l.since(l.start); !ok || joined(got) != "12345" {
		t.Fatalf("since = %q %v", joined(got), ok)
	}
	// The newest chunk is kept even alone over budget.
	l.append(bytes.Repeat([]byte("y"), 20))
	if l.size != 25 {
		t.Fatalf("size = %d", l.size)
	}
	if l.end != int64(len(big))+25 {
		t.Fatalf("end = %d", l.end)
	}
}

func TestInputLogJSONL(t *testing.T) {
	l := newInputLog(true, 1<<20)
	l.reset(5)
	l.append([]byte(`{"n":5}`))
	l.append([]byte(`{"n":6}`))
	l.append([]byte(`{"n":7}`))
	if l.end != 8 {
		t.Fatalf("end = %d, want 8 (lines)", l.end)
	}
	got, ok := l.since(6)
	if !ok || len(got) != 2 || string(got[0]) != `{"n":6}` {
		t.Fatalf("since(6) = %q %v", got, ok)
	}
	l.trim(7)
	if got, ok := l.since(7); !ok || len(got) != 1 || string(got[0]) != `{"n":7}` {
		t.Fatalf("after trim: %q %v", got, ok)
	}
	l.trim(100)
	if l.start != 8 || l.size != 0 || len(l.chunks) != 0 {
		t.Fatalf("trim past end: %+v", l)
	}
}

func TestInputLogCopiesInput(t *testing.T) {
	l := newInputLog(false, 100)
	b := []byte("abc")
	l.append(b)
	b[0] = 'X'
	if got, _ := l.since(0); joined(got) != "abc" {
		t.Fatalf("log aliases the caller's buffer: %q", joined(got))
	}
}
