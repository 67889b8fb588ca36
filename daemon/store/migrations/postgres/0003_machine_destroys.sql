-- Machines a replica must destroy but could not yet (another claim's Fly
-- lease still held it, or Fly failed): kept here, not only in memory, so
-- that the destroy survives the replica's crash and any replica finishes it.

CREATE TABLE machine_destroys (
    app        TEXT        NOT NULL,
    machine_id TEXT        NOT NULL,
    reason     TEXT        NOT NULL,
    since      TIMESTAMPTZ NOT NULL,
    attempts   INTEGER     NOT NULL DEFAULT 0,
    last_error TEXT        NOT NULL DEFAULT '',
    PRIMARY KEY (app, machine_id)
);
