-- Fly's Machines API rate limits are per action and machine (or app), for the
-- whole organisation: every replica draws from one budget per bucket, kept
-- here as a GCRA "theoretical arrival time" (see ReserveRate).

CREATE TABLE fly_rate_budget (
    key TEXT        PRIMARY KEY,
    tat TIMESTAMPTZ NOT NULL
);
CREATE INDEX fly_rate_budget_tat ON fly_rate_budget (tat);
