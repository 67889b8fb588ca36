package streamstate

import "testing"

// The behaviours below are about memory, which the shared vectors cannot
// express.

func TestInputLogCopiesInput(t *testing.T) {
	for _, m := range []Mode{Bytes, Lines} {
		l := NewInputLog(m, 100)
		b := []byte("abc")
		l.Append(b)
		b[0] = 'X'
		if got, _ := l.Since(0); len(got) != 1 || string(got[0]) != "abc" {
			t.Fatalf("mode %d: the log aliases the caller's buffer: %q", m, got)
		}
	}
}

func TestInputLogSinceSurvivesTrim(t *testing.T) {
	// Resume returns slices of the log after trimming it: they must still
	// hold the input even though the log cut into their chunk.
	l := NewInputLog(Bytes, 100)
	_, _ = l.Resume(0) // attached: numbered from 0 on
	l.Append([]byte("hello"))
	got, err := l.Resume(2)
	if err != nil || len(got) != 1 || string(got[0]) != "llo" {
		t.Fatalf("Resume(2) = %q, %v", got, err)
	}
	l.Append([]byte("!"))
	if string(got[0]) != "llo" {
		t.Fatalf("an append changed a returned slice: %q", got[0])
	}
}
