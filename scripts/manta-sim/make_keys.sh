#!/usr/bin/env bash
# Generate the simulator's test keys into DIR (once: nothing is done when DIR/keys.json exists).
#   make_keys.sh DIR
# Writes, with openssl and ssh-keygen:
#   id_rsa.pem (RSA 2048, PEM PKCS#1), id_rsa.pkcs8.pem (same key, PKCS#8), id_rsa.openssh (same key,
#   OpenSSH format); id_ecdsa_{p256,p384,p521}.pem (SEC1 PEM) and .openssh; id_ed25519 (OpenSSH) and
#   id_ed25519.pkcs8.pem; id_rsa_enc.{pem,pkcs8.pem,openssh} (one RSA key, encrypted, passphrase
#   "secret"); unregistered_rsa.pem (known to no account); other_rsa.pem (account "other");
#   a .pub (OpenSSH public line) for each key, and keys.json describing every file.
set -euo pipefail

k="${1:?usage: make_keys.sh DIR}"
[ -f "$k/keys.json" ] && exit 0
rm -rf "$k"
mkdir -p "$k"
chmod 700 "$k"
cd "$k"
umask 077

pub() {  # PRIVFILE COMMENT — the public line, with a comment naming the key
  ssh-keygen -y -f "$1" | awk -v c="$2" '{print $1, $2, c}'
}
to_openssh() {  # SRC DST [NEWPASS] — rewrite in OpenSSH's own private-key format
  cp "$1" "$2"
  chmod 600 "$2"
  ssh-keygen -q -p -P '' -N "${3:-}" -f "$2" >/dev/null
  grep -q 'BEGIN OPENSSH PRIVATE KEY' "$2"
}
fp() {  # PUBFILE md5|sha256
  ssh-keygen -l -E "$2" -f "$1" | awk '{print $2}'
}

# RSA 2048, one key in three formats.
openssl genrsa -traditional -out id_rsa.pem 2048 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in id_rsa.pem -out id_rsa.pkcs8.pem
to_openssh id_rsa.pem id_rsa.openssh
pub id_rsa.pem dogestry-test-rsa >id_rsa.pub

# ECDSA P-256/P-384/P-521: SEC1 PEM and OpenSSH.
for t in p256:prime256v1 p384:secp384r1 p521:secp521r1; do
  n=${t%%:*}
  openssl ecparam -name "${t#*:}" -genkey -noout -out "id_ecdsa_$n.pem"
  to_openssh "id_ecdsa_$n.pem" "id_ecdsa_$n.openssh"
  pub "id_ecdsa_$n.pem" "dogestry-test-ecdsa-$n" >"id_ecdsa_$n.pub"
done

# ed25519 (never registered: Manta's signature scheme has no ed25519).
ssh-keygen -q -t ed25519 -N '' -C dogestry-test-ed25519 -f id_ed25519 >/dev/null
pub id_ed25519 dogestry-test-ed25519 >id_ed25519.pub
# (a separate ed25519 key: OpenSSH 9.2 cannot read or write ed25519 PEM)
openssl genpkey -algorithm ed25519 -out id_ed25519.pkcs8.pem 2>/dev/null

# One encrypted RSA key (passphrase "secret"): PKCS#1 with Proc-Type, encrypted PKCS#8, OpenSSH.
openssl genrsa -traditional -out enc.tmp 2048 2>/dev/null
openssl rsa -in enc.tmp -traditional -aes256 -passout pass:secret -out id_rsa_enc.pem 2>/dev/null
openssl pkcs8 -topk8 -v2 aes-256-cbc -in enc.tmp -passout pass:secret -out id_rsa_enc.pkcs8.pem
to_openssh enc.tmp id_rsa_enc.openssh secret
pub enc.tmp dogestry-test-rsa-encrypted >id_rsa_enc.pub
rm -f enc.tmp
grep -q 'Proc-Type: 4,ENCRYPTED' id_rsa_enc.pem
grep -q 'BEGIN ENCRYPTED PRIVATE KEY' id_rsa_enc.pkcs8.pem

# A key no account knows, and the second account's key.
openssl genrsa -traditional -out unregistered_rsa.pem 2048 2>/dev/null
pub unregistered_rsa.pem dogestry-test-unregistered >unregistered_rsa.pub
openssl genrsa -traditional -out other_rsa.pem 2048 2>/dev/null
pub other_rsa.pem other-test-rsa >other_rsa.pub
chmod 600 ./*

# The manifest: file|format|type|bits|public|passphrase|registered-for
{
  echo '{"keys": ['
  first=1
  while IFS='|' read -r file fmt type bits pubf pass reg; do
    [ -n "$file" ] || continue
    [ $first = 1 ] || echo ','
    first=0
    printf '  {"file": "%s", "path": "%s", "format": "%s", "type": "%s", "bits": %s' \
      "$file" "$k/$file" "$fmt" "$type" "$bits"
    if [ -n "$pubf" ]; then
      printf ', "public": "%s", "md5": "%s", "sha256": "%s"' "$k/$pubf" "$(fp "$pubf" md5)" "$(fp "$pubf" sha256)"
    fi
    if [ -n "$pass" ]; then printf ', "passphrase": "%s"' "$pass"; else printf ', "passphrase": null'; fi
    printf ', "registered": [%s]}' "$(echo "$reg" | awk -F, '{for(i=1;i<=NF;i++){printf "%s\"%s\"", (i>1?", ":""), $i}}')"
  done <<'LIST'
id_rsa.pem|pem-pkcs1|rsa|2048|id_rsa.pub||dogestry,dogestry/ci
id_rsa.pkcs8.pem|pem-pkcs8|rsa|2048|id_rsa.pub||dogestry,dogestry/ci
id_rsa.openssh|openssh|rsa|2048|id_rsa.pub||dogestry,dogestry/ci
id_ecdsa_p256.pem|pem-sec1|ecdsa|256|id_ecdsa_p256.pub||dogestry,dogestry/ci
id_ecdsa_p256.openssh|openssh|ecdsa|256|id_ecdsa_p256.pub||dogestry,dogestry/ci
id_ecdsa_p384.pem|pem-sec1|ecdsa|384|id_ecdsa_p384.pub||dogestry,dogestry/ci
id_ecdsa_p384.openssh|openssh|ecdsa|384|id_ecdsa_p384.pub||dogestry,dogestry/ci
id_ecdsa_p521.pem|pem-sec1|ecdsa|521|id_ecdsa_p521.pub||dogestry,dogestry/ci
id_ecdsa_p521.openssh|openssh|ecdsa|521|id_ecdsa_p521.pub||dogestry,dogestry/ci
id_ed25519|openssh|ed25519|256|id_ed25519.pub||
id_ed25519.pkcs8.pem|pem-pkcs8|ed25519|256|||
id_rsa_enc.pem|pem-pkcs1-encrypted|rsa|2048|id_rsa_enc.pub|secret|dogestry,dogestry/ci
id_rsa_enc.pkcs8.pem|pem-pkcs8-encrypted|rsa|2048|id_rsa_enc.pub|secret|dogestry,dogestry/ci
id_rsa_enc.openssh|openssh-encrypted|rsa|2048|id_rsa_enc.pub|secret|dogestry,dogestry/ci
unregistered_rsa.pem|pem-pkcs1|rsa|2048|unregistered_rsa.pub||
other_rsa.pem|pem-pkcs1|rsa|2048|other_rsa.pub||other
LIST
  echo
  echo ']}'
} >keys.json.tmp
mv keys.json.tmp keys.json
