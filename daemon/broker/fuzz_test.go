package broker

import (
	"testing"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/wire"
)

// FuzzAttachFrame: the daemon's reading of a client's first frame either
// accepts an attach whose every field is in range or refuses it with 1008
// and an error frame with a known code, never a panic.
func FuzzAttachFrame(f *testing.F) {
	f.Add(true, []byte(`{"type":"attach","from":0,"input_from":0,"cols":80,"rows":24,"role":"rw","window":65536}`))
	f.Add(true, []byte(`{"type":"attach","from":-1,"role":"ro"}`))
	f.Add(true, []byte(`{"type":"attach","from":-2}`))
	f.Add(true, []byte(`{"type":"attach","cols":100000,"rows":24}`))
	f.Add(true, []byte(`{"type":"attach","role":"admin"}`))
	f.Add(true, []byte(`{"type":"resize","cols":80,"rows":24}`))
	f.Add(true, []byte(`{"type":"attach","from":"0"}`))
	f.Add(true, []byte(`{nope`))
	f.Add(false, []byte(`hello`))
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		typ := websocket.MessageBinary
		if text {
			typ = websocket.MessageText
		}
		a, cr := parseAttach(typ, data)
		if cr != nil {
			if a != nil || cr.code != websocket.StatusPolicyViolation || cr.frame == nil {
				t.Fatalf("refusal %+v with attach %+v", cr, a)
			}
			m, err := wire.Decode(cr.frame)
			e, ok := m.(*wire.Error)
			if err != nil || !ok {
				t.Fatalf("the refusal's frame %s is not an error", cr.frame)
			}
			switch e.Code {
			case wire.ErrCodeAttachRequired, wire.ErrCodeBadRequest, wire.ErrCodeInvalidSize:
			default:
				t.Fatalf("refusal code %q", e.Code)
			}
			return
		}
		switch {
		case !text:
			t.Fatal("a binary first frame was accepted")
		case a.From < wire.LiveTail || a.InputFrom < 0 || a.Window < 0:
			t.Fatalf("offsets out of range accepted: %+v", a)
		case a.Cols < 0 || a.Rows < 0 || a.Cols > maxDim || a.Rows > maxDim:
			t.Fatalf("size out of range accepted: %+v", a)
		case a.Role != "" && !a.Role.Valid():
			t.Fatalf("role %q accepted", a.Role)
		}
	})
}
