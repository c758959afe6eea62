#!/usr/bin/env bash
# Start and stop Debian's distribution 2.8 (`docker-registry`) as a real peer for registry clients,
# plain, with TLS + basic auth, or with TLS + token auth (see /work/shared/recipes.md). One registry
# per DIR. Source this file, then:
#   registry_install                    apt-get installs docker-registry apache2-utils skopeo
#                                       python3-cryptography (only what is missing)
#   registry_ca DIR                     creates once: DIR/ca.crt+ca.key (a test CA), DIR/server.crt+key
#                                       (IP:127.0.0.1, DNS:localhost, signed by the CA), DIR/token.crt+key
#                                       (self-signed RSA, signs the JWTs), DIR/certs/ca.crt (a cert dir
#                                       for skopeo/podman: --cert-dir DIR/certs)
#   registry_start DIR PORT MODE [TTL]  MODE: plain  plain HTTP, no auth
#                                             basic  HTTPS + htpasswd (user dogestry, password s3cret-pass)
#                                             token  HTTPS + auth.token; the token server
#                                                    (token_server.py) listens on HTTPS, 127.0.0.1:PORT+1,
#                                                    same server certificate; TTL = token lifetime in
#                                                    seconds (default $DOGESTRY_REGISTRY_TOKEN_TTL or 300)
#                                             s3     token auth as above, blobs in S3 (distribution's S3
#                                                    driver: GET and HEAD of a blob answer 307 to a
#                                                    presigned URL, as ECR, GHCR, Docker Hub do); the
#                                                    store is DOGESTRY_REG_S3_ENDPOINT (http://HOST:PORT),
#                                                    _ACCESS_KEY, _SECRET_KEY, _BUCKET (created here)
#                                       storage under DIR/data (deletes enabled), logs DIR/registry.log
#                                       and DIR/token.log; waits until /v2/ answers. Idempotent; a
#                                       registry running in DIR with another MODE/PORT/TTL is restarted.
#   registry_stop DIR                   kill, then kill -9 after 2 s (registry and token server)
#
# After registry_start, DIR/registry.env holds shell assignments (all of them always set, empty
# when they do not apply to the mode):
#   REGISTRY_MODE          plain | basic | token
#   REGISTRY_ADDR          127.0.0.1:PORT
#   REGISTRY_SCHEME        http | https
#   REGISTRY_URL           REGISTRY_SCHEME://REGISTRY_ADDR
#   REGISTRY_CA            DIR/ca.crt (TLS modes)
#   REGISTRY_CERT_DIR      DIR/certs, holding only ca.crt (TLS modes; DIR itself has keys that
#                          containers/image would read as client certificates)
#   REGISTRY_USER / REGISTRY_PASS     basic and token modes
#   REGISTRY_TOKEN_REALM   https://127.0.0.1:PORT+1/token (token mode)
#   REGISTRY_TOKEN_SERVICE the service (JWT aud) the registry expects (token mode)
#   REGISTRY_TOKEN_TTL     token lifetime in seconds (token mode)
# The token server gives the user every action asked for, an anonymous caller a token granting
# nothing, and wrong credentials a 401 (see token_server.py). distribution 2.8 accepts a token up
# to 60 s past its exp claim; the token server is started with --exp-leeway 60 so the registry
# answers 401 once issued_at + expires_in (= TTL) has passed (within 1 s), e.g. after 3 s with TTL 3.
set -u

REGISTRY_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REGISTRY_USER_DEFAULT="dogestry"
REGISTRY_PASS_DEFAULT="s3cret-pass"
REGISTRY_SERVICE_DEFAULT="dogestry-test-registry"
REGISTRY_ISSUER_DEFAULT="dogestry-test-token-server"

registry_install() {
  local missing=() p
  for p in docker-registry apache2-utils skopeo python3-cryptography; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; } ||
    { echo "registry.sh: apt-get install ${missing[*]} failed" >&2; return 1; }
}

registry_ca() {  # DIR
  local d="$1"
  mkdir -p "$d" || return 1
  d="$(cd "$d" && pwd)"
  if command -v flock >/dev/null 2>&1; then
    ( flock 9 && _registry_ca_make "$d" ) 9>"$d/.ca.lock"
  else
    _registry_ca_make "$d"
  fi
}

