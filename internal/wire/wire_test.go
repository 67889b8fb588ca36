package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	msgs := []Message{
		&Attach{From: -1, InputFrom: 12, Cols: 80, Rows: 24, Role: RoleWriter, Window: 65536},
		&State{State: "claiming", Detail: "starting machine", QueuePosition: 2},
		&Attached{Session: "s1", Role: RoleReader, From: 10, Head: 20, InputApplied: 3, Cols: 80, Rows: 24},
		&Gap{Requested: 1, Oldest: 100, Restore: "\x1b[?1049h"},
		&Replayed{At: 20},
		&Ack{Offset: 5},
		&Resize{Cols: 100, Rows: 30},
		&Size{Cols: 100, Rows: 30},
		&Signal{Name: SignalINT},
		&Ping{TS: 1},
		&Pong{TS: 1},
		&Exit{Code: 130, Signal: "INT", At: 99},
		&Error{Code: ErrCodeForbidden, Message: "read-only", RetryAfterMS: 10},
	}
	for _, m := range msgs {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("encode %T: %v", m, err)
		}
		if !strings.Contains(string(b), `"type":"`+m.MessageType()+`"`) {
			t.Errorf("%T: no type in %s", m, b)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip %T: got %+v want %+v", m, got, m)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		in      string
		unknown bool
	}{
		{`{"type":"bogus"}`, true},
		{`not json`, false},
		{`{}`, false},
		{`{"type":""}`, false},
		{`[1,2]`, false},
		{`{"type":"resize","cols":"wide"}`, false},
	}
	for _, c := range cases {
		_, err := Decode([]byte(c.in))
		if err == nil {
			t.Fatalf("%s: no error", c.in)
		}
		if errors.Is(err, ErrUnknownType) != c.unknown {
			t.Errorf("%s: unknown=%v, err %v", c.in, !c.unknown, err)
		}
		if !c.unknown && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: want ErrMalformed, got %v", c.in, err)
		}
	}
}

func TestRoleAndSignal(t *testing.T) {
	if !RoleWriter.Valid() || !RoleReader.Valid() || Role("x").Valid() {
		t.Error("role validity")
	}
	if !ValidSignal("INT") || ValidSignal("STOP") {
		t.Error("signal validity")
	}
}

// TestZeroFieldsPresent: the frames whose fields the protocol lists carry
// every one of them even when zero, so clients need no defaults.
func TestZeroFieldsPresent(t *testing.T) {
	for _, c := range []struct {
		m    Message
		want string
	}{
		{&State{State: "starting"}, `{"type":"state","state":"starting","detail":"","queue_position":0}`},
		{&Error{Code: ErrCodeForbidden, Message: "read-only"}, `{"type":"error","code":"` + ErrCodeForbidden + `","message":"read-only","retry_after_ms":0}`},
	} {
		b, err := Encode(c.m)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%T encodes as %s; want %s", c.m, b, c.want)
		}
	}
}
