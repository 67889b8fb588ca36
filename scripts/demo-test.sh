#!/usr/bin/env bash
# Checks `make demo` as a user runs it: it reaches a ready session, and a
# Ctrl-C (SIGINT to its process group, as a terminal sends it) stops it and
# leaves no process behind. Runs without Claude Code (HANGAR_DEMO_CLAUDE=0)
# and without the worker image (HANGAR_DEMO_IMAGE=0)
# and in a temporary state directory, so it downloads nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/hangar-demo-test.XXXXXX")"
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})' 2>/dev/null ||
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fail() { echo "demo-test: FAIL: $*" >&2; echo "--- demo output" >&2; cat "$DIR/demo.out" >&2 || true; echo "--- hangard log" >&2; tail -40 "$DIR/hangard.log" >&2 || true; echo "0 passed, 1 failed"; exit 1; }

# ours lists the processes whose working directory or command line lies in
# the demo's state directory (nothing else lives there).
ours() {
  local p q cwd
  for p in /proc/[0-9]*; do
    q="${p#/proc/}"
    [ "$q" = "$$" ] && continue
    cwd="$(readlink "$p/cwd" 2>/dev/null || true)"
    if [[ "$cwd" == "$DIR"* ]] || [[ "$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" == *"$DIR/"* ]]; then
      printf ' %s' "$q"
    fi
  done
}

# Job control gives the demo its own process group, as when a user runs it in
# the foreground of a terminal. SIGINT is reset to its default first: a shell
# that was itself started with SIGINT ignored (nohup, a background job of a
# non-interactive shell, some CI runners) passes that on, and bash cannot
# trap a signal that was ignored when it started.
set -m
HANGAR_DEMO_CLAUDE=0 HANGAR_DEMO_IMAGE=0 HANGAR_DEMO_DIR="$DIR" HANGAR_DEMO_LISTEN="127.0.0.1:$port" \
  env --default-signal=INT "$ROOT/scripts/demo.sh" >"$DIR/demo.out" 2>&1 </dev/null &
pid=$!
set +m
cleanup() {
  kill -KILL -- "-$pid" 2>/dev/null || true
  local left
  left="$(ours)"
  [ -n "$left" ] && kill -KILL $left 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 1800); do
  [ -f "$DIR/ready" ] && break
  kill -0 "$pid" 2>/dev/null || fail "the demo exited before it was ready"
  sleep 0.1
done
[ -f "$DIR/ready" ] || fail "the demo was not ready within 180 s"
sid="$(sed -n 's/^demo ready: //p' "$DIR/ready")"
grep -q "hangar --env-file .* attach $sid" "$DIR/demo.out" || fail "the demo did not print the attach command"
grep -q "/#key=" "$DIR/demo.out" || fail "the demo did not print the web terminal URL"
# Captured first: under pipefail, `| grep -q` fails when its early exit
# makes the writer die of SIGPIPE.
show="$("${HANGAR_BIN_DIR:-$ROOT/bin}/hangar" --env-file "$DIR/data" sessions show "$sid")" || fail "hangar sessions show $sid failed"
[[ "$show" =~ state:[^$'\n']*ready ]] || fail "session $sid is not ready: $show"
echo "demo-test: demo ready with session $sid; sending Ctrl-C"

kill -INT -- "-$pid"
for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the demo did not stop within 60 s of Ctrl-C"

left="$(ours)"
if [ -n "$left" ]; then
  ps -o pid,pgid,sid,args -p ${left// /,} >&2 || true
  fail "processes left behind after Ctrl-C:$left"
fi
trap - EXIT
rm -rf "$DIR"
echo "demo-test: Ctrl-C left no process"
echo "1 passed, 0 failed"
