#!/usr/bin/env bash
# Start and stop the real container engines the tests use (see ../shared/recipes.md).
# Source this file, then:
#   engines_install            apt-get install docker.io podman if missing
#   docker_start DIR           dockerd on unix://DIR/docker.sock (data under DIR); prints the DOCKER_HOST
#   podman_start DIR           podman's Docker-compatible API on unix://DIR/podman.sock
#   engines_stop DIR           stops whatever was started under DIR
set -u

engines_install() {
  local need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v podman >/dev/null 2>&1 || need+=(podman)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

_wait_socket() {  # SOCKET LOG NAME
  local i
  for i in $(seq 1 120); do
    if curl -sf --max-time 2 --unix-socket "$1" http://d/_ping >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  echo "engines.sh: $3 did not answer on $1; last lines of $2:" >&2
  tail -n 20 "$2" >&2
  return 1
}

docker_start() {  # DIR
  local d="$1"; mkdir -p "$d"
  if curl -sf --max-time 2 --unix-socket "$d/docker.sock" http://d/_ping >/dev/null 2>&1; then
    echo "unix://$d/docker.sock"; return 0
  fi
  rm -f "$d/docker.sock" "$d/docker.pid"
  # One download attempt: a pull of a corrupt layer (the serve tests) fails at once instead of
  # being retried for a minute.
  nohup dockerd --iptables=false --ip6tables=false --bridge=none --max-download-attempts=1 \
    -H "unix://$d/docker.sock" --data-root "$d/root" --exec-root "$d/exec" \
    --pidfile "$d/docker.pid" >"$d/dockerd.log" 2>&1 </dev/null &
  _wait_socket "$d/docker.sock" "$d/dockerd.log" dockerd || return 1
  echo "unix://$d/docker.sock"
}

podman_start() {  # DIR
  local d="$1"; mkdir -p "$d"
  if curl -sf --max-time 2 --unix-socket "$d/podman.sock" http://d/_ping >/dev/null 2>&1; then
    echo "unix://$d/podman.sock"; return 0
  fi
  rm -f "$d/podman.sock"
  nohup podman --root "$d/storage" --runroot "$d/run" system service --time=0 "unix://$d/podman.sock" \
    >"$d/podman.log" 2>&1 </dev/null &
  echo $! > "$d/podman.pid"
  _wait_socket "$d/podman.sock" "$d/podman.log" podman || return 1
  echo "unix://$d/podman.sock"
}

# podman CLI against the same storage as podman_start DIR.
podman_cli() {  # DIR ARGS...
  local d="$1"; shift
  podman --root "$d/storage" --runroot "$d/run" "$@"
}

engines_stop() {  # DIR
  local d="$1" f pid
  for f in "$d/docker.pid" "$d/podman.pid"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}
