-- Fly's Machines API rate limits are per action and machine (or app), for the
-- whole organisation: every replica draws from one budget per bucket, kept
-- here as a GCRA "theoretical arrival time" (see ReserveRate).

CREATE TABLE fly_rate_budget (
    bucket TEXT        PRIMARY KEY,
    tat TIMESTAMPTZ NOT NULL
);
CREATE INDEX fly_rate_budget_tat ON fly_rate_budget (tat);

-- What one replica last read from Fly (a pool's machines), for the others to
-- use instead of reading it again: Fly allows about one list per app per second.
CREATE TABLE fly_snapshots (
    name    TEXT        PRIMARY KEY,
    data    BYTEA       NOT NULL,
    read_at TIMESTAMPTZ NOT NULL
);
