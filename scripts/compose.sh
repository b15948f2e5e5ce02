#!/usr/bin/env bash
# `docker compose` without Docker: the real Compose v2 CLI, built from source (scripts/compose/go.mod
# pins the release) and run with the given arguments. There is no Docker engine on the build
# machines, so only commands that need none work, above all `config`, which loads, validates and
# interpolates the Compose files exactly as `up` would (tests/test_compose.py):
#
#   scripts/compose.sh --env-file .env -f docker/compose.yaml [-f docker/compose.mqtt.yaml] config
#
# The binary is built once per version of the pinned module and kept outside the clone, in
# ${IOTHUB_CACHE:-/var/cache/iothub}, because CI runs in a fresh clone each time. Building needs
# only Go and the Go module proxy; it takes about two minutes.
set -euo pipefail

module="$(cd "$(dirname "${BASH_SOURCE[0]}")/compose" && pwd)"
cache="${IOTHUB_CACHE:-/var/cache/iothub}"
# Keyed on everything that goes into the build, this script's build command included.
key="$(cat "$module/go.mod" "$module/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
binary="$cache/compose-$key"

# Runs in a subshell: its exports, cd and EXIT trap stay there.
build() {
  go="$(command -v go || echo /usr/local/go/bin/go)"
  work="$(mktemp -d "$cache/build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  # Nothing from the user's Go setup (go env file, caches, toolchain switching) goes into the
  # build; the module caches are thrown away afterwards (-modcacherw lets rm delete them).
  export GOENV=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -modcacherw"
  export GOPATH="$work/gopath" GOCACHE="$work/gocache"
  cd "$module"
  version="$("$go" list -m -f '{{.Version}}' github.com/docker/compose/v5)"
  echo "compose.sh: building Docker Compose $version from source into $binary (once; about two minutes)" >&2
  "$go" build -trimpath -o "$work/compose" \
    -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$version" \
    github.com/docker/compose/v5/cmd
  mv "$work/compose" "$binary"
  echo "compose.sh: built $binary" >&2
}

if [[ ! -x $binary ]]; then
  mkdir -p "$cache"
  # One build at a time (a developer's run and CI's may start together); the rest wait for it.
  exec 9>"$cache/compose.lock"
  flock 9
  [[ -x $binary ]] || (build)
  exec 9>&-
fi
exec "$binary" "$@"
