// Package wire defines hangar's attach protocol (see docs/protocol.md): the
// WebSocket subprotocols, the JSON control frames that travel as text frames,
// close codes and roles. The agent, the daemon and every client speak it; the
// same frames are used on both hops (client <-> daemon <-> agent).
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// WebSocket subprotocols.
const (
	// SubprotocolPTY carries raw terminal bytes in binary frames; offsets count bytes.
	SubprotocolPTY = "hangar.pty.v1"
	// SubprotocolJSONL carries one JSON line (no newline) per binary frame;
	// offsets count lines.
	SubprotocolJSONL = "hangar.jsonl.v1"
)

// Subprotocols lists every subprotocol, preferred first.
var Subprotocols = []string{SubprotocolPTY, SubprotocolJSONL}

// PingInterval is how often each side sends a ping when the link is otherwise idle.
const PingInterval = 20 * time.Second

// LiveTail as Attach.From asks for no replay: output starts at the current head.
const LiveTail int64 = -1

// Role is an attachment's role.
type Role string

// Roles.
const (
	// RoleWriter may send input, resizes and signals. One writer at a time.
	RoleWriter Role = "rw"
	// RoleReader is a read-only viewer.
	RoleReader Role = "ro"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleWriter || r == RoleReader }

// Control frame types (the "type" field of every text frame).
const (
	TypeAttach   = "attach"
	TypeState    = "state"
	TypeAttached = "attached"
	TypeGap      = "gap"
	TypeReplayed = "replayed"
	TypeAck      = "ack"
	TypeResize   = "resize"
	TypeSize     = "size"
	TypeSignal   = "signal"
	TypePing     = "ping"
	TypePong     = "pong"
	TypeExit     = "exit"
	TypeError    = "error"
)

// WebSocket close codes used after the upgrade.
const (
	// CloseNormal follows an exit frame: the process ended.
	CloseNormal = 1000
	// CloseCredentialsExpired: the token that authorised the attachment expired.
	CloseCredentialsExpired = 4001
	// CloseForbidden: the role does not allow what was attempted.
	CloseForbidden = 4003
	// CloseSessionGone: the session no longer exists (or was never initialised).
	CloseSessionGone = 4004
	// CloseSuperseded: a newer writer took over.
	CloseSuperseded = 4008
	// CloseRateLimited: too many attachments or messages; retry later.
	CloseRateLimited = 4029
	// CloseUnavailable: the VM is unavailable; retry later.
	CloseUnavailable = 4503
)

// Signal names accepted in a Signal frame.
const (
	SignalINT  = "INT"
	SignalTERM = "TERM"
	SignalKILL = "KILL"
	SignalHUP  = "HUP"
)

// Error codes carried in Error.Code.
const (
	ErrCodeBadRequest          = "bad_request"           // malformed JSON or fields
	ErrCodeUnknownType         = "unknown_type"          // a control frame of unknown type
	ErrCodeFrameTooLarge       = "frame_too_large"       // a frame beyond the configured limit
	ErrCodeForbidden           = "forbidden"             // a read-only viewer sent input, resize or signal
	ErrCodeInvalidSize         = "invalid_size"          // resize to 0 or absurd dimensions
	ErrCodeInvalidSignal       = "invalid_signal"        // unknown signal name
	ErrCodeNotInitialized      = "not_initialized"       // attach before init
	ErrCodeSessionGone         = "session_gone"          // the session ended
	ErrCodeSuperseded          = "superseded"            // a newer writer took over
	ErrCodeCredentialsRejected = "credentials_rejected"  // the CLI's credentials were refused upstream
	ErrCodeCredentialsExpired  = "credentials_expired"   // the attach token expired
	ErrCodeRateLimited         = "rate_limited"          // slow down
	ErrCodeUnavailable         = "unavailable"           // VM unavailable, retry later
	ErrCodeInternal            = "internal"              // anything else
	ErrCodeNotReady            = "not_ready"             // the session is not ready yet
	ErrCodeAttachRequired      = "attach_required"       // first frame was not attach
	ErrCodeInputTooLarge       = "input_too_large"       // jsonl input line too large
	ErrCodeProcessExited       = "process_exited"        // input after the process ended
	ErrCodeInvalidInputOffset  = "invalid_input_offset"  // input_from beyond what the server applied + sent
	ErrCodeInvalidOutputOffset = "invalid_output_offset" // from beyond head
)

