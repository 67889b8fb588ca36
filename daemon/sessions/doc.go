// Package sessions owns sessions from request to destroyed VM: it records
// claims, runs this replica's claim workers (lease a standby or clone the
// template, start it, init the agent with the user's credentials, mark the
// session ready), ends sessions (finish, push, destroy) on request, TTL, idle
// timeout or process exit, and takes over from dead replicas.
//
// A session's credentials live only in the memory of the replica that
// accepted it, until the agent's init; they are never written anywhere.
package sessions
