#!/usr/bin/env bash
# Start and stop the Manta simulator (scripts/manta-sim/server.js), which checks
# http-signature auth with Joyent's own libraries (see /work/shared/recipes.md and
# scripts/manta-sim/README.md). Source this file, then:
#   manta_install              apt-get install node-http-signature node-sshpk (and node, openssl,
#                              ssh-keygen) if missing; a cached venv with Joyent's Python SDK
#                              (manta==3.0.0) for the independent-client check (a failure there
#                              only warns). Prints nothing on success.
#   manta_start DIR [PORT]     generates test keys once into DIR/keys, writes DIR/config.json,
#                              starts the simulator on 127.0.0.1:PORT (default 18340) with its
#                              storage in DIR/data and its request log in DIR/requests.log, waits
#                              until it answers, and writes DIR/manta.env (export lines, below).
#   manta_stop DIR             kill, then kill -9 after 2 s
#
# DIR/manta.env exports
#   DOGESTRY_TEST_MANTA_URL          http://127.0.0.1:PORT
#   DOGESTRY_TEST_MANTA_USER         dogestry (account)      DOGESTRY_TEST_MANTA_SUBUSER  ci
#   DOGESTRY_TEST_MANTA_KEY          DIR/keys/id_rsa.pem (RSA 2048, PEM PKCS#1)
#   DOGESTRY_TEST_MANTA_KEY_ID       its MD5 fingerprint, "MD5:aa:bb:..."
#   DOGESTRY_TEST_MANTA_KEY_SHA256   its SHA256 fingerprint, "SHA256:..."
#   DOGESTRY_TEST_MANTA_KEYS_DIR     DIR/keys (every key format; DIR/keys/keys.json describes them)
#   DOGESTRY_TEST_MANTA_OTHER_USER / _OTHER_KEY / _OTHER_KEY_ID   a second account and its key
#   DOGESTRY_TEST_MANTA_STATS_URL    http://127.0.0.1:PORT/__sim/stats (request counts, no auth)
#   DOGESTRY_TEST_MANTA_LOG          DIR/requests.log
#   DOGESTRY_TEST_MANTA_SKEW         allowed clock skew in seconds (300, as muskie)
#   DOGESTRY_TEST_MANTA_PYTHON       python of the venv with manta==3.0.0 (only when it installed)
#   DOGESTRY_TEST_MANTA_SDK_CHECK    scripts/manta-sim/check_python_sdk.py
# Environment:
#   DOGESTRY_MANTA_VENV   where the Python SDK venv is kept (default $HOME/.cache/dogestry-manta-venv)
set -u

MANTA_SIM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../manta-sim" && pwd)"
MANTA_VENV="${DOGESTRY_MANTA_VENV:-${HOME:-/root}/.cache/dogestry-manta-venv}"
MANTA_ACCOUNT=dogestry
MANTA_SUBUSER=ci
MANTA_OTHER_ACCOUNT=other

_manta_have_pkg() {  # PKG
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

manta_install() {
  local need=() p
  for p in node-http-signature node-sshpk; do
    _manta_have_pkg "$p" || need+=("$p")
  done
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
      { echo "manta.sh: apt-get install ${need[*]} failed" >&2; return 1; }
  fi
  manta_python >/dev/null || echo "manta.sh: warning: no venv with Joyent's Python SDK (manta==3.0.0); the independent-client check is unavailable" >&2
  return 0
}

# Prints the python of a venv that has Joyent's Python SDK; installs it once.
manta_python() {
  local py="$MANTA_VENV/bin/python" ok="$MANTA_VENV/.manta-3.0.0-installed"
  if [ -x "$py" ] && [ -f "$ok" ]; then echo "$py"; return 0; fi
  if [ -x "$py" ] && "$py" -c 'import manta' >/dev/null 2>&1; then touch "$ok"; echo "$py"; return 0; fi
  mkdir -p "$(dirname "$MANTA_VENV")"
  if [ ! -x "$MANTA_VENV/bin/pip" ]; then
    rm -rf "$MANTA_VENV"
    python3 -m venv "$MANTA_VENV" >&2 || return 1
  fi
  "$MANTA_VENV/bin/pip" install -q 'manta==3.0.0' >&2 || return 1
  "$py" -c 'import manta' >/dev/null 2>&1 || return 1
  touch "$ok"
  echo "$py"
}

_manta_answers() {  # PORT
  curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$1/__sim/stats" 2>/dev/null
}

_manta_port_busy() {  # PORT — anything listening there
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null || true)
  [ -n "$code" ] && [ "$code" != 000 ]
}

_manta_fp() {  # PUBFILE md5|sha256
  ssh-keygen -l -E "$2" -f "$1" | awk '{print $2}'
}

