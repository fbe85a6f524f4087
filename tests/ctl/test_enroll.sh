#!/usr/bin/env bash
# Enrollment against the real agent and its helper on a fresh SoftHSM2
# token "My Card" next to the fixture's (tests/interop/lib.sh), in
# discovery mode (no [identity] sections): key generation refused while
# logged out, on a read-only configuration and on a token that cannot
# generate keys (the card-like shim, tests/fixtures/p11-lockout.c, whose
# message lists the mechanisms); enroll makes a key pair and a CSR the
# fixture CA signs; the csr purpose refuses content for another key and
# content that is no request; import-cert refuses a certificate whose key
# is not on a token, a duplicate and an expired one (unless forced) and the
# running agent lists the new identity at once; the agent is no CA
# (`openssl x509 -req -CAkey mtls-agent:...` is refused without a crash);
# renewal keeps the key, the subject and the SANs, or makes a new key.
set -u
# No controlling terminal: delete-key asks through the askpass program.
if [ -z "${MTLS_ENROLL_NO_TTY:-}" ] && (exec </dev/tty) 2>/dev/null; then
	MTLS_ENROLL_NO_TTY=1 exec setsid -w bash "$0" "$@"
fi
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_init openssl
PIN=$MTLS_TEST_PIN
it_need_env MTLS_LOCKOUT_MODULE MTLS_PROVIDER_DIR
softhsm2-util --init-token --free --label "My Card" --pin "$PIN" --so-pin 12345678 \
	>/dev/null 2>&1 || it_die "cannot make the second token"

# The fixture's agent has [identity] sections: no enrollment there.
it_refused "enroll with [identity] sections is refused before a key is made" 1 \
	"configuration error: enrollment needs discovered identities: the configuration has \\[identity\\] sections" \
	"$CTL" enroll --token 'pkcs11:token=My%20Card' --label work --subject /CN=x

# A second agent on "My Card" only, identities discovered.
E=$D/enroll
mkdir -m 0700 "$E"
write_conf() {
	{
		echo "module = $MTLS_TEST_MODULE"
		echo "token = pkcs11:token=My%20Card"
		echo "log-level = debug"
		printf '%s\n' "$@"
	} >"$E/agent.conf"
	chmod 0600 "$E/agent.conf"
}
write_conf
it_bg agent-enroll "$MTLS_AGENT_BIN" --foreground --config "$E/agent.conf" --socket "$E/agent.sock"
EPID=$IT_PID
for _ in $(seq 1 200); do
	grep -q '^MTLS_AGENT_SOCK=' "$D/agent-enroll.log" && break
	sleep 0.05
done
export MTLS_AGENT_SOCK=$E/agent.sock
reload() {
	local n
	n=$(grep -c 'configuration reloaded' "$D/agent-enroll.log")
	kill -HUP "$EPID"
	for _ in $(seq 1 100); do
		[ "$(grep -c 'configuration reloaded' "$D/agent-enroll.log")" -gt "$n" ] && return 0
		sleep 0.05
	done
	it_die "the agent did not reload"
}
OSSL=(-provider-path "$MTLS_PROVIDER_DIR" -provider mtls-agent -provider default)
ENROLL=("$CTL" enroll --token 'pkcs11:token=My%20Card' --label work --key ec:p256
	--subject '/CN=alice/O=Example' --san email:alice@example.org)

# --- key generation: refusals --------------------------------------------------
it_refused "enroll with the token logged out: login required, exit 4" 4 \
	"^mtls-agentctl: enroll: token login required: token My Card: log in first$" "${ENROLL[@]}"
it_ok "login to the empty token" sh -c 'printf "%s\n" "$1" | "$2" login --pin-stdin' sh "$PIN" "$CTL"
write_conf "read-only = yes"
reload
it_refused "enroll refused by read-only = yes" 1 \
	"^mtls-agentctl: enroll: the token or identity is configured read-only: the configuration says read-only = yes$" \
	"${ENROLL[@]}"
write_conf
reload
it_refused "a label that is no identity name" 1 "label must be 1-64 of A-Z a-z 0-9 . _ -" \
	"$CTL" enroll --label 'a b' --subject /CN=x
it_refused "an unknown key kind" 2 "unknown key kind 'ec:p521'" \
	"$CTL" enroll --label x --key ec:p521 --subject /CN=x

