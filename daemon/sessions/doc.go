// Package sessions owns sessions from request to destroyed VM — their
// lifecycle; taking and bringing up a session's machine is package claim's.
//
//   - request.go: a session request: its validation (ValidateRequest),
//     and Create, which records it as a claim (pending, in its pool's
//     line) and has its credentials held for the claim.
//   - manager.go: the Manager; Run runs the replica's loops; dispatch
//     starts claims (claim.Claimer) oldest first per line, and claim
//     records their verdicts; Get, End, Endpoint.
//   - fail.go: failing a session (and destroying its machine), and settling
//     one whose claim was aborted or that was ended while its claim ran.
//   - lifecycle.go: ending sessions (finish: the agent commits and pushes,
//     the machine is destroyed) on request, TTL, idle timeout or process
//     exit (Sweep); heartbeats and taking over from dead replicas
//     (TakeOver); settling the claims a previous process of this replica
//     left (SettleOwnClaims).
//   - cost.go: a session's compute cost estimate.
//   - machines.go: shared reads of session machines for attaches.
//
// A session's credentials live only in the memory of the replica that
// accepted it, until the agent's init; they are never written anywhere.
package sessions
