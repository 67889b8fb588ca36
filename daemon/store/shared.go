package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"
)

// sqlCommon implements the Store methods whose logic is the same on both
// backends. Each backend embeds one, wired to its own connections and
// transactions (SQLite: IMMEDIATE on the single writer, retried while busy;
// Postgres: the pool, rows locked with the dialect's lockRow); what differs
// beyond that (UseTicket, TryLeader, Columns) stays with the backend.
type sqlCommon struct {
	d        dialect
	isUnique func(error) bool
	// queryRow and query read without a transaction.
	queryRow func(ctx context.Context, q string, args ...any) scanner
	query    func(ctx context.Context, q string, args ...any) (rows rowIter, close func(), err error)
	// exec runs one write statement and gives the rows it changed.
	exec func(ctx context.Context, q string, args ...any) (int64, error)
	// inTx runs fn in one transaction, committed if fn returns nil.
	inTx func(ctx context.Context, fn func(txOps) error) error
}

// txOps are the statements of one open transaction, in either driver.
type txOps struct {
	queryRow func(ctx context.Context, q string, args ...any) scanner
	exec     func(ctx context.Context, q string, args ...any) (int64, error)
}

// Tenants.

func (c *sqlCommon) CreateTenant(ctx context.Context, t *Tenant) error {
	if err := prepareTenant(t); err != nil {
		return err
	}
	q, args, err := insertTenant(c.d, t)
	if err != nil {
		return fmt.Errorf("create tenant %s: %w", t.Name, err)
	}
	_, err = c.exec(ctx, q, args...)
	if c.isUnique(err) {
		return fmt.Errorf("create tenant %s: name or key taken: %w", t.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create tenant %s: %w", t.Name, err)
	}
	return nil
}

func (c *sqlCommon) GetTenant(ctx context.Context, id string) (*Tenant, error) {
	t, err := scanTenant(c.queryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE id = `+c.d.ph(1), id))
	if isNoRows(err) {
		return nil, fmt.Errorf("tenant %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get tenant %s: %w", id, err)
	}
	return t, nil
}

func (c *sqlCommon) TenantByKeyHash(ctx context.Context, hash []byte) (*Tenant, error) {
	if len(hash) == 0 {
		return nil, fmt.Errorf("tenant by key: %w", ErrNotFound)
	}
	t, err := scanTenant(c.queryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE key_hash = `+c.d.ph(1), hash))
	if isNoRows(err) {
		return nil, fmt.Errorf("tenant by key: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("tenant by key: %w", err)
	}
	return t, nil
}

func (c *sqlCommon) ListTenants(ctx context.Context) ([]*Tenant, error) {
	out, err := queryAll(ctx, c, scanTenant, `SELECT `+tenantCols+` FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

func (c *sqlCommon) SetTenantKey(ctx context.Context, id string, hash []byte) error {
	if len(hash) == 0 {
		return fmt.Errorf("set key of tenant %s: empty hash", id)
	}
	err := c.inTx(ctx, func(tx txOps) error {
		n, err := tx.exec(ctx, `UPDATE tenants SET key_hash = `+c.d.ph(1)+` WHERE id = `+c.d.ph(2), hash, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		// A key is rotated because it may have leaked: a ticket it minted
		// (a share link lives up to 24 h) must die with it.
		_, err = tx.exec(ctx, `DELETE FROM tickets WHERE tenant_id = `+c.d.ph(1), id)
		return err
	})
	if c.isUnique(err) {
		return fmt.Errorf("set key of tenant %s: key taken: %w", id, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("set key of tenant %s: %w", id, err)
	}
	return nil
}

func (c *sqlCommon) DeleteTenant(ctx context.Context, id string) error {
	err := c.inTx(ctx, func(tx txOps) error {
		n, err := tx.exec(ctx, `DELETE FROM tenants WHERE id = `+c.d.ph(1), id)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		// A deleted tenant's tickets must not open anything any more.
		_, err = tx.exec(ctx, `DELETE FROM tickets WHERE tenant_id = `+c.d.ph(1), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	return nil
}

// Sessions.

func (c *sqlCommon) CreateSession(ctx context.Context, sess *Session) error {
	if err := prepareNewSession(sess); err != nil {
		return err
	}
	q, args, err := insertSession(c.d, sess)
	if err != nil {
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	_, err = c.exec(ctx, q, args...)
	if c.isUnique(err) {
		return fmt.Errorf("create session %s: id taken: %w", sess.ID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	return nil
}

func (c *sqlCommon) GetSession(ctx context.Context, id string) (*Session, error) {
	sess, err := scanSession(c.queryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = `+c.d.ph(1), id))
	if isNoRows(err) {
		return nil, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return sess, nil
}

func (c *sqlCommon) ListSessions(ctx context.Context, f SessionFilter) ([]*Session, error) {
	q, args := listSessions(c.d, f)
	out, err := queryAll(ctx, c, scanSession, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

func (c *sqlCommon) UpdateSession(ctx context.Context, id string, from []SessionState, fn func(*Session) error) (*Session, error) {
	var out *Session
	err := c.inTx(ctx, func(tx txOps) error {
		old, err := scanSession(tx.queryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = `+c.d.ph(1)+c.d.lockRow, id))
		if isNoRows(err) {
			return fmt.Errorf("session %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read session %s: %w", id, err)
		}
		if err := checkFrom(from, old.State, id); err != nil {
			return err
		}
		sess := copySession(old)
		if err := fn(sess); err != nil {
			return err
		}
		if err := prepareUpdatedSession(id, old, sess); err != nil {
			return err
		}
		q, args, err := updateSession(c.d, id, sess)
		if err != nil {
			return fmt.Errorf("update session %s: %w", id, err)
		}
		if _, err := tx.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("write session %s: %w", id, err)
		}
		out = sess
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (c *sqlCommon) CountLiveSessions(ctx context.Context, tenantID string) (int, error) {
	var n int
	err := c.queryRow(ctx, `SELECT count(*) FROM sessions WHERE tenant_id = `+c.d.ph(1)+` AND state NOT IN (`+c.d.placeholders(2, 2)+`)`,
		tenantID, string(StateEnded), string(StateFailed)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count live sessions of tenant %s: %w", tenantID, err)
	}
	return n, nil
}

func (c *sqlCommon) QueuePosition(ctx context.Context, id string) (int, error) {
	var state string
	var ahead int
	err := c.queryRow(ctx, `SELECT s.state,
			(SELECT count(*) FROM sessions o WHERE o.pool = s.pool AND o.state = `+c.d.ph(1)+` AND o.seq < s.seq)
		FROM sessions s WHERE s.id = `+c.d.ph(2), string(StatePending), id).Scan(&state, &ahead)
	if isNoRows(err) {
		return 0, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("queue position of session %s: %w", id, err)
	}
	if SessionState(state) != StatePending {
		return 0, nil
	}
	return ahead + 1, nil
}

// Tickets.

func (c *sqlCommon) CreateTicket(ctx context.Context, t *Ticket) error {
	if err := prepareTicket(t); err != nil {
		return err
	}
	err := c.inTx(ctx, func(tx txOps) error {
		// Tickets live for seconds to hours: sweeping the dead ones here keeps
		// the table small without a janitor.
		if _, err := tx.exec(ctx, `DELETE FROM tickets WHERE expires_at <= `+c.d.ph(1)+` OR uses_left <= 0`, c.d.time(time.Now())); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `INSERT INTO tickets (hash, session_id, tenant_id, role, expires_at, uses_left) VALUES (`+c.d.placeholders(1, 6)+`)`,
			t.Hash, t.SessionID, t.TenantID, t.Role, c.d.time(t.ExpiresAt), t.UsesLeft)
		return err
	})
	if c.isUnique(err) {
		return fmt.Errorf("create ticket for session %s: %w", t.SessionID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create ticket for session %s: %w", t.SessionID, err)
	}
	return nil
}

// Daemon replicas.

func (c *sqlCommon) Heartbeat(ctx context.Context, daemonID string, at time.Time) error {
	if daemonID == "" {
		return fmt.Errorf("heartbeat: empty daemon id")
	}
	_, err := c.exec(ctx, `INSERT INTO daemons (id, last_seen) VALUES (`+c.d.placeholders(1, 2)+`)
		ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen`, daemonID, c.d.time(at))
	if err != nil {
		return fmt.Errorf("heartbeat of daemon %s: %w", daemonID, err)
	}
	return nil
}

func (c *sqlCommon) DeadDaemons(ctx context.Context, before time.Time) ([]string, error) {
	out, err := queryAll(ctx, c, scanString, `SELECT id FROM daemons WHERE last_seen < `+c.d.ph(1)+` ORDER BY id`, c.d.time(before))
	if err != nil {
		return nil, fmt.Errorf("dead daemons: %w", err)
	}
	return out, nil
}

func (c *sqlCommon) ForgetDaemon(ctx context.Context, daemonID string) error {
	if _, err := c.exec(ctx, `DELETE FROM agent_tunnels WHERE daemon_id = `+c.d.ph(1), daemonID); err != nil {
		return fmt.Errorf("forget the tunnels of daemon %s: %w", daemonID, err)
	}
	if _, err := c.exec(ctx, `DELETE FROM daemons WHERE id = `+c.d.ph(1), daemonID); err != nil {
		return fmt.Errorf("forget daemon %s: %w", daemonID, err)
	}
	return nil
}

// columns lists every table's columns with q, which gives (table, column)
// rows in order.
func (c *sqlCommon) columns(ctx context.Context, q string) (map[string][]string, error) {
	tcs, err := queryAll(ctx, c, scanColumn, q)
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	out := map[string][]string{}
	for _, tc := range tcs {
		out[tc[0]] = append(out[tc[0]], tc[1])
	}
	return out, nil
}

// queryAll runs q and scans every row it gives.
func queryAll[T any](ctx context.Context, c *sqlCommon, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, closeRows, err := c.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer closeRows()
	return collect(rows, scan)
}

// Agent tunnels and replica addresses.

func (c *sqlCommon) AdvertiseDaemon(ctx context.Context, daemonID, addr string, at time.Time) error {
	if daemonID == "" {
		return fmt.Errorf("advertise daemon: empty daemon id")
	}
	_, err := c.exec(ctx, `INSERT INTO daemons (id, last_seen, addr) VALUES (`+c.d.placeholders(1, 3)+`)
		ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, addr = excluded.addr`, daemonID, c.d.time(at), addr)
	if err != nil {
		return fmt.Errorf("advertise daemon %s: %w", daemonID, err)
	}
	return nil
}

func (c *sqlCommon) AnnounceTunnel(ctx context.Context, machineID, daemonID string, at time.Time) error {
	if machineID == "" || daemonID == "" {
		return fmt.Errorf("announce tunnel: empty machine or daemon id")
	}
	_, err := c.exec(ctx, `INSERT INTO agent_tunnels (machine_id, daemon_id, since) VALUES (`+c.d.placeholders(1, 3)+`)
		ON CONFLICT (machine_id) DO UPDATE SET daemon_id = excluded.daemon_id, since = excluded.since`, machineID, daemonID, c.d.time(at))
	if err != nil {
		return fmt.Errorf("announce the tunnel of machine %s: %w", machineID, err)
	}
	return nil
}

func (c *sqlCommon) WithdrawTunnel(ctx context.Context, machineID, daemonID string) error {
	_, err := c.exec(ctx, `DELETE FROM agent_tunnels WHERE machine_id = `+c.d.ph(1)+` AND daemon_id = `+c.d.ph(2), machineID, daemonID)
	if err != nil {
		return fmt.Errorf("withdraw the tunnel of machine %s: %w", machineID, err)
	}
	return nil
}

func (c *sqlCommon) TunnelOwner(ctx context.Context, machineID string) (daemonID, addr string, err error) {
	row := c.queryRow(ctx, `SELECT t.daemon_id, COALESCE(d.addr, '') FROM agent_tunnels t
		LEFT JOIN daemons d ON d.id = t.daemon_id WHERE t.machine_id = `+c.d.ph(1), machineID)
	err = row.Scan(&daemonID, &addr)
	if isNoRows(err) {
		return "", "", fmt.Errorf("tunnel of machine %s: %w", machineID, ErrNotFound)
	}
	if err != nil {
		return "", "", fmt.Errorf("tunnel of machine %s: %w", machineID, err)
	}
	return daemonID, addr, nil
}

func (c *sqlCommon) UseToken(ctx context.Context, key string, until, now time.Time) (bool, error) {
	if key == "" {
		return false, fmt.Errorf("use token: empty key")
	}
	if _, err := c.exec(ctx, `DELETE FROM used_tokens WHERE expires_at < `+c.d.ph(1), c.d.time(now)); err != nil {
		return false, fmt.Errorf("sweep used tokens: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	n, err := c.exec(ctx, `INSERT INTO used_tokens (hash, expires_at) VALUES (`+c.d.placeholders(1, 2)+`)
		ON CONFLICT (hash) DO NOTHING`, sum[:], c.d.time(until))
	if err != nil {
		return false, fmt.Errorf("use token: %w", err)
	}
	return n == 1, nil
}

// Machine destroys owed.

func (c *sqlCommon) RecordDestroy(ctx context.Context, app, machineID, reason, lastErr string, at time.Time) error {
	if app == "" || machineID == "" {
		return fmt.Errorf("record destroy: empty app or machine id")
	}
	_, err := c.exec(ctx, `INSERT INTO machine_destroys (app, machine_id, reason, since, attempts, last_error)
		VALUES (`+c.d.placeholders(1, 4)+`, 1, `+c.d.ph(5)+`)
		ON CONFLICT (app, machine_id) DO UPDATE SET attempts = machine_destroys.attempts + 1,
			last_error = CASE WHEN excluded.last_error = '' THEN machine_destroys.last_error ELSE excluded.last_error END`,
		app, machineID, reason, c.d.time(at), lastErr)
	if err != nil {
		return fmt.Errorf("record destroy of machine %s: %w", machineID, err)
	}
	return nil
}

func (c *sqlCommon) PendingDestroys(ctx context.Context, limit int) ([]*PendingDestroy, error) {
	q := `SELECT app, machine_id, reason, since, attempts, last_error FROM machine_destroys ORDER BY since, app, machine_id`
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	out, err := queryAll(ctx, c, func(row scanner) (*PendingDestroy, error) {
		var p PendingDestroy
		err := row.Scan(&p.App, &p.MachineID, &p.Reason, &timeCol{&p.Since}, &p.Attempts, &p.LastError)
		return &p, err
	}, q)
	if err != nil {
		return nil, fmt.Errorf("pending destroys: %w", err)
	}
	return out, nil
}

func (c *sqlCommon) DestroyDone(ctx context.Context, app, machineID string) error {
	if _, err := c.exec(ctx, `DELETE FROM machine_destroys WHERE app = `+c.d.ph(1)+` AND machine_id = `+c.d.ph(2), app, machineID); err != nil {
		return fmt.Errorf("forget destroy of machine %s: %w", machineID, err)
	}
	return nil
}

func (c *sqlCommon) SaveSnapshot(ctx context.Context, key string, data []byte, readAt time.Time) error {
	if key == "" {
		return fmt.Errorf("save snapshot: empty key")
	}
	_, err := c.exec(ctx, `INSERT INTO fly_snapshots (name, data, read_at) VALUES (`+c.d.placeholders(1, 3)+`)
		ON CONFLICT (name) DO UPDATE SET data = excluded.data, read_at = excluded.read_at
		WHERE fly_snapshots.read_at < excluded.read_at`, key, data, c.d.time(readAt))
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", key, err)
	}
	return nil
}

func (c *sqlCommon) LoadSnapshot(ctx context.Context, key string) ([]byte, time.Time, error) {
	var data []byte
	var at time.Time
	err := c.queryRow(ctx, `SELECT data, read_at FROM fly_snapshots WHERE name = `+c.d.ph(1), key).Scan(&data, &timeCol{&at})
	if isNoRows(err) {
		return nil, time.Time{}, fmt.Errorf("snapshot %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("snapshot %s: %w", key, err)
	}
	return data, at, nil
}
