package agent

import "strconv"

// modeTracker follows the terminal modes that a program switches on with
// escape sequences (alternate screen, cursor visibility, bracketed paste,
// mouse reporting, application cursor keys and keypad), so that a client
// that missed part of the output (a gap) can be put back into the same
// modes. It is fed the bytes that leave the ring buffer, so its state is the
// terminal's state at the ring's oldest offset. It parses incrementally:
// sequences may be split across calls.
type modeTracker struct {
	state  int
	params []byte
	modes  map[int]bool // DEC private mode -> on
	keypad bool         // DECKPAM (ESC =) vs DECKPNM (ESC >)
}

const (
	stGround = iota
	stEsc
	stCSI
	stString    // OSC, DCS, APC, PM, SOS: until BEL or ST
	stStringEsc // ESC seen inside a string (maybe ST)
)

// trackedModes are restored in this order. 1049 stands for every alternate
// screen variant (47, 1047, 1049).
var trackedModes = []int{1049, 1, 25, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004}

// defaultModes are the modes on in a fresh terminal.
var defaultModes = map[int]bool{25: true}

func newModeTracker() *modeTracker {
	t := &modeTracker{modes: map[int]bool{}}
	t.reset()
	return t
}

func (t *modeTracker) reset() {
	clear(t.modes)
	for m, on := range defaultModes {
		t.modes[m] = on
	}
	t.keypad = false
}

func canonicalMode(m int) (int, bool) {
	switch m {
	case 47, 1047, 1049:
		return 1049, true
	case 1, 25, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004:
		return m, true
	}
	return 0, false
}

// feed consumes output bytes.
func (t *modeTracker) feed(p []byte) {
	for _, b := range p {
		switch t.state {
		case stGround:
			if b == 0x1b {
				t.state = stEsc
			}
		case stEsc:
			switch b {
			case '[':
				t.state = stCSI
				t.params = t.params[:0]
			case ']', 'P', '_', '^', 'X':
				t.state = stString
			case '=':
				t.keypad = true
				t.state = stGround
			case '>':
				t.keypad = false
				t.state = stGround
			case 'c': // RIS: full reset
				t.reset()
				t.state = stGround
			case 0x1b:
				// stay in stEsc
			default:
				t.state = stGround
			}
		case stCSI:
			switch {
			case b >= 0x30 && b <= 0x3f: // parameter bytes
				if len(t.params) < 64 {
					t.params = append(t.params, b)
				}
			case b >= 0x20 && b <= 0x2f: // intermediate bytes
			case b >= 0x40 && b <= 0x7e: // final byte
				if (b == 'h' || b == 'l') && len(t.params) > 0 && t.params[0] == '?' {
					t.setModes(t.params[1:], b == 'h')
				}
				t.state = stGround
			case b == 0x1b:
				t.state = stEsc
			case b == 0x18 || b == 0x1a: // CAN, SUB abort
				t.state = stGround
			default: // C0 controls inside CSI are executed; keep parsing
			}
		case stString:
			switch b {
			case 0x07:
				t.state = stGround
			case 0x1b:
				t.state = stStringEsc
			}
		case stStringEsc:
			if b == '\\' {
				t.state = stGround
			} else if b != 0x1b {
				t.state = stString
			}
		}
	}
}

func (t *modeTracker) setModes(params []byte, on bool) {
	start := 0
	for i := 0; i <= len(params); i++ {
		if i == len(params) || params[i] == ';' {
			if n, err := strconv.Atoi(string(params[start:i])); err == nil {
				if m, ok := canonicalMode(n); ok {
					t.modes[m] = on
				}
			}
			start = i + 1
		}
	}
}

// restore returns escape sequences that put a terminal into the tracked
// state, every tracked mode set explicitly on or off.
func (t *modeTracker) restore() string {
	b := make([]byte, 0, 128)
	for _, m := range trackedModes {
		b = append(b, "\x1b[?"...)
		b = strconv.AppendInt(b, int64(m), 10)
		if t.modes[m] {
			b = append(b, 'h')
		} else {
			b = append(b, 'l')
		}
	}
	if t.keypad {
		b = append(b, "\x1b="...)
	} else {
		b = append(b, "\x1b>"...)
	}
	return string(b)
}
