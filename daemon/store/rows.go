package store

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds what the SQLite and Postgres stores share: the column
// lists, how a row becomes a Tenant, Session or Ticket and back, and the SQL
// whose only dialect difference is the placeholder. Locking and
// transactions stay with each backend.

// scanner is one result row of either driver: *sql.Row, *sql.Rows,
// pgx.Row and pgx.Rows all satisfy it.
type scanner interface{ Scan(dest ...any) error }

// rowIter is a result set of either driver. The two Close methods differ,
// so callers close it themselves.
type rowIter interface {
	scanner
	Next() bool
	Err() error
}

// collect scans every row of rows with scan.
func collect[T any](rows rowIter, scan func(scanner) (T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func isNoRows(err error) bool {
	return errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows)
}

// timeCol scans a NOT NULL time column of either backend: SQLite gives back
// the text fmtSQLiteTime wrote, Postgres a time.Time.
type timeCol struct{ dst *time.Time }

func (c *timeCol) Scan(src any) error {
	t, ok, err := timeFromColumn(src)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("time column is NULL")
	}
	*c.dst = t
	return nil
}

// nullTimeCol scans a nullable time column; NULL gives a nil pointer.
type nullTimeCol struct{ dst **time.Time }

func (c *nullTimeCol) Scan(src any) error {
	t, ok, err := timeFromColumn(src)
	if err != nil {
		return err
	}
	if !ok {
		*c.dst = nil
		return nil
	}
	*c.dst = &t
	return nil
}

func timeFromColumn(src any) (time.Time, bool, error) {
	switch v := src.(type) {
	case nil:
		return time.Time{}, false, nil
	case time.Time:
		return v.UTC(), true, nil
	case string:
		t, err := parseSQLiteTime(v)
		return t, err == nil, err
	case []byte:
		t, err := parseSQLiteTime(string(v))
		return t, err == nil, err
	default:
		return time.Time{}, false, fmt.Errorf("time column holds a %T", src)
	}
}

// dialect is what differs between the backends in the SQL and values this
// file builds.
type dialect struct {
	ph   func(n int) string  // placeholder of the n-th argument, from 1
	time func(time.Time) any // a time's column value
	json func(b []byte) any  // a JSON column's value; empty is NULL
	// lockRow ends a SELECT of a row that its transaction then writes.
	lockRow string
}

func (d dialect) timePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return d.time(*t)
}

// placeholders lists the placeholders of arguments first to first+n-1.
func (d dialect) placeholders(first, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = d.ph(first + i)
	}
	return strings.Join(ps, ", ")
}

