package agent

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/agentapi"
)

func TestByteRingKeepsTheLastBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const capacity = 1000
	r := newByteRing(capacity)
	var all []byte
	buf := make([]byte, 4096)
	for i := 0; i < 500; i++ {
		p := make([]byte, rng.IntN(2500))
		for j := range p {
			p[j] = byte('a' + rng.IntN(26))
		}
		r.append(p)
		all = append(all, p...)
		oldest, head := r.bounds()
		if head != int64(len(all)) || oldest != max(0, head-capacity) {
			t.Fatalf("bounds %d %d after %d bytes", oldest, head, len(all))
		}
		// Read everything retained, in random frame sizes.
		var got []byte
		for cur := oldest; cur < head; {
			frame, n, gap := r.next(cur, int64(1+rng.IntN(700)), buf)
			if gap != nil || n == 0 || int64(len(frame)) != n {
				t.Fatalf("next(%d): %d bytes, gap %v", cur, n, gap)
			}
			got = append(got, frame...)
			cur += n
		}
		if !bytes.Equal(got, all[oldest:]) {
			t.Fatalf("round %d: retained bytes differ", i)
		}
		if oldest > 0 {
			if _, _, gap := r.next(oldest-1, 10, buf); gap == nil || gap.Requested != oldest-1 || gap.Oldest != oldest {
				t.Fatalf("no gap below oldest: %+v", gap)
			}
		}
	}
}

func TestModeTrackerFollowsEvictedOutput(t *testing.T) {
	r := newByteRing(64)
	// Alt screen, bracketed paste and mouse on, cursor hidden, keypad mode;
	// the sequences are split across appends.
	for _, p := range []string{"\x1b[?10", "49h\x1b[?2004;1000", "h\x1b[?25l", "\x1b=", "\x1b]0;title \x1b[?1049l ignored\x07"} {
		r.append([]byte(p))
	}
	r.append([]byte(strings.Repeat(".", 200)))
	_, _, gap := r.next(0, 10, make([]byte, 10))
	if gap == nil {
		t.Fatal("no gap")
	}
	for _, want := range []string{"\x1b[?1049h", "\x1b[?2004h", "\x1b[?1000h", "\x1b[?25l", "\x1b=", "\x1b[?1006l"} {
		if !strings.Contains(gap.Restore, want) {
			t.Errorf("restore %q lacks %q", gap.Restore, want)
		}
	}
	// Leaving the modes (and a full reset) is tracked too.
	r.append([]byte("\x1b[?1049l\x1b[?2004l\x1bc"))
	r.append([]byte(strings.Repeat(".", 200)))
	_, _, gap = r.next(0, 10, make([]byte, 10))
	for _, want := range []string{"\x1b[?1049l", "\x1b[?2004l", "\x1b[?1000l", "\x1b[?25h", "\x1b>"} {
		if !strings.Contains(gap.Restore, want) {
			t.Errorf("restore after reset %q lacks %q", gap.Restore, want)
		}
	}
}

func TestLineRingProtectsTheWriter(t *testing.T) {
	r := newLineRing(100)
	line := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	for i := 0; i < 4; i++ {
		if !r.fits(20, 0) {
			t.Fatalf("line %d does not fit", i)
		}
		r.appendLine(line(20))
	}
	// 80 bytes held; 30 more would evict line 0, which the writer (at 0) lacks.
	if r.fits(30, 0) {
		t.Fatal("eviction of a protected line allowed")
	}
	if !r.fits(30, 1) {
		t.Fatal("line 0 is delivered; eviction should be allowed")
	}
	r.appendLine(line(30))
	oldest, head := r.bounds()
	if oldest != 1 || head != 5 {
		t.Fatalf("bounds %d %d", oldest, head)
	}
	if _, _, gap := r.next(0, 1, nil); gap == nil || gap.Oldest != 1 {
		t.Fatalf("gap %+v", gap)
	}
	// A line larger than the ring goes in once nothing protected remains.
	if r.fits(500, 3) {
		t.Fatal("oversized line evicting protected lines")
	}
	if !r.fits(500, 5) {
		t.Fatal("oversized line refused with nothing protected")
	}
	r.appendLine(line(500))
	if oldest, head = r.bounds(); oldest != 5 || head != 6 {
		t.Fatalf("bounds after a huge line %d %d", oldest, head)
	}
	if frame, n, _ := r.next(5, 1, nil); n != 1 || len(frame) != 500 {
		t.Fatal("huge line not retained")
	}
}

// TestValidateInitRepo: the agent applies package validate's rules, the
// daemon's, so a URL is never accepted on one hop and refused on the other.
func TestValidateInitRepo(t *testing.T) {
	good := []string{"https://github.com/a/b.git", "ssh://git@github.com/a/b.git", "git@github.com:a/b.git",
		"file:///srv/git/x.git", "http://127.0.0.1:8080/x.git", "http://[::1]/x.git"}
	bad := []string{"--upload-pack=touch /tmp/x", "-oProxyCommand=x", "ext::sh -c x", "fd::3", "http://example.com/x.git",
		"https://u:p@host/x.git", "https://user@host.example/x.git", "ftp://host/x", "/local/path", "git@-host:x",
		"host:-x", "https://host", "file://other/x", "https://host/x\n", "git://host/x.git",
		"ssh://-oProxyCommand@host/x.git"}
	check := func(repo string) error {
		return validateInit(context.Background(), &agentapi.InitRequest{SessionID: "s1", Repo: repo})
	}
	for _, u := range good {
		if err := check(u); err != nil {
			t.Errorf("%q refused: %v", u, err)
		}
	}
	for _, u := range bad {
		if err := check(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "8MiB": 8 << 20, "4k": 4096, "2 MB": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5M"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestListenAddr(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HANGAR_AGENT_ADDR": "127.0.0.1:9", "FLY_PRIVATE_IP": "fdaa::2"}, "127.0.0.1:9"},
		{map[string]string{"FLY_PRIVATE_IP": "fdaa::2", "HANGAR_AGENT_PORT": "9000"}, "[fdaa::2]:9000"},
		{map[string]string{"FLY_PRIVATE_IP": "127.0.0.5"}, "127.0.0.5:8080"},
		{map[string]string{}, "0.0.0.0:8080"},
	}
	for _, c := range cases {
		if got := listenAddr(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%v: %s, want %s", c.env, got, c.want)
		}
	}
}

// BenchmarkByteRing measures the output path: the pty reader appending
// chunks and one attachment copying frames out.
func BenchmarkByteRing(b *testing.B) {
	r := newByteRing(8 << 20)
	chunk := bytes.Repeat([]byte("output \x1b[1mbold\x1b[0m line\r\n"), 1000)
	buf := make([]byte, maxFramePayload)
	var cur int64
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		r.append(chunk)
		for {
			_, n, gap := r.next(cur, maxFramePayload, buf)
			if gap != nil {
				cur = gap.Oldest
				continue
			}
			if n == 0 {
				break
			}
			cur += n
		}
	}
}
