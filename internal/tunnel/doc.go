// Package tunnel is the daemon–agent hop: the agent dials home.
//
// Workers may sit on isolated Fly networks that no daemon can reach, so the
// daemon never dials a worker. Instead hangar-agent opens one outbound
// WebSocket to the daemon URL its pool declares (HANGAR_DAEMON_URL) and keeps
// it up; every exchange the daemon has with that agent — health, init,
// status, finish, checkpoints and every attach stream — runs over it.
//
// # Wire
//
// The agent sends GET {daemon URL}/v1/agent/tunnel as a WebSocket upgrade
// with subprotocol "hangar.tunnel.v1" and the headers
//
//	Authorization:           Bearer <Fly OIDC token of this machine, aud = daemon URL>
//	Hangar-Tunnel-Challenge: <32 random bytes, base64url without padding>
//
// The daemon verifies the token (issuer, signature against the issuer's JWKS,
// audience, expiry, not seen before), asks its Authorizer whether the machine
// in it belongs to one of its pools, and answers 101 with
//
//	Hangar-Tunnel-Proof: <ed25519 signature, base64url without padding>
//
// over ProofMessage(audience, machineID, challenge) with the broker key. The
// agent checks the proof against its broker public keys (the rotation list
// included) before it serves anything, so it only ever talks to a daemon that
// holds the broker key. Refusals before the upgrade are HTTP errors with the
// daemon's JSON error body (401 bad token, 403 not a machine of a pool).
//
// After the upgrade the WebSocket's binary messages carry a byte stream
// (websocket.NetConn) with a yamux session on it: the daemon is the yamux
// client and opens one stream per exchange; the agent accepts them and serves
// its ordinary HTTP API (internal/agentapi, attach WebSockets included) on
// them. yamux gives each stream its own flow-control window, so a stalled
// viewer never delays another stream or the writer. yamux keepalives detect a
// dead tunnel on both sides; the agent then redials with jittered exponential
// backoff. Every agent call still carries its own short-lived, single-use
// broker token (internal/agentauth), so the tunnel adds transport, not trust.
//
// # Addressing
//
// Daemon code keeps using agentapi.Client with a base URL: AgentURL(machineID)
// names the machine, and the *http.Client from Registry.HTTPClient routes such
// hosts through the machine's tunnel, on this replica or — through the
// Locator — on the replica that holds it (the relay), waiting for the tunnel
// to come up while the request's context allows.
package tunnel
