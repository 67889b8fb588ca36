#!/usr/bin/env bash
# Fallback for a machine without Terraform on PATH (its releases site is not
# reachable from here): builds OpenTofu, a drop-in Terraform CLI, from source
# through the Go module proxy. OpenTofu's go.mod has a replace directive, so
# `go install pkg@version` refuses it: download the module, copy it somewhere
# writable and build it there (about 6 minutes on 2 cores).
# Prints the directory holding the binary, named `terraform`.
set -euo pipefail
version="${TOFU_VERSION:-1.10.10}"
dest="${1:-$HOME/.cache/hangar/tofu-$version}"
if [ -x "$dest/terraform" ]; then echo "$dest"; exit 0; fi
src=$(go mod download -json "github.com/opentofu/opentofu@v$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] || { echo "install-terraform: could not download opentofu v$version" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
mkdir -p "$dest"
(cd "$work" && CGO_ENABLED=0 go build -o "$dest/terraform" ./cmd/tofu) >&2
echo "$dest"
