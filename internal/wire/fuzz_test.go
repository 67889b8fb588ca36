package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecode: any text frame decodes to a message or an error that says
// malformed or unknown type, never a panic; whatever decodes re-encodes to
// a frame that decodes to the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		&Attach{From: -1, InputFrom: 3, Cols: 80, Rows: 24, Role: RoleReader, Window: 65536},
		&State{State: "pending", Detail: "waiting", QueuePosition: 2},
		&Attached{Session: "s", Role: RoleWriter, From: 1, Head: 9, InputApplied: 4, Cols: 80, Rows: 24},
		&Gap{Requested: 1, Oldest: 5, Restore: "\x1b[?1049h"}, &Replayed{At: 7}, &Ack{Offset: 1 << 40},
		&Resize{Cols: 2000, Rows: 1000}, &Size{Cols: 1, Rows: 1}, &Signal{Name: SignalINT},
		&Ping{TS: 1}, &Pong{TS: -1}, &Exit{Code: 137, Signal: "KILL", At: 3},
		&Error{Code: ErrCodeForbidden, Message: "no", RetryAfterMS: 5000},
	} {
		f.Add(MustEncode(m))
	}
	for _, s := range []string{``, `{}`, `null`, `[]`, `{"type":""}`, `{"type":"attach","from":"x"}`,
		`{"type":"attach","from":1e400}`, `{"type":"nope"}`, `{"type":"attach","type":"ping"}`, "{\"type\":\"ping\",\"ts\":1}\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("Decode(%q): error %v is neither malformed nor unknown type", data, err)
			}
			return
		}
		typ, err := PeekType(data)
		if err != nil || typ != m.MessageType() {
			t.Fatalf("Decode(%q) = %s, PeekType = %q, %v", data, m.MessageType(), typ, err)
		}
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", m, err)
		}
		m2, err := Decode(b)
		if err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		b2, _ := json.Marshal(m2)
		b1, _ := json.Marshal(m)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("round trip changed the message: %s -> %s", b1, b2)
		}
	})
}