_registry_ca_make() {  # DIR — the work of registry_ca, under its lock
  local d="$1" f
  cat >"$d/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = dogestry test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[signer]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
CNF
  if [ ! -s "$d/ca.crt" ] || [ ! -s "$d/ca.key" ]; then
    rm -f "$d/server.crt" "$d/server.key"  # a new CA needs a new server certificate
    openssl req -x509 -config "$d/openssl.cnf" -extensions ca -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -subj "/CN=dogestry test CA" -keyout "$d/ca.key.tmp" -out "$d/ca.crt.tmp" 2>"$d/openssl.log" &&
      mv "$d/ca.key.tmp" "$d/ca.key" && mv "$d/ca.crt.tmp" "$d/ca.crt" ||
      { echo "registry.sh: making the CA failed:" >&2; cat "$d/openssl.log" >&2; return 1; }
  fi
  if [ ! -s "$d/server.crt" ] || [ ! -s "$d/server.key" ]; then
    # 825 days: the longest validity Apple's TLS stacks accept for a server certificate.
    openssl req -new -config "$d/openssl.cnf" -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
      -keyout "$d/server.key.tmp" -out "$d/server.csr" 2>"$d/openssl.log" &&
      openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
        -sha256 -days 825 -extfile "$d/openssl.cnf" -extensions server -out "$d/server.crt.tmp" 2>>"$d/openssl.log" &&
      mv "$d/server.key.tmp" "$d/server.key" && mv "$d/server.crt.tmp" "$d/server.crt" ||
      { echo "registry.sh: making the server certificate failed:" >&2; cat "$d/openssl.log" >&2; return 1; }
    rm -f "$d/server.csr"
  fi
  if [ ! -s "$d/token.crt" ] || [ ! -s "$d/token.key" ]; then
    openssl req -x509 -config "$d/openssl.cnf" -extensions signer -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -subj "/CN=dogestry test token signer" -keyout "$d/token.key.tmp" -out "$d/token.crt.tmp" 2>"$d/openssl.log" &&
      mv "$d/token.key.tmp" "$d/token.key" && mv "$d/token.crt.tmp" "$d/token.crt" ||
      { echo "registry.sh: making the token signing key failed:" >&2; cat "$d/openssl.log" >&2; return 1; }
  fi
  chmod 600 "$d/ca.key" "$d/server.key" "$d/token.key"
  mkdir -p "$d/certs"
  cmp -s "$d/ca.crt" "$d/certs/ca.crt" || cp "$d/ca.crt" "$d/certs/ca.crt"
  rm -f "$d/openssl.log"
}

_registry_python() {  # prints a python3 that has `cryptography`
  local py
  for py in python3 /usr/bin/python3; do
    # sys.executable: the interpreter itself, not a wrapper such as a pyenv shim
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import cryptography, sys; print(sys.executable)' 2>/dev/null; then
      return 0
    fi
  done
  echo "registry.sh: no python3 with the cryptography module (apt-get install python3-cryptography)" >&2
  return 1
}

_registry_code() {  # URL [CAFILE] — prints the HTTP status, 000 when nothing answers
  local ca=()
  [ -n "${2:-}" ] && ca=(--cacert "$2")
  curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 2 "${ca[@]}" "$1" 2>/dev/null || true
}