# --- enroll ----------------------------------------------------------------------
it_run "${ENROLL[@]}"
cp "$IT_DIR/cmd.out" "$E/work.csr"
it_match "enroll prints a PEM CSR" "^-----BEGIN CERTIFICATE REQUEST-----$" "$IT_OUT"
it_ok "the CSR's signature verifies" openssl req -in "$E/work.csr" -verify -noout
it_ok "the CSR's text" openssl req -in "$E/work.csr" -noout -text
it_match "the CSR has the subject" "Subject: CN ?= ?alice, O ?= ?Example" "$IT_OUT"
it_match "the CSR has the SAN" "email:alice@example.org" "$IT_OUT"
it_match "the CSR's key is EC P-256" "NIST CURVE: P-256" "$IT_OUT"
it_ok "list after enroll" "$CTL" list
it_match "the new key is an identity with no certificate" "certificate: +\\(none\\)" "$IT_OUT"
it_match "csr is allowed for a key with no certificate" "purposes:.*csr" "$IT_OUT"
it_refused "a second key with the same label" 1 "already on the token: an identity named work exists" \
	"${ENROLL[@]}"
it_ok "the key on the token: sensitive, never extractable, for signing" \
	pkcs11-tool --module "$MTLS_TEST_MODULE" --token-label "My Card" --login --pin "$PIN" -O
it_match "private key attributes" "Access: +sensitive, always sensitive, never extractable, local" "$IT_OUT"
it_match "public key object on the token" "Public Key Object; EC" "$IT_OUT"

# --- the csr purpose binds the key ------------------------------------------------
openssl ecparam -name prime256v1 -genkey -noout -out "$E/other.key" 2>/dev/null
openssl req -new -key "$E/other.key" -subj /CN=alice -outform DER -out "$E/other.der" 2>/dev/null
# The CertificationRequestInfo: the first element of the request.
read -r off hl l < <(openssl asn1parse -inform DER -in "$E/other.der" |
	sed -n '2s/^ *\([0-9]*\):d=1 *hl= *\([0-9]*\) l= *\([0-9]*\).*/\1 \2 \3/p')
dd if="$E/other.der" of="$E/other.cri" bs=1 skip="$off" count=$((hl + l)) 2>/dev/null
it_refused "a CSR content for another key is refused" 1 \
	"content does not match the stated purpose: csr: the request is for another key than this identity's" \
	"$CTL" sign --identity work --scheme ecdsa_secp256r1_sha256 --purpose csr --in "$E/other.cri"
printf '\x16\x03\x01 not a request' >"$E/junk"
it_refused "content that is no request under csr" 1 \
	"content does not match the stated purpose: csr: not a CertificationRequestInfo" \
	"$CTL" sign --identity work --scheme ecdsa_secp256r1_sha256 --purpose csr --in "$E/junk"

# --- the CA signs; import ---------------------------------------------------------------
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=email:alice@example.org\n' >"$E/client.ext"
it_ok "the CA signs the CSR" openssl x509 -req -in "$E/work.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" \
	-days 365 -extfile "$E/client.ext" -out "$E/work.pem"
it_refused "import of a certificate whose key is on no token" 1 \
	"no private key on a logged-in token for this certificate" \
	"$CTL" import-cert "$D/server.pem"
openssl req -in "$E/work.csr" -noout -pubkey >"$E/work.pub.pem"
"$MKCERT" issue --ca-cert "$D/ca.pem" --ca-key "$D/ca.key" \
	--pubkey "$E/work.pub.pem" --subj "/CN=alice/O=Example" \
	--not-before -7200 --not-after -3600 --out "$E/expired.pem" >/dev/null 2>&1 ||
	it_die "mkcert of the expired certificate failed"
it_refused "import of an expired certificate" 1 "certificate expired: the certificate has expired" \
	"$CTL" import-cert "$E/expired.pem"
it_ok "import-cert" "$CTL" import-cert "$E/work.pem"
it_match "import-cert names the identity" "^imported: identity work$" "$IT_OUT"
it_refused "import of the same certificate again" 1 \
	"already on the token: token My Card has this certificate already" \
	"$CTL" import-cert "$E/work.pem"
it_ok "list after import (no restart)" "$CTL" list
it_match "the identity has its certificate" "subject: +O=Example,CN=alice" "$IT_OUT"
it_match "csr is off once the key has a certificate" "purposes: +tls13-client-certificate-verify, pam-challenge, ssh$" "$IT_OUT"
it_match "list shows the days to expiry" "expires: +in 36[45] days$" "$IT_OUT"

