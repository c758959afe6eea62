#!/usr/bin/env bash
# Build the image archives the tests use, from the real engines (see docs/ARCHIVES.md).
# Source this file (it sources engines.sh), then:
#   fixtures_build OUTDIR ENGINEDIR
# dockerd and podman must already run under ENGINEDIR (docker_start / podman_start).
# Everything is offline: images are built FROM scratch by podman from seeded files.
# OUTDIR/.complete holds the fixtures version; a matching OUTDIR is reused as is.
set -u

FIXTURES_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=engines.sh
. "$FIXTURES_LIB_DIR/engines.sh"

# Bump when the recipe changes in a way the script hashes below would not catch.
FIXTURES_RECIPE=4

fixtures_version() {
  local h
  h=$(cat "$FIXTURES_LIB_DIR/fixtures.sh" "$FIXTURES_LIB_DIR/make_oci_archive.py" | sha256sum | cut -c1-12)
  echo "dogestry-fixtures-r$FIXTURES_RECIPE-$h"
}

# The images (docker-style references) and the archives that hold them.
FIXTURES_REFS=(dogestry-test/base:v1 dogestry-test/app:v1 dogestry-test/app:v2
               dogestry-test/multi:a dogestry-test/multi:b)

_fx_log() { echo "fixtures: $*" >&2; }

_fx_docker() {  # ENGINEDIR ARGS...
  local e="$1"; shift
  DOCKER_HOST="unix://$e/docker.sock" docker "$@"
}

_fx_docker_rm_test_images() {  # ENGINEDIR
  local e="$1" ids
  ids=$(_fx_docker "$e" images -q --filter 'reference=dogestry-test/*' | sort -u)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    _fx_docker "$e" rmi -f $ids >/dev/null
  fi
  # tags a loaded podman archive may carry
  ids=$(_fx_docker "$e" images -q --filter 'reference=localhost/dogestry-test/*' | sort -u)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || _fx_docker "$e" rmi -f $ids >/dev/null
}

# Load ARCHIVE into dockerd from empty and check every REF has the expected image ID.
_fx_verify_docker_load() {  # ENGINEDIR EXPECTED.json ARCHIVE REF...
  local e="$1" exp="$2" arc="$3"; shift 3
  local ref want got
  _fx_docker_rm_test_images "$e"
  if ! _fx_docker "$e" load -q -i "$arc" >"$arc.load.log" 2>&1; then
    _fx_log "docker load of $(basename "$arc") FAILED:"; cat "$arc.load.log" >&2; return 1
  fi
  for ref in "$@"; do
    want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][sys.argv[2]]["id"])' "$exp" "$ref")
    got=$(_fx_docker "$e" image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)
    if [ "$want" != "$got" ]; then
      _fx_log "docker load of $(basename "$arc"): $ref is '$got', expected '$want'"; return 1
    fi
  done
  rm -f "$arc.load.log"
}