// blobOrNil stores an empty value as NULL.
func blobOrNil(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func textOrNil(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func jsonOrNil(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Tenants.

const tenantCols = `id, name, pools, max_sessions, max_session_duration_ns, key_hash, created_at`

func scanTenant(row scanner) (*Tenant, error) {
	var t Tenant
	var pools, keyHash []byte
	var dur int64
	if err := row.Scan(&t.ID, &t.Name, &pools, &t.MaxSessions, &dur, &keyHash, &timeCol{&t.CreatedAt}); err != nil {
		return nil, err
	}
	var err error
	if t.Pools, err = decodeList(pools); err != nil {
		return nil, fmt.Errorf("decode pools of tenant %s: %w", t.ID, err)
	}
	t.MaxSessionDuration = time.Duration(dur)
	if len(keyHash) > 0 {
		t.KeyHash = keyHash
	}
	return &t, nil
}

// insertTenant gives the statement and arguments that insert t.
func insertTenant(d dialect, t *Tenant) (string, []any, error) {
	pools, err := encodeList(t.Pools)
	if err != nil {
		return "", nil, fmt.Errorf("encode pools: %w", err)
	}
	return `INSERT INTO tenants (` + tenantCols + `) VALUES (` + d.placeholders(1, 7) + `)`,
		[]any{t.ID, t.Name, d.json(pools), t.MaxSessions, int64(t.MaxSessionDuration), blobOrNil(t.KeyHash), d.time(t.CreatedAt)}, nil
}

// Sessions.

var sessionColumns = []string{"id", "tenant_id", "pool", "tenant_image", "region", "state", "reason", "machine_id", "app_name",
	"repo", "branch", "session_branch", "mode", "command", "env", "term_cols", "term_rows",
	"git_author_name", "git_author_email", "owner", "created_at", "ready_at", "ended_at", "push", "cost_usd", "updated_at"}

var sessionCols = strings.Join(sessionColumns, ", ")

// sessionFixed reports the columns UpdateSession never writes.
func sessionFixed(col string) bool { return col == "id" || col == "tenant_id" || col == "created_at" }

func scanSession(row scanner) (*Session, error) {
	var s Session
	var j sessionJSON
	var state string
	err := row.Scan(&s.ID, &s.TenantID, &s.Pool, &s.TenantImage, &s.Region, &state, &s.Reason, &s.MachineID, &s.AppName,
		&s.Repo, &s.Branch, &s.SessionBranch, &s.Mode, &j.command, &j.env, &s.Cols, &s.Rows,
		&s.GitAuthorName, &s.GitAuthorEmail, &s.Owner, &timeCol{&s.CreatedAt}, &nullTimeCol{&s.ReadyAt}, &nullTimeCol{&s.EndedAt},
		&j.push, &s.CostUSD, &timeCol{&s.UpdatedAt})
	if err != nil {
		return nil, err
	}
	s.State = SessionState(state)
	if err := j.decodeInto(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// sessionValues gives s's column values in sessionColumns order.
func sessionValues(d dialect, s *Session) ([]any, error) {
	j, err := encodeSessionJSON(s)
	if err != nil {
		return nil, err
	}
	return []any{s.ID, s.TenantID, s.Pool, s.TenantImage, s.Region, string(s.State), s.Reason, s.MachineID, s.AppName,
		s.Repo, s.Branch, s.SessionBranch, s.Mode, d.json(j.command), d.json(j.env), s.Cols, s.Rows,
		s.GitAuthorName, s.GitAuthorEmail, s.Owner, d.time(s.CreatedAt), d.timePtr(s.ReadyAt), d.timePtr(s.EndedAt),
		d.json(j.push), s.CostUSD, d.time(s.UpdatedAt)}, nil
}

// insertSession gives the statement and arguments that insert s.
func insertSession(d dialect, s *Session) (string, []any, error) {
	vals, err := sessionValues(d, s)
	if err != nil {
		return "", nil, err
	}
	return `INSERT INTO sessions (` + sessionCols + `) VALUES (` + d.placeholders(1, len(vals)) + `)`, vals, nil
}

// updateSession gives the statement and arguments that write every column
// of session id but the fixed ones.
func updateSession(d dialect, id string, s *Session) (string, []any, error) {
	vals, err := sessionValues(d, s)
	if err != nil {
		return "", nil, err
	}
	var set []string
	var args []any
	for i, col := range sessionColumns {
		if sessionFixed(col) {
			continue
		}
		args = append(args, vals[i])
		set = append(set, col+" = "+d.ph(len(args)))
	}
	args = append(args, id)
	return `UPDATE sessions SET ` + strings.Join(set, ", ") + ` WHERE id = ` + d.ph(len(args)), args, nil
}

// listSessions gives the query and arguments that list the sessions f
// selects, oldest first.
func listSessions(d dialect, f SessionFilter) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return d.ph(len(args))
	}
	if f.TenantID != "" {
		where = append(where, "tenant_id = "+arg(f.TenantID))
	}
	if f.Owner != "" {
		where = append(where, "owner = "+arg(f.Owner))
	}
	if f.Pool != "" {
		where = append(where, "pool = "+arg(f.Pool))
	}
	if len(f.States) > 0 {
		ps := make([]string, len(f.States))
		for i, st := range f.States {
			ps[i] = arg(string(st))
		}
		where = append(where, "state IN ("+strings.Join(ps, ", ")+")")
	}
	q := `SELECT ` + sessionCols + ` FROM sessions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq"
	if f.Limit > 0 {
		q += " LIMIT " + arg(f.Limit)
	}
	return q, args
}

// Tickets.

// ticketReturning are the columns a used ticket's row gives back, as
// scanTicket reads them.
const ticketReturning = `session_id, tenant_id, role, expires_at, uses_left`

func scanTicket(row scanner, hash []byte) (*Ticket, error) {
	var t Ticket
	if err := row.Scan(&t.SessionID, &t.TenantID, &t.Role, &timeCol{&t.ExpiresAt}, &t.UsesLeft); err != nil {
		return nil, err
	}
	t.Hash = append([]byte(nil), hash...)
	return &t, nil
}

// scanColumn reads one (table, column) row of a store's Columns query.
func scanColumn(row scanner) ([2]string, error) {
	var tc [2]string
	err := row.Scan(&tc[0], &tc[1])
	return tc, err
}

func scanString(row scanner) (string, error) {
	var s string
	err := row.Scan(&s)
	return s, err
}
