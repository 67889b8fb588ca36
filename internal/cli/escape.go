package cli

// escapeFilter implements ssh-style escapes on the input stream: "~." at the
// start of a line detaches, "~~" sends one "~", "~?" asks for help; any other
// character after "~" is sent with the "~". A line starts after Enter
// (CR or LF) and at the very beginning.
type escapeFilter struct {
	lineStart bool
	pending   bool // saw "~" at a line start
}

// escapeAction is what the filter found in a chunk of input.
type escapeAction int

const (
	escNone escapeAction = iota
	escDetach
	escHelp
)

func newEscapeFilter() *escapeFilter { return &escapeFilter{lineStart: true} }

// filter returns the bytes to send and the first action found. Input after
// a detach is dropped.
func (f *escapeFilter) filter(in []byte) ([]byte, escapeAction) {
	out := make([]byte, 0, len(in)+1)
	act := escNone
	for _, b := range in {
		if f.pending {
			f.pending = false
			switch b {
			case '.':
				return out, escDetach
			case '?':
				act = escHelp
				continue
			case '~':
				out = append(out, '~')
				f.lineStart = false
				continue
			default:
				out = append(out, '~')
			}
		} else if f.lineStart && b == '~' {
			f.pending = true
			continue
		}
		out = append(out, b)
		f.lineStart = b == '\r' || b == '\n'
	}
	return out, act
}