# --- expiry warnings ----------------------------------------------------------------------
sleep 1.5
it_check "no warning 365 days before the end (expiry-warning-days = 30)" sh -c \
	'! grep -q "identity work: its certificate expires" "$1"' sh "$D/agent-enroll.log"
it_ok "status with nothing expiring" "$CTL" status
it_check "... has no expiring line" sh -c '! printf "%s\n" "$1" | grep -q "^expiring:"' sh "$IT_OUT"
write_conf "expiry-warning-days = 400"
reload
for _ in $(seq 1 40); do
	grep -q "identity work: its certificate expires in" "$D/agent-enroll.log" && break
	sleep 0.1
done
it_check "the agent warns within expiry-warning-days" grep -Eq \
	"warning: .*identity work: its certificate expires in 36[45] days \(renew: mtls-agentctl renew work\)" \
	"$D/agent-enroll.log"
sleep 2.2
it_check "... once a day, not every second" sh -c \
	'[ "$(grep -c "identity work: its certificate expires in" "$1")" = 1 ]' sh "$D/agent-enroll.log"
it_ok "status counts it" "$CTL" status
it_match "... as expiring" "^expiring: +1 certificate expired or expiring soon$" "$IT_OUT"
write_conf
reload
it_ok "the certificate next to its key (same id, label)" \
	pkcs11-tool --module "$MTLS_TEST_MODULE" --token-label "My Card" -O --type cert
it_match "certificate object labelled work" "label: +work" "$IT_OUT"

# --- the agent is no CA --------------------------------------------------------------
it_run openssl x509 -req -in "$E/work.csr" "${OSSL[@]}" -CA "$E/work.pem" \
	-CAkey mtls-agent:work -days 1 -out "$E/bad.pem"
it_result "openssl x509 -req -CAkey mtls-agent: exits 1, no crash" \
	"$([ "$IT_STATUS" -eq 1 ] && echo 1 || echo 0)" "exit status $IT_STATUS"
it_match "... with the reason" "the agent signs no certificates" "$IT_ERR"
it_run openssl x509 -req -in "$E/work.csr" "${OSSL[@]}" -CA "$E/work.pem" \
	-CAkey mtls-agent:work -days 1 -extfile "$E/client.ext" -out "$E/bad.pem"
it_result "... also for a v3 certificate" "$([ "$IT_STATUS" -eq 1 ] && echo 1 || echo 0)" \
	"exit status $IT_STATUS"
it_match "... with the reason (v3)" "the agent signs no certificates" "$IT_ERR"

# --- renewal ---------------------------------------------------------------------------
it_refused "renew: csr is off for a key with a certificate" 1 \
	"denied by the identity's policy: purpose csr not allowed for this identity" \
	"$CTL" renew work
write_conf "purposes = tls13, pam, csr"
reload
it_ok "renew with the same key" "$CTL" renew work --out "$E/renew.csr"
it_ok "the renewal CSR verifies" openssl req -in "$E/renew.csr" -verify -noout -text
it_match "renewal keeps the subject" "Subject: CN ?= ?alice, O ?= ?Example" "$IT_OUT"
it_match "renewal keeps the SAN" "email:alice@example.org" "$IT_OUT"
it_check "renewal keeps the key" cmp -s <(openssl req -in "$E/renew.csr" -noout -pubkey) \
	<(openssl x509 -in "$E/work.pem" -noout -pubkey)
it_ok "openssl req -new -key mtls-agent:work" openssl req -new "${OSSL[@]}" -key mtls-agent:work \
	-subj /CN=alice -out "$E/req.csr"
it_ok "... its CSR verifies" openssl req -in "$E/req.csr" -verify -noout
it_ok "renew --new-key" "$CTL" renew work --new-key --out "$E/new.csr"
it_check "the new key is another key" sh -c '! cmp -s "$1" "$2"' sh \
	<(openssl req -in "$E/new.csr" -noout -pubkey) <(openssl x509 -in "$E/work.pem" -noout -pubkey)
it_ok "list after renew --new-key" "$CTL" list
it_match "the old identity is kept" "^identity: work$" "$IT_OUT"
it_match "the new key beside it" "^identity: work.new$" "$IT_OUT"
openssl x509 -req -in "$E/new.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -days 365 \
	-extfile "$E/client.ext" -out "$E/new.pem" 2>/dev/null
it_ok "import of the new key's certificate" "$CTL" import-cert "$E/new.pem"
it_match "... as the new identity" "^imported: identity work.new$" "$IT_OUT"
openssl x509 -req -in "$E/renew.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -days 30 \
	-extfile "$E/client.ext" -out "$E/shorter.pem" 2>/dev/null
