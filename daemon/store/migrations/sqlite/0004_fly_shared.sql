-- What one replica last read from Fly (a pool's machines), for the others to
-- use instead of reading it again: Fly allows about one list per app per
-- second. (SQLite has one replica; the table keeps both backends alike.)
CREATE TABLE fly_snapshots (
    name    TEXT PRIMARY KEY,
    data    BLOB NOT NULL,
    read_at TEXT NOT NULL
);