_registry_port_busy() {  # PORT — anything answering TCP there?
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_registry_alive() {  # PIDFILE — alive, and ours (a stale pid file may name an unrelated process)
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq 'docker-registry|token_server\.py'
}

registry_start() {  # DIR PORT MODE [TTL]
  local d="$1" port="$2" mode="$3" ttl="${4:-${DOGESTRY_REGISTRY_TOKEN_TTL:-300}}"
  local scheme=https tport state py i code v
  case "$port" in ''|*[!0-9]*) echo "registry.sh: PORT must be a number (not '$port')" >&2; return 1 ;; esac
  tport=$((port + 1))
  case "$mode" in
    plain) scheme=http ;;
    basic|token|s3) ;;
    *) echo "registry.sh: MODE must be plain, basic, token or s3 (not '$mode')" >&2; return 1 ;;
  esac
  local tokens=0
  case "$mode" in token|s3) tokens=1 ;; esac
  [ "$tokens" = 1 ] || ttl=""
  mkdir -p "$d" || return 1
  d="$(cd "$d" && pwd)"
  local url="$scheme://127.0.0.1:$port" ca="" realm=""
  [ "$scheme" = https ] && ca="$d/ca.crt"
  local health="https://127.0.0.1:$tport/healthz"
  [ "$tokens" = 1 ] && realm="https://127.0.0.1:$tport/token"
  state="$mode $port $ttl ${DOGESTRY_REG_S3_ENDPOINT:-}"

  # Already running as asked?
  if _registry_alive "$d/registry.pid" && [ "$(cat "$d/registry.state" 2>/dev/null)" = "$state" ]; then
    code=$(_registry_code "$url/v2/" "$ca")
    if { [ "$code" = 200 ] || [ "$code" = 401 ]; } &&
       { [ "$tokens" != 1 ] || { _registry_alive "$d/token.pid" && [ "$(_registry_code "$health" "$ca")" = 200 ]; }; }; then
      _registry_write_env "$d" "$mode" "$port" "$scheme" "$url" "$ca" "$realm" "$ttl"
      return 0
    fi
  fi
  registry_stop "$d"
  if _registry_port_busy "$port"; then
    echo "registry.sh: port $port is already in use by something else; choose another port" >&2; return 1
  fi
  if [ "$tokens" = 1 ] && _registry_port_busy "$tport"; then
    echo "registry.sh: port $tport (token server) is already in use; choose another port" >&2; return 1
  fi
  command -v docker-registry >/dev/null 2>&1 && command -v htpasswd >/dev/null 2>&1 || registry_install || return 1
  [ "$scheme" = https ] && { registry_ca "$d" || return 1; }
  mkdir -p "$d/data"
  local storage
  if [ "$mode" = s3 ]; then
    : "${DOGESTRY_REG_S3_ENDPOINT:?registry.sh: mode s3 needs DOGESTRY_REG_S3_ENDPOINT}" "${DOGESTRY_REG_S3_BUCKET:?}" "${DOGESTRY_REG_S3_ACCESS_KEY:?}" "${DOGESTRY_REG_S3_SECRET_KEY:?}"
    # The bucket must exist before the registry starts (curl signs SigV4 itself).
    registry_ca "$d" || return 1
    code=$(curl -s -o "$d/bucket.out" -w '%{http_code}' --max-time 10 --cacert "$d/ca.crt" -X PUT --user "$DOGESTRY_REG_S3_ACCESS_KEY:$DOGESTRY_REG_S3_SECRET_KEY" \
      --aws-sigv4 "aws:amz:us-east-1:s3" "$DOGESTRY_REG_S3_ENDPOINT/$DOGESTRY_REG_S3_BUCKET" 2>/dev/null || true)
    case "$code" in 200|409) ;; *) echo "registry.sh: creating bucket $DOGESTRY_REG_S3_BUCKET answered $code: $(head -c 300 "$d/bucket.out")" >&2; return 1 ;; esac
    storage="  s3:
    accesskey: \"$DOGESTRY_REG_S3_ACCESS_KEY\"
    secretkey: \"$DOGESTRY_REG_S3_SECRET_KEY\"
    region: us-east-1
    regionendpoint: \"$DOGESTRY_REG_S3_ENDPOINT\"
    bucket: \"$DOGESTRY_REG_S3_BUCKET\"
    secure: $(case "$DOGESTRY_REG_S3_ENDPOINT" in https:*) echo true ;; *) echo false ;; esac)
    v4auth: true
    rootdirectory: /registry"
  else
    storage="  filesystem:
    rootdirectory: \"$d/data\""
  fi

  # The config: ours entirely (Debian's default turns on htpasswd).
  {
    cat <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
$storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: dogestry-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  headers:
    X-Content-Type-Options: [nosniff]
YAML
    if [ "$scheme" = https ]; then cat <<YAML
  tls:
    certificate: "$d/server.crt"
    key: "$d/server.key"
YAML
    fi
    if [ "$mode" = basic ]; then cat <<YAML
auth:
  htpasswd:
    realm: dogestry-test-registry
    path: "$d/htpasswd"
YAML
    elif [ "$tokens" = 1 ]; then cat <<YAML
auth:
  token:
    realm: "$realm"
    service: $REGISTRY_SERVICE_DEFAULT
    issuer: $REGISTRY_ISSUER_DEFAULT
    rootcertbundle: "$d/token.crt"
YAML
    fi
    cat <<YAML
health:
  storagedriver:
    enabled: false
YAML
  } >"$d/config.yml"
  if [ "$mode" = basic ]; then
    htpasswd -Bbn "$REGISTRY_USER_DEFAULT" "$REGISTRY_PASS_DEFAULT" >"$d/htpasswd" ||
      { echo "registry.sh: htpasswd failed" >&2; return 1; }
  fi

  if [ "$tokens" = 1 ]; then
    py=$(_registry_python) || return 1
    nohup "$py" "$REGISTRY_LIB_DIR/token_server.py" --port "$tport" --key "$d/token.key" --cert "$d/token.crt" \
      --issuer "$REGISTRY_ISSUER_DEFAULT" --service "$REGISTRY_SERVICE_DEFAULT" \
      --user "$REGISTRY_USER_DEFAULT" --password "$REGISTRY_PASS_DEFAULT" --ttl "$ttl" --exp-leeway 60 \
      --tls-cert "$d/server.crt" --tls-key "$d/server.key" --log "$d/token.log" \
      >>"$d/token.log" 2>&1 </dev/null &
    echo $! >"$d/token.pid"
    disown 2>/dev/null || true
  fi

  # AWS_CA_BUNDLE makes it crash at start; REGISTRY_* variables would override the config.
  local unset_env=(-u AWS_CA_BUNDLE)
  for v in $(compgen -e); do
    case "$v" in REGISTRY_*) unset_env+=(-u "$v") ;; esac
  done
  # An S3 store on https with the test CA's certificate: Go trusts SSL_CERT_FILE.
  local trust=()
  [ "$mode" = s3 ] && trust=(SSL_CERT_FILE="$d/ca.crt")
  nohup env "${unset_env[@]}" "${trust[@]}" docker-registry serve "$d/config.yml" >"$d/registry.log" 2>&1 </dev/null &
  echo $! >"$d/registry.pid"
  disown 2>/dev/null || true

  for i in $(seq 1 120); do
    code=$(_registry_code "$url/v2/" "$ca")
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then break; fi
    if ! _registry_alive "$d/registry.pid"; then break; fi
    sleep 0.25
  done
  if [ "$code" != 200 ] && [ "$code" != 401 ]; then
    echo "registry.sh: the registry did not answer on $url/v2/ (last status $code; process $(cat "$d/registry.pid" 2>/dev/null) $(_registry_alive "$d/registry.pid" && echo running || echo gone)); last lines of $d/registry.log:" >&2
    tail -n 20 "$d/registry.log" >&2
    registry_stop "$d"
    return 1
  fi
  if [ "$tokens" = 1 ]; then
    for i in $(seq 1 120); do
      code=$(_registry_code "$health" "$ca")
      [ "$code" = 200 ] && break
      _registry_alive "$d/token.pid" || break
      sleep 0.25
    done
    if [ "$code" != 200 ]; then
      echo "registry.sh: the token server did not answer on $realm (last status $code); last lines of $d/token.log:" >&2
      tail -n 20 "$d/token.log" >&2
      registry_stop "$d"
      return 1
    fi
  fi

  echo "$state" >"$d/registry.state"
  _registry_write_env "$d" "$mode" "$port" "$scheme" "$url" "$ca" "$realm" "$ttl"
}

