-- Agents dial home (internal/tunnel): each replica records the agent tunnels
-- it holds, so that another replica can relay to them, and the address other
-- replicas reach it on. used_tokens makes a machine's identity token single
-- use across every replica.

ALTER TABLE daemons ADD COLUMN addr TEXT NOT NULL DEFAULT '';

CREATE TABLE agent_tunnels (
    machine_id TEXT PRIMARY KEY,
    daemon_id  TEXT NOT NULL,
    since      TEXT NOT NULL
);
CREATE INDEX agent_tunnels_daemon ON agent_tunnels (daemon_id);

CREATE TABLE used_tokens (
    hash       BLOB PRIMARY KEY,                         -- SHA-256 of a token's jti, never the token
    expires_at TEXT NOT NULL
);
CREATE INDEX used_tokens_expires_at ON used_tokens (expires_at);