// Message is any control frame.
type Message interface {
	// MessageType returns the frame's "type" value.
	MessageType() string
}

// Attach is the mandatory first frame from the client.
type Attach struct {
	Type string `json:"type"`
	// From is the output offset to replay from, or LiveTail (-1).
	From int64 `json:"from"`
	// InputFrom is the number of input bytes (lines in jsonl) the client has
	// sent in total over all its attachments to this session.
	InputFrom int64 `json:"input_from"`
	Cols      int   `json:"cols,omitempty"`
	Rows      int   `json:"rows,omitempty"`
	Role      Role  `json:"role,omitempty"`
	// Window is the credit window in bytes (lines in jsonl); 0 = no flow control.
	Window int64 `json:"window,omitempty"`
}

// State reports progress while the session is not ready; it precedes Attached.
type State struct {
	Type          string `json:"type"`
	State         string `json:"state"`
	Detail        string `json:"detail"`
	QueuePosition int    `json:"queue_position"`
}

// Attached confirms an attachment; replay from From to Head follows.
type Attached struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	Role    Role   `json:"role"`
	From    int64  `json:"from"`
	Head    int64  `json:"head"`
	// InputApplied is the offset of the client's next input byte (line): input
	// before it has already been applied and must not be resent.
	InputApplied int64 `json:"input_applied"`
	Cols         int   `json:"cols"`
	Rows         int   `json:"rows"`
}

// Gap says output from Requested was evicted; output resumes at Oldest.
type Gap struct {
	Type      string `json:"type"`
	Requested int64  `json:"requested"`
	Oldest    int64  `json:"oldest"`
	// Restore re-establishes terminal modes; write it to the terminal before
	// the output that follows. It is not counted in offsets.
	Restore string `json:"restore"`
}

// Replayed marks the end of historical replay at offset At.
type Replayed struct {
	Type string `json:"type"`
	At   int64  `json:"at"`
}

// Ack reports output rendered up to Offset (credit flow control).
type Ack struct {
	Type   string `json:"type"`
	Offset int64  `json:"offset"`
}