it_refused "a certificate that ends earlier than the key's is not replaced" 1 \
	"key work has a certificate that ends no earlier \\(--force replaces it\\)" \
	"$CTL" import-cert "$E/shorter.pem"
openssl x509 -req -in "$E/renew.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -days 400 \
	-extfile "$E/client.ext" -out "$E/renewed.pem" 2>/dev/null
it_ok "the renewed certificate replaces the old one" "$CTL" import-cert "$E/renewed.pem"
it_ok "list after renewal" "$CTL" list
it_check "one identity work, with the renewed certificate" sh -c \
	'[ "$(printf "%s\n" "$1" | grep -c "^identity: work$")" = 1 ]' sh "$IT_OUT"

# --- delete-key -------------------------------------------------------------------------
printf '#!/bin/sh\necho "$ANSWER"\n' >"$E/askpass"
chmod 0700 "$E/askpass"
export MTLS_AGENT_ASKPASS=$E/askpass
it_ok "a spare key pair" "$CTL" enroll --label spare --subject /CN=spare --out "$E/spare.csr"
it_ok "openssl req -new -key mtls-agent: of a key with no certificate (csr by default)" \
	openssl req -new "${OSSL[@]}" -key mtls-agent:spare -subj /CN=spare -out "$E/x.csr"
it_ok "... its request verifies" openssl req -in "$E/x.csr" -verify -noout
it_check "... and carries the key's public key" cmp -s <(openssl req -in "$E/x.csr" -noout -pubkey) \
	<(openssl req -in "$E/spare.csr" -noout -pubkey)
ANSWER=no it_refused "delete-key asks, and no is no" 1 \
	"^mtls-agentctl: delete-key: not confirmed: nothing deleted$" "$CTL" delete-key spare
ANSWER=yes it_refused "delete-key refuses a key with a valid certificate" 1 \
	"denied by the identity's policy: identity work has a valid certificate \\(--force deletes the key anyway\\)" \
	"$CTL" delete-key work
ANSWER=yes it_ok "delete-key of a key with no certificate" "$CTL" delete-key spare
it_match "... says what it deleted" "^deleted: key pair spare$" "$IT_OUT"
it_ok "list after delete-key" "$CTL" list
it_check "spare is gone, work.new is there" sh -c \
	'! printf "%s\n" "$1" | grep -q "^identity: spare$" && printf "%s\n" "$1" | grep -q "^identity: work.new$"' \
	sh "$IT_OUT"
it_ok "the token after delete-key" pkcs11-tool --module "$MTLS_TEST_MODULE" --token-label "My Card" \
	--login --pin "$PIN" -O
it_check "no object labelled spare is left" sh -c '! printf "%s\n" "$1" | grep -q "label: *spare$"' \
	sh "$IT_OUT"
ANSWER=yes it_ok "delete-key --force of the old key after renewal" "$CTL" delete-key work.new --force
unset MTLS_AGENT_ASKPASS

# --- a token that cannot generate keys (the card-like shim) ---------------------------
: >"$E/nokeygen"
{
	echo "module = $MTLS_LOCKOUT_MODULE"
	echo "module-dirs = ${MTLS_LOCKOUT_MODULE%/*}"
	echo "token = pkcs11:token=My%20Card"
} >"$E/shim.conf"
chmod 0600 "$E/shim.conf"
mkdir -m 0700 "$E/shim"
MTLS_SHIM_NO_KEYGEN_FILE=$E/nokeygen MTLS_LOCKOUT_REAL=$MTLS_TEST_MODULE \
	it_bg agent-shim "$MTLS_AGENT_BIN" --foreground --config "$E/shim.conf" --socket "$E/shim/agent.sock"
for _ in $(seq 1 200); do
	grep -q '^MTLS_AGENT_SOCK=' "$D/agent-shim.log" && break
	sleep 0.05
done
export MTLS_AGENT_SOCK=$E/shim/agent.sock
it_ok "login through the shim" sh -c 'printf "%s\n" "$1" | "$2" login work --pin-stdin' sh "$PIN" "$CTL"
it_refused "a token that cannot generate: the mechanisms are listed" 1 \
	"^mtls-agentctl: enroll: the token cannot generate this key: key generation: the token cannot generate EC P-256 keys; its mechanisms:.* ECDSA" \
	"$CTL" enroll --label other --key ec:p256 --subject /CN=x
it_done
