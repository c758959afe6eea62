#!/usr/bin/env bash
# The .deb on a clean Debian 12 host: a minimal root made by debootstrap (no Swift anywhere), the
# package installed with apt (its dependencies from Debian), then what a new user does first.
#
#   scripts/lib/cleanhost.sh DEB ARCHIVE HOST_DOGESTRY WORKDIR
#
#   DEB            the package (scripts/package)
#   ARCHIVE        a `docker save` archive of one tagged image
#   HOST_DOGESTRY  a dogestry built on this machine, for a byte-for-byte cross-check
#   WORKDIR        scratch space (the root lives there; removed at the end)
#
# Prints one line per check, `PASS name: detail` or `FAIL name: detail`, then the transcript of
# the commands run in the root; exits 1 when a check failed. The root filesystem tarball is cached
# in $DOGESTRY_CLEANHOST_CACHE (default ~/.cache/dogestry-cleanhost).
set -uo pipefail

DEB="$1" ARCHIVE="$2" HOST_DOGESTRY="$3" WORK="$4"
CACHE="${DOGESTRY_CLEANHOST_CACHE:-${HOME:-/root}/.cache/dogestry-cleanhost}"
MIRROR="${DOGESTRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$WORK/root"
LOG="$WORK/transcript.txt"
FAILED=0
mkdir -p "$WORK" "$CACHE"
: >"$LOG"

pass() { echo "PASS $1: $2"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }
run() {  # NAME CMD...: runs CMD, transcript in $LOG; its output on stdout
  local name="$1"; shift
  { printf '\n$ %s\n' "$*"; } >>"$LOG"
  "$@" 2>&1 | tee -a "$LOG"
  return "${PIPESTATUS[0]}"
}
in_root() { chroot "$ROOTFS" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

cleanup() {
  local m
  [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null
  for m in proc dev/pts dev; do umount -l "$ROOTFS/$m" 2>/dev/null; done
  # Never across a mount point: a bind of the host's /dev that did not unmount stays untouched.
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

for p in debootstrap strace systemd curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null; }; }
done

# ---- the root: debootstrap once, then a fresh copy every run
TARBALL="$CACHE/bookworm-minbase.tar.gz"
if [ ! -s "$TARBALL" ]; then
  rm -rf "$WORK/boot"
  if ! debootstrap --variant=minbase bookworm "$WORK/boot" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log"; fail rootfs "debootstrap --variant=minbase bookworm failed"; exit 1
  fi
  tar -C "$WORK/boot" -czf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$WORK/boot"
fi
rm -rf --one-file-system "$ROOTFS"; mkdir -p "$ROOTFS"
tar -C "$ROOTFS" -xzf "$TARBALL"
mount -t proc proc "$ROOTFS/proc"
mount --bind /dev "$ROOTFS/dev"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null
if [ -e "$ROOTFS/opt/swift" ] || in_root sh -c 'command -v swift' >/dev/null 2>&1; then
  fail rootfs "the clean root has Swift in it"
else
  pass rootfs "Debian $(cat "$ROOTFS/etc/debian_version") minbase, no Swift"
fi

# ---- install with apt: the package's dependencies come from Debian
cp "$DEB" "$ROOTFS/tmp/"
DEBNAME=$(basename "$DEB")
if run install in_root sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/$DEBNAME man-db bash-completion" >/dev/null; then
  pass install "apt-get install ./$DEBNAME ($(in_root dpkg-query -W -f='${Version} Depends: ${Depends}' dogestry))"
else
  fail install "apt-get install ./$DEBNAME failed (transcript below)"
fi

# ---- what a new user does first
if out=$(run version in_root dogestry --version) && echo "$out" | grep -q "^dogestry .*(commit [0-9a-f]\{40\})"; then
  pass version "$out"
else
  fail version "dogestry --version said: $out"
fi
if out=$(run ldd in_root ldd /usr/bin/dogestry) && ! echo "$out" | grep -qi 'swift\|not found'; then
  pass libraries "$(echo "$out" | awk '{print $1}' | tr '\n' ' ')"
else
  fail libraries "$out"
fi
strace -f -qq -e trace=open,openat,execve -o "$WORK/strace.log" chroot "$ROOTFS" /usr/bin/dogestry --version >/dev/null 2>&1
if grep -q '/opt/swift' "$WORK/strace.log"; then
  fail opt-swift "the binary opened $(grep -o '/opt/swift[^"]*' "$WORK/strace.log" | head -n 3 | tr '\n' ' ')"