// Resize asks for a new terminal size (writer only).
type Resize struct {
	Type string `json:"type"`
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// Size reports the PTY's size.
type Size struct {
	Type string `json:"type"`
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// Signal asks to deliver a signal to the process group (writer only).
type Signal struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// Ping is a keepalive; the peer answers with a Pong echoing TS.
type Ping struct {
	Type string `json:"type"`
	TS   int64  `json:"ts"`
}

// Pong answers a Ping.
type Pong struct {
	Type string `json:"type"`
	TS   int64  `json:"ts"`
}

// Exit says the process ended; the socket then closes with CloseNormal.
type Exit struct {
	Type string `json:"type"`
	// Code is the exit status, or 128+signal number when killed by a signal.
	Code int `json:"code"`
	// Signal is the name (e.g. "KILL") of the signal that ended the process, or "".
	Signal string `json:"signal"`
	// At is the output offset at exit: all output lies before it.
	At int64 `json:"at"`
}

// Error reports a problem; before a 4xxx close it says why. Not every error
// closes the connection (bad frames are answered and the link keeps serving).
type Error struct {
	Type         string `json:"type"`
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms"`
}

// Error implements error so that an Error frame can be returned as one.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// MessageType implementations.
func (*Attach) MessageType() string   { return TypeAttach }
func (*State) MessageType() string    { return TypeState }
func (*Attached) MessageType() string { return TypeAttached }
func (*Gap) MessageType() string      { return TypeGap }
func (*Replayed) MessageType() string { return TypeReplayed }
func (*Ack) MessageType() string      { return TypeAck }
func (*Resize) MessageType() string   { return TypeResize }
func (*Size) MessageType() string     { return TypeSize }
func (*Signal) MessageType() string   { return TypeSignal }
func (*Ping) MessageType() string     { return TypePing }
func (*Pong) MessageType() string     { return TypePong }
func (*Exit) MessageType() string     { return TypeExit }
func (*Error) MessageType() string    { return TypeError }

// ErrUnknownType is matched (errors.Is) by errors for frames of unknown type.
var ErrUnknownType = errors.New("unknown message type")

// ErrMalformed is matched (errors.Is) by errors for frames that are not a
// JSON object with a string "type".
var ErrMalformed = errors.New("malformed control frame")

// UnknownTypeError is returned by Decode for a frame whose type is not known.
type UnknownTypeError struct{ Type string }

func (e *UnknownTypeError) Error() string { return fmt.Sprintf("unknown message type %q", e.Type) }

// Is makes errors.Is(err, ErrUnknownType) true.
func (e *UnknownTypeError) Is(target error) bool { return target == ErrUnknownType }

func newMessage(typ string) Message {
	switch typ {
	case TypeAttach:
		return &Attach{}
	case TypeState:
		return &State{}
	case TypeAttached:
		return &Attached{}
	case TypeGap:
		return &Gap{}
	case TypeReplayed:
		return &Replayed{}
	case TypeAck:
		return &Ack{}
	case TypeResize:
		return &Resize{}
	case TypeSize:
		return &Size{}
	case TypeSignal:
		return &Signal{}
	case TypePing:
		return &Ping{}
	case TypePong:
		return &Pong{}
	case TypeExit:
		return &Exit{}
	case TypeError:
		return &Error{}
	}
	return nil
}

// Encode marshals m as a text frame payload, setting its "type" field.
func Encode(m Message) ([]byte, error) {
	if m == nil {
		return nil, errors.New("encode: nil message")
	}
	setType(m)
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.MessageType(), err)
	}
	return b, nil
}

// MustEncode is Encode for messages that cannot fail to marshal (all of this
// package's types); it panics only on a programming error.
func MustEncode(m Message) []byte {
	b, err := Encode(m)
	if err != nil {
		panic(err)
	}
	return b
}

func setType(m Message) {
	t := m.MessageType()
	switch v := m.(type) {
	case *Attach:
		v.Type = t
	case *State:
		v.Type = t
	case *Attached:
		v.Type = t
	case *Gap:
		v.Type = t
	case *Replayed:
		v.Type = t
	case *Ack:
		v.Type = t
	case *Resize:
		v.Type = t
	case *Size:
		v.Type = t
	case *Signal:
		v.Type = t
	case *Ping:
		v.Type = t
	case *Pong:
		v.Type = t
	case *Exit:
		v.Type = t
	case *Error:
		v.Type = t
	}
}

// PeekType returns the "type" of a text frame without decoding the rest.
func PeekType(data []byte) (string, error) {
	var h struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if h.Type == nil || *h.Type == "" {
		return "", fmt.Errorf("%w: missing \"type\"", ErrMalformed)
	}
	return *h.Type, nil
}

// Decode parses a text frame into its concrete message type (a pointer, e.g.
// *Attach). Unknown types give an *UnknownTypeError (errors.Is ErrUnknownType);
// anything that is not a JSON object with a type gives ErrMalformed.
func Decode(data []byte) (Message, error) {
	typ, err := PeekType(data)
	if err != nil {
		return nil, err
	}
	m := newMessage(typ)
	if m == nil {
		return nil, &UnknownTypeError{Type: typ}
	}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, typ, err)
	}
	return m, nil
}

// ValidSignal reports whether name is a signal a writer may send.
func ValidSignal(name string) bool {
	switch name {
	case SignalINT, SignalTERM, SignalKILL, SignalHUP:
		return true
	}
	return false
}