_registry_write_env() {  # DIR MODE PORT SCHEME URL CA REALM TTL
  local d="$1" mode="$2" port="$3" scheme="$4" url="$5" ca="$6" realm="$7" ttl="$8"
  {
    printf 'REGISTRY_MODE=%q\n' "$mode"
    printf 'REGISTRY_ADDR=%q\n' "127.0.0.1:$port"
    printf 'REGISTRY_SCHEME=%q\n' "$scheme"
    printf 'REGISTRY_URL=%q\n' "$url"
    printf 'REGISTRY_CA=%q\n' "$ca"
    printf 'REGISTRY_CERT_DIR=%q\n' "${ca:+$d/certs}"
    printf 'REGISTRY_USER=%q\n' "${ca:+$REGISTRY_USER_DEFAULT}"   # plain mode: no auth, no user
    printf 'REGISTRY_PASS=%q\n' "${ca:+$REGISTRY_PASS_DEFAULT}"
    printf 'REGISTRY_TOKEN_REALM=%q\n' "$realm"
    printf 'REGISTRY_TOKEN_SERVICE=%q\n' "${realm:+$REGISTRY_SERVICE_DEFAULT}"
    printf 'REGISTRY_TOKEN_TTL=%q\n' "$ttl"
  } >"$d/registry.env"
}

_registry_kill() {  # PIDFILE — kill, then kill -9 after 2 s
  local pid i
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if _registry_alive "$1"; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 8); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

registry_stop() {  # DIR
  local d="$1"
  [ -d "$d" ] || return 0
  _registry_kill "$d/registry.pid"
  _registry_kill "$d/token.pid"
  rm -f "$d/registry.state"
}
