package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// GCRA (the generic cell rate algorithm) is a token bucket kept as one
// timestamp per bucket, the "theoretical arrival time" tat: each request
// moves it interval past max(tat, now) and may go once tat - now is at most
// burst intervals. So a bucket is one row, updated by one statement.

// gcraDelay returns the new tat and how long the request must wait.
func gcraDelay(tat, now time.Time, interval time.Duration, burst int) (time.Time, time.Duration) {
	if tat.Before(now) {
		tat = now
	}
	tat = tat.Add(interval)
	return tat, max(0, tat.Sub(now)-time.Duration(burst)*interval)
}

// localRate is an in-process GCRA table, for the single-replica SQLite store.
type localRate struct {
	mu  sync.Mutex
	tat map[string]time.Time
}

func (l *localRate) reserve(key string, interval time.Duration, burst int, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tat == nil {
		l.tat = map[string]time.Time{}
	}
	if len(l.tat) > 4096 {
		for k, t := range l.tat {
			if t.Before(now) {
				delete(l.tat, k) // a bucket past its tat is full again
			}
		}
	}
	tat, d := gcraDelay(l.tat[key], now, interval, burst)
	l.tat[key] = tat
	return d
}

func checkRate(key string, interval time.Duration, burst int) error {
	if key == "" || interval <= 0 || burst < 1 {
		return fmt.Errorf("reserve rate: bad bucket %q (interval %v, burst %d)", key, interval, burst)
	}
	return nil
}

// ReserveRate implements Store for SQLite: one process, so memory suffices.
func (s *sqliteStore) ReserveRate(_ context.Context, key string, interval time.Duration, burst int) (time.Duration, error) {
	if err := checkRate(key, interval, burst); err != nil {
		return 0, err
	}
	return s.rate.reserve(key, interval, burst, time.Now()), nil
}

// rateSweepEvery: one reservation in this many also deletes buckets idle for
// a minute (a full bucket needs no row).
const rateSweepEvery = 1000

// ReserveRate implements Store for Postgres, on the database's clock so that
// replicas' clocks need not agree.
func (s *pgStore) ReserveRate(ctx context.Context, key string, interval time.Duration, burst int) (time.Duration, error) {
	if err := checkRate(key, interval, burst); err != nil {
		return 0, err
	}
	if s.rateCalls.Add(1)%rateSweepEvery == 0 {
		if _, err := s.pool.Exec(ctx, `DELETE FROM fly_rate_budget WHERE tat < clock_timestamp() - interval '1 minute'`); err != nil {
			return 0, fmt.Errorf("sweep fly rate budget: %w", err)
		}
	}
	var waitUS int64
	err := s.pool.QueryRow(ctx, `
		WITH now AS (SELECT clock_timestamp() AS t)
		INSERT INTO fly_rate_budget (bucket, tat)
		SELECT $1, now.t + make_interval(secs => $2::float8 / 1e6) FROM now
		ON CONFLICT (bucket) DO UPDATE
		SET tat = GREATEST(fly_rate_budget.tat, (SELECT t FROM now)) + make_interval(secs => $2::float8 / 1e6)
		RETURNING (EXTRACT(EPOCH FROM (fly_rate_budget.tat - (SELECT t FROM now))) * 1e6)::bigint`,
		key, interval.Microseconds()).Scan(&waitUS)
	if err != nil {
		return 0, fmt.Errorf("reserve fly rate budget %s: %w", key, err)
	}
	return max(0, time.Duration(waitUS)*time.Microsecond-time.Duration(burst)*interval), nil
}
