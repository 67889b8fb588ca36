// Package claim turns a pending session into a ready one: it takes a
// machine of the session's pool (a standby, or a clone of the template),
// starts or resumes it, waits for its agent and inits the agent with the
// session and the user's credentials. The session lifecycle (package
// sessions) decides when a claim runs — its dispatcher keeps each pool's
// line — and records what became of the session; this package never
// decides a session's fate beyond its claim, and does not import sessions.
//
// # A claim's steps, in order (Claimer.Claim)
//
//  1. Credentials (credentials.go). The replica that accepted the request
//     holds the user's credentials in memory (Hold) until the agent's
//     init; a claim without them (the process restarted) returns
//     ErrNoCredentials. No Fly call.
//  2. Pool (claimer.go). The pool and the template of the session's tenant
//     image come from the pool cache (package poolcache; a miss makes it
//     list the org's apps and their machines). A pool that is gone, has no
//     such template or is draining makes a *Failure.
//  3. A machine (take.go), the first of:
//     - adopt: a clone whose create answer was lost on an earlier attempt
//     is looked for by its metadata (ListMachines, hangar_session);
//     - standby (until Fly refused to start maxRefusedStarts of them):
//     candidates come from the replica's view of the pool's standbys
//     (standbys.go: the reconciler's last listing, else ListMachines by
//     hangar_pool and hangar_role), in the order of the session's regions;
//     AcquireLease (8 s), then GetMachine under the lease (someone may
//     have claimed it just before), the session goes to claiming in the
//     store, and UpdateMetadata makes the standby a session machine;
//     - clone: under the pool's clone lock (store.Locks, across replicas),
//     ListMachines counts the pool against max_machines, then
//     CreateMachine from the template's config (pool.CloneConfig) with a
//     lease, region after region on insufficient capacity; claiming.
//     No machine (the pool is full, or no region has capacity): ErrWait,
//     and the session stays pending in its line.
//  4. The lease (claimer.go, keepLease): RefreshLease every 2 s while the
//     claim works, so that the machine of a claim that died with its
//     replica is free (and destroyed) seconds later.
//  5. Bring up (bringup.go). The session goes to starting; StartMachine
//     (a clone boots by itself; a suspended standby resumes). A tunnelled
//     agent is health-checked and inited over its tunnel at once, beside
//     WaitMachine (started); then ReleaseLease and GetMachine (the started
//     machine's state and address). A resumed agent whose tunnel is dead
//     and that does not answer within 300 ms gets SignalMachine SIGUSR1
//     (redial now). A dialled agent is checked and inited after started.
//     The agent calls are GET /v1/health until it answers, POST /v1/init
//     (the credentials go there and are forgotten here), GET /v1/status
//     while it initialises; then the session is ready in the store. Fly's
//     transient errors are retried until the ready timeout (retryFly),
//     agent calls cut by a tunnel redial are sent again (retryAgentCall).
//  6. When it goes wrong (abort.go). Fly refusing the start (insufficient
//     capacity, or 412 for a machine stuck in created): requeue —
//     DestroyMachine, the session is pending again and claims another
//     machine (a clone after two refusals). Any other failure after a
//     machine was taken: abort — DestroyMachine — and a *Failure with
//     Aborted set: the manager fails the session, or ends it if it was
//     ended meanwhile.
//
// Every claim is timed in hangard_claim_duration_seconds by source
// (standby, clone, adopted) and outcome (ready, failed, requeued).
//
// Destroy (destroy.go) force-destroys a machine for the claim and for the
// lifecycle's ends alike; a destroy Fly refuses now (a dead claim's lease
// still holds the machine) is recorded in the store, and DestroyOwed, run
// by every replica, retries it.
package claim
