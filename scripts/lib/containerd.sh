#!/usr/bin/env bash
# A standalone containerd (what Kubernetes nodes run), from Debian's docker.io or containerd
# package (see ../shared/recipes.md). Source this file, then:
#   containerd_start DIR     containerd on DIR/containerd.sock (root, state under DIR); prints the socket
#   containerd_stop DIR      stops it
set -u

containerd_start() {  # DIR
  local d="$1" i
  mkdir -p "$d"
  if ctr -a "$d/containerd.sock" version >/dev/null 2>&1; then echo "$d/containerd.sock"; return 0; fi
  cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
TOML
  nohup containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 </dev/null &
  echo $! >"$d/containerd.pid"
  for i in $(seq 1 80); do
    if ctr -a "$d/containerd.sock" version >/dev/null 2>&1; then echo "$d/containerd.sock"; return 0; fi
    sleep 0.25
  done
  echo "containerd.sh: containerd did not answer on $d/containerd.sock; last lines of its log:" >&2
  tail -n 20 "$d/containerd.log" >&2
  return 1
}

containerd_stop() {  # DIR
  local d="$1" pid i
  [ -f "$d/containerd.pid" ] || return 0
  pid=$(cat "$d/containerd.pid")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$d/containerd.pid"
}
