package streamstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

// vectors is testdata/vectors.json, which web/test/streamstate.test.mjs
// runs against the browser's port too.
type vectors struct {
	Comment string `json:"comment"`
	Units   []struct {
		Mode  string `json:"mode"`
		Frame string `json:"frame"`
		Want  int64  `json:"want"`
	} `json:"units"`
	ResolveFrom []struct {
		Name             string `json:"name"`
		From, Head, Want int64
	} `json:"resolve_from"`
	Credit []struct {
		Name                     string `json:"name"`
		Window, Base, Next, Want int64
		Unlimited                bool `json:"unlimited"`
	} `json:"credit"`
	Reconcile []struct {
		Name       string `json:"name"`
		Seen, From int64
		Want       string `json:"want"`
	} `json:"reconcile"`
	Output []struct {
		Name   string `json:"name"`
		Mode   string `json:"mode"`
		Window int64  `json:"window"`
		From   int64  `json:"from"`
		Ops    []op   `json:"ops"`
	} `json:"output"`
	InputLog []struct {
		Name string `json:"name"`
		Mode string `json:"mode"`
		Max  int    `json:"max"`
		Ops  []op   `json:"ops"`
	} `json:"input_log"`
}

// op is one step of a case; pointer fields are expectations when set.
type op struct {
	Op      string `json:"op"`
	From    int64  `json:"from"`
	Frame   string `json:"frame"`
	Repeat  int    `json:"repeat"`
	Oldest  int64  `json:"oldest"`
	At      int64  `json:"at"`
	Applied int64  `json:"applied"`

	Next   *int64    `json:"next"`
	AckDue *bool     `json:"ack_due"`
	Ack    *int64    `json:"ack"`
	Start  *int64    `json:"start"`
	End    *int64    `json:"end"`
	Size   *int      `json:"size"`
	Want   *[]string `json:"want"`
	Error  string    `json:"error"`
}

func (o *op) frame() []byte { return []byte(strings.Repeat(o.Frame, max(o.Repeat, 1))) }

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	// Unknown keys are mistakes (a misspelt expectation would check nothing).
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var v vectors
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func mode(t *testing.T, s string) Mode {
	switch s {
	case "pty":
		return Bytes
	case "jsonl":
		return Lines
	}
	t.Fatalf("unknown mode %q", s)
	return 0
}

func errName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrAhead):
		return "ahead"
	case errors.Is(err, ErrEvicted):
		return "evicted"
	}
	return err.Error()
}

func strs(chunks [][]byte) []string {
	out := []string{}
	for _, c := range chunks {
		out = append(out, string(c))
	}
	return out
}

func TestVectorsUnits(t *testing.T) {
	for _, c := range loadVectors(t).Units {
		if got := mode(t, c.Mode).Units([]byte(c.Frame)); got != c.Want {
			t.Errorf("%s Units(%q) = %d, want %d", c.Mode, c.Frame, got, c.Want)
		}
	}
}

func TestVectorsResolveFrom(t *testing.T) {
	for _, c := range loadVectors(t).ResolveFrom {
		if got := ResolveFrom(c.From, c.Head); got != c.Want {
			t.Errorf("%s: ResolveFrom(%d, %d) = %d, want %d", c.Name, c.From, c.Head, got, c.Want)
		}
	}
}

func TestVectorsCredit(t *testing.T) {
	for _, c := range loadVectors(t).Credit {
		want := c.Want
		if c.Unlimited {
			want = math.MaxInt64
		}
		if got := Credit(c.Window, c.Base, c.Next); got != want {
			t.Errorf("%s: Credit(%d, %d, %d) = %d, want %d", c.Name, c.Window, c.Base, c.Next, got, want)
		}
	}
}

func TestVectorsReconcile(t *testing.T) {
	for _, c := range loadVectors(t).Reconcile {
		if got := Reconcile(c.Seen, c.From); got.String() != c.Want {
			t.Errorf("%s: Reconcile(%d, %d) = %s, want %s", c.Name, c.Seen, c.From, got, c.Want)
		}
	}
}

func TestVectorsOutput(t *testing.T) {
	for _, c := range loadVectors(t).Output {
		t.Run(c.Name, func(t *testing.T) {
			m := mode(t, c.Mode)
			o := NewOutput(c.Window, c.From)
			for i, s := range c.Ops {
				var ack int64
				switch s.Op {
				case "attached":
					o.Attached(s.From)
				case "data":
					o.Advance(m.Units(s.frame()))
				case "gap":
					o.Gap(s.Oldest)
				case "ack":
					ack = o.Ack()
				default:
					t.Fatalf("op %d: unknown op %q", i, s.Op)
				}
				if s.Next != nil && o.Next() != *s.Next {
					t.Errorf("op %d (%s): next = %d, want %d", i, s.Op, o.Next(), *s.Next)
				}
				if s.AckDue != nil && o.AckDue() != *s.AckDue {
					t.Errorf("op %d (%s): ack due = %v, want %v", i, s.Op, o.AckDue(), *s.AckDue)
				}
				if s.Ack != nil && ack != *s.Ack {
					t.Errorf("op %d (%s): ack = %d, want %d", i, s.Op, ack, *s.Ack)
				}
			}
		})
	}
}

func TestVectorsInputLog(t *testing.T) {
	for _, c := range loadVectors(t).InputLog {
		t.Run(c.Name, func(t *testing.T) {
			l := NewInputLog(mode(t, c.Mode), c.Max)
			for i, s := range c.Ops {
				var got [][]byte
				var err error
				switch s.Op {
				case "append":
					l.Append(s.frame())
				case "rebase":
					l.Rebase(s.At)
				case "trim":
					l.Trim(s.At)
				case "since":
					got, err = l.Since(s.At)
				case "resume":
					got, err = l.Resume(s.Applied)
				default:
					t.Fatalf("op %d: unknown op %q", i, s.Op)
				}
				if errName(err) != s.Error {
					t.Errorf("op %d (%s): error %q, want %q", i, s.Op, errName(err), s.Error)
				}
				if s.Want != nil && !slices.Equal(strs(got), *s.Want) {
					t.Errorf("op %d (%s): got %q, want %q", i, s.Op, strs(got), *s.Want)
				}
				if s.Start != nil && l.Start() != *s.Start {
					t.Errorf("op %d (%s): start = %d, want %d", i, s.Op, l.Start(), *s.Start)
				}
				if s.End != nil && l.End() != *s.End {
					t.Errorf("op %d (%s): end = %d, want %d", i, s.Op, l.End(), *s.End)
				}
				if s.Size != nil && l.Size() != *s.Size {
					t.Errorf("op %d (%s): size = %d, want %d", i, s.Op, l.Size(), *s.Size)
				}
			}
		})
	}
}