fixtures_build() {  # OUTDIR ENGINEDIR
  local out="$1" e="$2" version tmp ctx t0 ref
  version=$(fixtures_version)
  if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$version" ]; then
    _fx_log "cached ($version) in $out"
    return 0
  fi
  t0=$(date +%s)
  _fx_log "building $version into $out"
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp/bad" "$tmp/listings"
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/dogestry-fixture-ctx.XXXXXX")
  local py="$FIXTURES_LIB_DIR/make_oci_archive.py"

  (
    set -euo pipefail
    python3 "$py" gen-context "$ctx"

    # 1. build with podman (fixed timestamps: same image IDs on every build)
    local pb=(build --timestamp 0 --pull=never --layers -q)
    podman_cli "$e" "${pb[@]}" -f "$ctx/Containerfile.base" -t docker.io/dogestry-test/base:v1 "$ctx" >/dev/null
    podman_cli "$e" "${pb[@]}" -f "$ctx/Containerfile.app1" -t docker.io/dogestry-test/app:v1 "$ctx" >/dev/null
    podman_cli "$e" "${pb[@]}" -f "$ctx/Containerfile.app2" -t docker.io/dogestry-test/app:v2 "$ctx" >/dev/null
    podman_cli "$e" "${pb[@]}" -f "$ctx/Containerfile.multi" -t docker.io/dogestry-test/multi:a "$ctx" >/dev/null
    podman_cli "$e" tag docker.io/dogestry-test/multi:a docker.io/dogestry-test/multi:b

    # 2. podman's docker-archive: all images in one file, and one single-image file
    local prefs=()
    for ref in "${FIXTURES_REFS[@]}"; do prefs+=("docker.io/$ref"); done
    podman_cli "$e" save -q -m --format docker-archive -o "$tmp/podman.tar" "${prefs[@]}"
    podman_cli "$e" save -q --format docker-archive -o "$tmp/podman-app-v1.tar" docker.io/dogestry-test/app:v1

    # 3. into dockerd, then docker save (legacy layout of dockerd 20.10)
    _fx_docker_rm_test_images "$e"
    _fx_docker "$e" load -q -i "$tmp/podman.tar" >/dev/null
    _fx_docker "$e" save -o "$tmp/docker-legacy.tar" "${FIXTURES_REFS[@]}"
    _fx_docker "$e" save -o "$tmp/docker-app-v1.tar" dogestry-test/app:v1
    _fx_docker "$e" save -o "$tmp/docker-app-v2.tar" dogestry-test/app:v2
    chmod 644 "$tmp"/*.tar
    _fx_docker "$e" image inspect "${FIXTURES_REFS[@]}" >"$ctx/inspect.json"

    # 4. Docker >= 25 / containerd-store archives, derived from the legacy one
    python3 "$py" convert "$tmp/docker-legacy.tar" "$tmp/oci-docker25.tar" --style docker25
    python3 "$py" convert "$tmp/docker-legacy.tar" "$tmp/oci-gzip-layers.tar" --style containerd --gzip

    # 5. malformed archives
    python3 "$py" bad "$tmp/docker-app-v1.tar" "$tmp/bad" --notes "$ctx/bad-notes.json"

    # 6. expected.json
    local all; all=$(IFS=,; echo "${FIXTURES_REFS[*]}")
    python3 "$py" expected "$ctx/inspect.json" "$tmp/expected.json" --version "$version" \
      --archive "docker-legacy.tar=$all" --archive "podman.tar=$all" \
      --archive "oci-docker25.tar=$all" --archive "oci-gzip-layers.tar=$all" \
      --archive "docker-app-v1.tar=dogestry-test/app:v1" --archive "docker-app-v2.tar=dogestry-test/app:v2" \
      --archive "podman-app-v1.tar=dogestry-test/app:v1" --bad-notes "$ctx/bad-notes.json"

    # 7. every good archive must load into dockerd with the expected IDs
    local f
    for f in docker-legacy podman oci-docker25 oci-gzip-layers; do
      _fx_verify_docker_load "$e" "$tmp/expected.json" "$tmp/$f.tar" "${FIXTURES_REFS[@]}"
    done
    _fx_verify_docker_load "$e" "$tmp/expected.json" "$tmp/docker-app-v1.tar" dogestry-test/app:v1
    _fx_verify_docker_load "$e" "$tmp/expected.json" "$tmp/docker-app-v2.tar" dogestry-test/app:v2
    _fx_verify_docker_load "$e" "$tmp/expected.json" "$tmp/podman-app-v1.tar" dogestry-test/app:v1

    # 8. entry order, for docs and for debugging
    for f in "$tmp"/*.tar; do
      python3 "$py" listing "$f" >"$tmp/listings/$(basename "$f" .tar).txt"
    done

    # leave both engines without test images
    _fx_docker_rm_test_images "$e"
    podman_cli "$e" rmi -f "${prefs[@]}" >/dev/null
    podman_cli "$e" image prune -f >/dev/null
  )
  local rc=$?
  rm -rf "$ctx"
  if [ $rc -ne 0 ]; then
    _fx_log "FAILED (partial output left in $tmp)"
    return $rc
  fi
  echo "$version" >"$tmp/.complete"
  rm -rf "$out"
  mv "$tmp" "$out"
  _fx_log "built in $(( $(date +%s) - t0 )) s"
}
