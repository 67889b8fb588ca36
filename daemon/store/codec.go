package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// Both backends keep microseconds (Postgres' resolution), so every time is
// truncated to that before it is written and what a caller holds after a
// write equals what a later read returns.
func normTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

func normTimePtr(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	n := normTime(*t)
	return &n
}

func now() time.Time { return normTime(time.Now()) }

// newID returns a fresh, time-ordered identifier (a lower-case ULID).
func newID() string { return strings.ToLower(ulid.Make().String()) }

var validStates = []SessionState{StatePending, StateClaiming, StateStarting, StateReady, StateEnding, StateEnded, StateFailed}

func checkState(st SessionState) error {
	if !slices.Contains(validStates, st) {
		return fmt.Errorf("invalid session state %q", st)
	}
	return nil
}

// encodeList, encodeMap and encodePush give nil for an empty value, stored
// as NULL; the decoders give nil back for NULL, so a round trip is exact.
func encodeList(v []string) ([]byte, error) {
	if len(v) == 0 {
		return nil, nil
	}
	return json.Marshal(v)
}

func encodeMap(v map[string]string) ([]byte, error) {
	if len(v) == 0 {
		return nil, nil
	}
	return json.Marshal(v)
}

func encodePush(p *Push) ([]byte, error) {
	if p == nil {
		return nil, nil
	}
	return json.Marshal(p)
}

func decodeList(b []byte) ([]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var v []string
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

func decodeMap(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var v map[string]string
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

func decodePush(b []byte) (*Push, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	var p Push
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// sessionJSON holds a session's JSON-encoded columns.
type sessionJSON struct {
	command, env, push []byte
}

func encodeSessionJSON(s *Session) (sessionJSON, error) {
	var j sessionJSON
	var err error
	if j.command, err = encodeList(s.Command); err != nil {
		return j, fmt.Errorf("encode command: %w", err)
	}
	if j.env, err = encodeMap(s.Env); err != nil {
		return j, fmt.Errorf("encode env: %w", err)
	}
	if j.push, err = encodePush(s.Push); err != nil {
		return j, fmt.Errorf("encode push: %w", err)
	}
	return j, nil
}

func (j sessionJSON) decodeInto(s *Session) error {
	var err error
	if s.Command, err = decodeList(j.command); err != nil {
		return fmt.Errorf("decode command of session %s: %w", s.ID, err)
	}
	if s.Env, err = decodeMap(j.env); err != nil {
		return fmt.Errorf("decode env of session %s: %w", s.ID, err)
	}
	if s.Push, err = decodePush(j.push); err != nil {
		return fmt.Errorf("decode push of session %s: %w", s.ID, err)
	}
	return nil
}

// prepareNewSession validates a session about to be created and fills in
// what the store owns.
func prepareNewSession(s *Session) error {
	if s == nil {
		return fmt.Errorf("create session: nil session")
	}
	if s.ID == "" {
		return fmt.Errorf("create session: empty id")
	}
	if s.TenantID == "" {
		return fmt.Errorf("create session %s: empty tenant id", s.ID)
	}
	if s.Pool == "" {
		return fmt.Errorf("create session %s: empty pool", s.ID)
	}
	if s.State == "" {
		s.State = StatePending
	}
	if err := checkState(s.State); err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	t := now()
	s.CreatedAt, s.UpdatedAt = t, t
	s.ReadyAt, s.EndedAt = normTimePtr(s.ReadyAt), normTimePtr(s.EndedAt)
	return nil
}

// prepareUpdatedSession restores what fn may not change (identity and
// creation time) and normalises what it may.
func prepareUpdatedSession(id string, old, s *Session) error {
	s.ID, s.TenantID, s.CreatedAt = old.ID, old.TenantID, old.CreatedAt
	if s.State == "" {
		return fmt.Errorf("update session %s: empty state", id)
	}
	if err := checkState(s.State); err != nil {
		return fmt.Errorf("update session %s: %w", id, err)
	}
	s.ReadyAt, s.EndedAt = normTimePtr(s.ReadyAt), normTimePtr(s.EndedAt)
	s.UpdatedAt = now()
	if !s.UpdatedAt.After(old.UpdatedAt) {
		// Keep UpdatedAt strictly increasing even when two writes land
		// within one microsecond.
		s.UpdatedAt = old.UpdatedAt.Add(time.Microsecond)
	}
	return nil
}

func copySession(s *Session) *Session {
	c := *s
	c.Command = slices.Clone(s.Command)
	if s.Env != nil {
		c.Env = make(map[string]string, len(s.Env))
		for k, v := range s.Env {
			c.Env[k] = v
		}
	}
	if s.Push != nil {
		p := *s.Push
		c.Push = &p
	}
	if s.ReadyAt != nil {
		t := *s.ReadyAt
		c.ReadyAt = &t
	}
	if s.EndedAt != nil {
		t := *s.EndedAt
		c.EndedAt = &t
	}
	return &c
}

func checkFrom(from []SessionState, cur SessionState, id string) error {
	if len(from) == 0 || slices.Contains(from, cur) {
		return nil
	}
	return fmt.Errorf("session %s is %s, not %v: %w", id, cur, from, ErrStateChanged)
}

func prepareTenant(t *Tenant) error {
	if t == nil {
		return fmt.Errorf("create tenant: nil tenant")
	}
	if strings.TrimSpace(t.Name) == "" {
		return fmt.Errorf("create tenant: empty name")
	}
	if t.MaxSessions < 0 {
		return fmt.Errorf("create tenant %s: negative max sessions", t.Name)
	}
	if t.MaxSessionDuration < 0 {
		return fmt.Errorf("create tenant %s: negative max session duration", t.Name)
	}
	t.ID = newID()
	t.CreatedAt = now()
	return nil
}

func prepareTicket(t *Ticket) error {
	if t == nil {
		return fmt.Errorf("create ticket: nil ticket")
	}
	if len(t.Hash) == 0 {
		return fmt.Errorf("create ticket: empty hash")
	}
	if t.SessionID == "" || t.TenantID == "" {
		return fmt.Errorf("create ticket: empty session or tenant id")
	}
	if t.Role != "rw" && t.Role != "ro" {
		return fmt.Errorf("create ticket: role %q is neither rw nor ro", t.Role)
	}
	if t.UsesLeft < 1 {
		return fmt.Errorf("create ticket: uses left %d < 1", t.UsesLeft)
	}
	if t.ExpiresAt.IsZero() {
		return fmt.Errorf("create ticket: no expiry")
	}
	t.ExpiresAt = normTime(t.ExpiresAt)
	return nil
}