_manta_make_keys() {  # KEYSDIR
  bash "$MANTA_SIM_DIR/make_keys.sh" "$1" || { echo "manta.sh: key generation in $1 failed" >&2; return 1; }
}

_manta_write_config() {  # DIR
  local d="$1" k="$1/keys" f keys=() line
  for f in id_rsa id_ecdsa_p256 id_ecdsa_p384 id_ecdsa_p521 id_rsa_enc; do
    line=$(cat "$k/$f.pub")
    keys+=("\"$line\"")
  done
  local list
  list=$(IFS=,; echo "${keys[*]}")
  cat >"$d/config.json.tmp" <<JSON
{
  "accounts": {
    "$MANTA_ACCOUNT": {
      "keys": [$list],
      "users": {
        "$MANTA_SUBUSER": {"keys": [$list], "actions": ["*"]}
      }
    },
    "$MANTA_OTHER_ACCOUNT": {
      "keys": ["$(cat "$k/other_rsa.pub")"]
    }
  },
  "options": {"skew": 300}
}
JSON
  mv "$d/config.json.tmp" "$d/config.json"
}

manta_start() {  # DIR [PORT]
  local d="$1" port="${2:-18340}" i py
  mkdir -p "$d"
  d="$(cd "$d" && pwd)"
  if [ -f "$d/manta.pid" ] && kill -0 "$(cat "$d/manta.pid")" 2>/dev/null && _manta_answers "$port"; then
    return 0
  fi
  if _manta_port_busy "$port"; then
    echo "manta.sh: port $port is already in use by something else; choose another port" >&2
    return 1
  fi
  manta_install || return 1
  _manta_make_keys "$d/keys" || return 1
  _manta_write_config "$d" || return 1
  mkdir -p "$d/data"
  nohup node "$MANTA_SIM_DIR/server.js" --config "$d/config.json" --root "$d/data" \
    --host 127.0.0.1 --port "$port" --log "$d/requests.log" \
    >"$d/server.log" 2>&1 </dev/null &
  echo $! >"$d/manta.pid"
  disown 2>/dev/null || true
  for i in $(seq 1 80); do
    if _manta_answers "$port"; then break; fi
    if ! kill -0 "$(cat "$d/manta.pid")" 2>/dev/null; then
      echo "manta.sh: the simulator exited at start; last lines of $d/server.log:" >&2
      tail -n 20 "$d/server.log" >&2
      return 1
    fi
    sleep 0.25
  done
  if ! _manta_answers "$port"; then
    echo "manta.sh: the simulator did not answer on port $port; last lines of $d/server.log:" >&2
    tail -n 20 "$d/server.log" >&2
    return 1
  fi
  py=$(manta_python 2>/dev/null || true)
  {
    echo "export DOGESTRY_TEST_MANTA_URL=http://127.0.0.1:$port"
    echo "export DOGESTRY_TEST_MANTA_USER=$MANTA_ACCOUNT"
    echo "export DOGESTRY_TEST_MANTA_SUBUSER=$MANTA_SUBUSER"
    echo "export DOGESTRY_TEST_MANTA_KEY=$d/keys/id_rsa.pem"
    echo "export DOGESTRY_TEST_MANTA_KEY_ID=$(_manta_fp "$d/keys/id_rsa.pub" md5)"
    echo "export DOGESTRY_TEST_MANTA_KEY_SHA256=$(_manta_fp "$d/keys/id_rsa.pub" sha256)"
    echo "export DOGESTRY_TEST_MANTA_KEYS_DIR=$d/keys"
    echo "export DOGESTRY_TEST_MANTA_OTHER_USER=$MANTA_OTHER_ACCOUNT"
    echo "export DOGESTRY_TEST_MANTA_OTHER_KEY=$d/keys/other_rsa.pem"
    echo "export DOGESTRY_TEST_MANTA_OTHER_KEY_ID=$(_manta_fp "$d/keys/other_rsa.pub" md5)"
    echo "export DOGESTRY_TEST_MANTA_STATS_URL=http://127.0.0.1:$port/__sim/stats"
    echo "export DOGESTRY_TEST_MANTA_LOG=$d/requests.log"
    echo "export DOGESTRY_TEST_MANTA_SKEW=300"
    [ -n "$py" ] && echo "export DOGESTRY_TEST_MANTA_PYTHON=$py"
    echo "export DOGESTRY_TEST_MANTA_SDK_CHECK=$MANTA_SIM_DIR/check_python_sdk.py"
  } >"$d/manta.env.tmp" && mv "$d/manta.env.tmp" "$d/manta.env"
}

manta_stop() {  # DIR
  local d="$1" pid i
  [ -f "$d/manta.pid" ] || return 0
  pid=$(cat "$d/manta.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 8); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$d/manta.pid"
}