else
  pass opt-swift "strace: $(grep -c 'open' "$WORK/strace.log") opens, none under /opt/swift"
fi

mkdir -p "$ROOTFS/srv/images"
cp "$ARCHIVE" "$ROOTFS/tmp/image.tar"
if run push in_root dogestry push /srv/images --archive /tmp/image.tar >/dev/null; then
  IMAGE=$(in_root dogestry list /srv/images --json | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print(r["repository"] + ":" + r["tag"])')
  pass push "$IMAGE pushed to a directory remote"
else
  fail push "push --archive failed"; IMAGE=""
fi
if [ -n "$IMAGE" ] && run pull in_root dogestry pull /srv/images "$IMAGE" --archive /tmp/pulled.tar >/dev/null &&
   "$HOST_DOGESTRY" pull "$ROOTFS/srv/images" "$IMAGE" --archive "$WORK/host-pulled.tar" -q >/dev/null 2>&1 &&
   cmp -s "$ROOTFS/tmp/pulled.tar" "$WORK/host-pulled.tar"; then
  pass pull "pull --archive in the root is byte for byte what this machine's dogestry pulls ($(stat -c %s "$WORK/host-pulled.tar") bytes, sha256 $(sha256sum <"$WORK/host-pulled.tar" | cut -c1-16)…)"
else
  fail pull "pull back from the directory remote did not give the same archive"
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# (chroot itself, not a subshell around it, so that $! is serve's own process.)
chroot "$ROOTFS" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 dogestry serve /srv/images --listen "127.0.0.1:$PORT" \
  >"$WORK/serve.log" 2>&1 </dev/null &
SERVE_PID=$!
code=000
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/v2/" || true)
  [ "$code" = 200 ] && break
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.1
done
tags=$(curl -s --max-time 5 "http://127.0.0.1:$PORT/v2/${IMAGE%:*}/tags/list" || true)
kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null; SERVE_PID=""
{ printf '\n$ dogestry serve /srv/images --listen 127.0.0.1:%s\n' "$PORT"; cat "$WORK/serve.log"; } >>"$LOG"
if [ "$code" = 200 ] && echo "$tags" | grep -q "${IMAGE##*:}"; then
  pass serve "/v2/ answered 200; tags/list: $tags"
else
  fail serve "/v2/ answered $code; tags/list: $tags"
fi

if out=$(run man in_root sh -c 'MANWIDTH=80 man -P cat dogestry-pull 2>&1') && echo "$out" | grep -q 'dogestry-pull - Pull images'; then
  pass man "man dogestry-pull renders ($(echo "$out" | wc -l) lines; $(ls "$ROOTFS/usr/share/man/man1" | grep -c '^dogestry') pages)"
else
  fail man "man dogestry-pull: $(echo "$out" | head -n 3)"
fi
if out=$(run completion in_root bash -c 'source /usr/share/bash-completion/completions/dogestry && complete -p dogestry'); then
  pass completion "$out"
else
  fail completion "the bash completion script did not load: $out"
fi
if [ -f "$ROOTFS/etc/dogestry/dogestry.cfg" ] && in_root dpkg-query -W -f='${Conffiles}' dogestry | grep -q /etc/dogestry/dogestry.cfg; then
  pass conffile "/etc/dogestry/dogestry.cfg is a conffile"
else
  fail conffile "/etc/dogestry/dogestry.cfg is missing or not a conffile"
fi
if ls "$ROOTFS"/etc/systemd/system/*.wants/dogestry-serve.service >/dev/null 2>&1; then
  fail unit-enabled "dogestry-serve.service was enabled by the package"
else
  pass unit-enabled "dogestry-serve.service installed, not enabled"
fi
# The minimal root has no systemd: the installed unit is verified by this machine's systemd, its
# ExecStart pointed at the installed binary (the man page it names was checked above).
sed "s|/usr/bin/dogestry|$ROOTFS/usr/bin/dogestry|" "$ROOTFS/lib/systemd/system/dogestry-serve.service" >"$WORK/dogestry-serve.service"
if out=$(run unit systemd-analyze verify --man=no "$WORK/dogestry-serve.service" 2>&1) && [ -z "$out" ]; then
  pass unit "systemd-analyze verify accepts dogestry-serve.service (systemd $(systemd-analyze --version | head -n1 | awk '{print $2}'))"
else
  fail unit "systemd-analyze verify: $out"
fi

echo "---- transcript"
cat "$LOG"
exit "$FAILED"
