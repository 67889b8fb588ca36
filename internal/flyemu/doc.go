// Package flyemu is a local emulator of Fly.io's Machines API, used by tests,
// benchmarks and the quickstart (`hangard flyemu`). It is a test and
// development tool, not a second backend.
//
// # What is emulated
//
// The /v1 endpoints hangar uses, with Fly's JSON shapes (internal/fly types)
// and error body {"error": "...", "status": "..."}:
//
//   - apps: create (name or app_name, org_slug, network; 422 name_taken),
//     get, list by org_slug, delete (machines are killed and destroyed, with
//     or without force); app secrets (list, get, set, batch update, delete),
//     which are exported into machine environments unless skip_secrets;
//   - machines: create (region, name, skip_launch, lease_ttl), get, list
//     (metadata.KEY=VALUE, include_deleted, region, state, summary), update
//     (full replace, current_version check, restart of a running machine,
//     skip_launch), start, stop (signal, timeout), suspend, restart, signal,
//     cordon/uncordon, exec (a command run in the machine's directory, environment
//     and network namespace), destroy (force or kill), wait (repeatable or comma
//     separated states including settled, timeout ≤ 60 s, 408 on timeout,
//     version, from_event_id), events (newest first, ms timestamps);
//   - leases: get, acquire (TTL in the body or ?ttl=), refresh (same nonce),
//     release, with the {"status":"success","data":{...}} envelope; while a
//     lease is held every mutation without its nonce gets 409; leases expire;
//   - metadata: get all, get/set/delete one key, batch PUT (replace) / PATCH
//     (merge) with machine_version (412 when stale).
//
// Machines are real local processes. config.init.exec (else init.entrypoint
// + init.cmd over the image's) names the process; an image maps to a command
// through Config.Images (LoadImages reads a JSON or HCL file), else runs
// Config.AgentBinary (with HANGAR_WORKSPACE=workspace, so that each agent
// works inside its own machine directory). Each process leads its own process group, runs in
// DataDir/<app>/<machine id> with HOME in a "home" directory there and its
// output in "machine.log", and gets the machine env, the app's secrets, PATH
// and Fly's runtime variables (FLY_APP_NAME, FLY_MACHINE_ID, FLY_ALLOC_ID,
// FLY_REGION, FLY_PRIVATE_IP, FLY_PUBLIC_IP, FLY_IMAGE_REF,
// FLY_MACHINE_VERSION, FLY_PROCESS_GROUP, FLY_VM_MEMORY_MB, PRIMARY_REGION).
//
// # Image mode
//
// With Config.ImageStore (an OCI image layout; `make worker-image` exports
// the worker image into one, `hangard flyemu --image-store` names it), a
// machine whose config.image the store holds runs as an OCI container under
// runc (Linux, as root), as a Fly Machine boots its image: the image's
// rootfs, fresh at every start (an overlay over the image's layers, unpacked
// once per image under the store's .rootfs; the writable layer is thrown
// away at the next start); its user, entrypoint and cmd (init.exec,
// init.entrypoint and init.cmd override them as in process mode), env and
// workdir; the machine's network namespace (its 6PN address and walls carry
// over); its own pid, mount, ipc and uts namespaces with the machine id as
// hostname; the guest's memory as a cgroup v1 memory limit; Fly's runtime
// env, with the local API socket bind-mounted at /.fly/api. runc run stays
// in the foreground as the machine's process: stop signals reach the
// container's init through it, SIGKILL reaches every process of the
// container; suspend freezes the container's freezer cgroup (as runc pause
// does) and resume thaws it. When the memory limit kills a process the
// container's exit reports oom_killed, as Fly's exit event does. Every
// launch says its mode ("image" or "process") in the log and in its event
// (request.hangar_emulator_mode); machines whose image the store lacks run
// as processes. A migration (Migrate) or a lost snapshot starts a new
// container on a fresh rootfs, as any start does (a migrated one in the
// network namespace of its new 6PN address). Container state lives under
// /run/hangar-flyemu/runc, cgroups under hangar-flyemu/ below the
// emulator's own memory cgroup. Not done:
// zombie reaping inside the container (Fly's init is PID 1 there; here the
// entrypoint is), rlimits beyond the emulator's own, and containers left by
// an emulator that died without Close. Machine exec runs inside the
// container (runc exec: the container's user, env and workdir).
//
// # Networking
//
// On Fly an app created with a custom network cannot be reached from outside
// that network, which is what lets a worker's agent dial out to the daemon
// while nothing dials in. Code that relies on it must be tested against the
// same wall, so in namespace mode (Config.Network; the default when running
// as root with ip, nsenter and nft) every machine runs in its own network
// namespace, entered with nsenter so its pid and process group are the
// program's, with a 6PN address in fdaa::/16 as private_ip and
// FLY_PRIVATE_IP. Apps without a network share their org's default network;
// apps naming one share that network (per org). Each network is a bridge on
// the host, fdaa:EEEE:NNNN::/64 (EEEE random per emulator, so parallel
// emulators never collide), with the host as gateway (::1) at a fixed MAC
// address (Linux would otherwise move a bridge's MAC to its lowest port's
// as machines come and go, and stall every machine's connections while
// neighbour discovery catches up; Fly's gateway does not move). Machines of a
// network reach each other; networks never reach each other; the host may
// dial machines of a default network (the daemon sits on the org network)
// but its new connections into a custom network are refused. One host
// address stands for the internet (InternetAddr: a ULA outside fdaa::/16 on
// lo): every machine reaches it and nothing else on the host, so servers
// machines must reach (the daemon's public URL, test git servers) listen
// there or on [::]. An nftables table per emulator (inet hgemu_<id>) holds
// these rules; host forwarding stays off. Namespaces, links, addresses and
// the table are removed on destroy and Close, and by the next emulator when
// their owner died (state files under /run/hangar-flyemu). A machine's
// address belongs to its place on the host, not its id, as a migration can
// change it on Fly. Creating a machine costs about 45 ms more than in
// loopback mode (two ip invocations).
//
// In loopback mode (no root, or Config.Network "loopback") machines share the
// host's network: private_ip is a loopback address 127.A.B.N from a /24
// claimed per emulator (by holding a listener on 127.A.B.1), InternetAddr is
// 127.0.0.1, and nothing is isolated.
//
// # Machine identity
//
// Each machine gets a local Machines API socket (its path in
// HANGAR_FLY_API_SOCKET; /.fly/api on Fly) serving POST /v1/tokens/oidc
// {"aud": ...}: a raw RS256 JWT with Fly's claims (sub <org>:<app>:<machine
// name>, app_id, app_name, image, image_digest, machine_id, machine_name,
// machine_version, org_id, org_name, region; 10 minutes). The token names
// the machine the socket was made for, never what the caller claims, so
// that a daemon can trust it as Fly's word. The emulator is the issuer:
// <base URL>/oidc/<org> (SetBaseURL; OIDCIssuer), with a discovery document
// and key set that need no API token. OIDCToken mints tokens a socket would
// not (another machine's, expired ones) for tests of forged identities.
//
// State machine, as on Fly: create → created → (unless skip_launch) starting
// → started (after Config.BootDelay); stop sends the requested signal, else
// stop_config's, else SIGINT, to the group and SIGKILL after the timeout
// (default 5 s) → stopped; suspend = SIGSTOP → suspended (refused above 2 GB
// of memory, as on Fly); start of a suspended machine = SIGCONT (same
// process, memory kept, unless its snapshot was lost); start of a created or stopped one = a new process;
// a process exiting by itself → stopped, subject to the restart policy (no,
// always, on-failure with max_retries; on-failure by default) and
// auto_destroy (which also destroys after a requested stop); destroy refuses
// a running machine without force (412) and kills it with force. When a
// machine's main process exits, the rest of its group is killed, as a VM's
// processes die with it. Close kills every machine and waits for them.
//
// # Fly as it really is
//
// By default the emulator applies Fly's published rate limits
// (fly.LimitKey, shared with the client's pacing: per action and machine,
// else app, 1 req/s with bursts of 3; getting a machine 5/s burst 10;
// listing machines per app; app deletions 100/min) and answers excess calls
// 429 without Retry-After, as Fly promises none. Tests that make many calls
// on one machine or app go through a pacing client (fly.Client paces by
// default) or wait out the 429s; NoRateLimits turns the limits off and
// RetryAfter adds the header. RateLimited counts the 429s.
//
// Other knobs, off by default: per-call Latency; FaultRate/FaultSeed inject
// 429s, 500s and dropped connections, and TimeoutRate 408s, always before
// the call is acted on (so a retry is safe); NotFoundAfterCreate answers 404
// to listing a fresh app's machines and to getting or waiting for a fresh
// machine, as Fly's eventual consistency may; NoBatchMetadata makes the
// batch metadata endpoint (in Fly's OpenAPI document only) answer 404;
// Migrate stops a machine as a stop would (its stop_config) and starts it
// again as a new process on a new private IP, as a host migration does;
// SnapshotLossRate and LoseSnapshot make a resume boot cold (a new
// process), as Fly does not promise a suspend snapshot survives;
// SetHostReachable takes a machine's host away (host_status "unreachable",
// only incomplete_config, every operation failing with Fly's 503) and back;
// Token requires "Bearer" or "FlyV1" authorization; SetRegionFull makes
// creates in a region, and starts of machines there that hold no resources
// (created or stopped), fail with insufficient_capacity;
// UnstartableAfterCreate and SetStartable make a machine created with
// skip_launch refuse to start (412) for a while, as machines stuck in
// "created" do on Fly.
//
// # What is not emulated
//
// VMs and images outside the image store (nothing is pulled; such a
// process runs on the host, as the emulator's user, with the host's
// filesystem: the machine directory is not a fresh rootfs and survives
// stops), .internal DNS, IPv4 inside namespaces,
// Flycast and ip_assignments across networks, the Fly Proxy (services, autostart/autostop, fly-replay, checks), volumes
// and mounts, files, processes[] and containers, ps/versions/memory
// endpoints, org-wide machine lists, certificates and IP assignments,
// multiple hosts (a migration only changes the private IP), and GraphQL. A process that left the
// machine's process group (setsid, as a PTY child does) is signalled with the
// machine as long as it descends from the main process; once the main process
// has exited such orphans are no longer found (a PTY child usually ends on
// the SIGHUP of its terminal closing). The package targets Linux; elsewhere
// it builds, signals process groups only, and has a small window in which a
// reused process group id could be signalled.
package flyemu
