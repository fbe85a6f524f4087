#!/usr/bin/env bash
# The agent's SSH socket against real OpenSSH: sshd (started here on
# 127.0.0.1 with its own configuration, host keys and AuthorizedKeysFile
# in the test directory) accepts logins signed on the token for an RSA and
# an EC identity through ssh -o IdentityAgent; ssh-add -l/-L list the
# token keys, -x/-X lock and unlock the agent; ssh-keygen -Y sign/verify
# and git commit -S (gpg.format=ssh) + git verify-commit sign with them.
# Refusals, each with the agent's audit reason: random data, a userauth
# request carrying another key, an SSHSIG namespace not allowed, a host
# not in ssh-destinations (ssh fails, nothing signed), an agent forwarded
# with ssh -A to a second sshd when the identity does not allow
# forwarding, malformed frames of every message type, a peer refused by
# `peers`.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

SSHD=$(it_find sshd) || SSHD=
if [ -z "$SSHD" ] || ! command -v ssh >/dev/null || ! command -v ssh-add >/dev/null ||
	! command -v git >/dev/null; then
	# CI installs openssh-server, openssh-client and git (./quickstart deps).
	[ "${CI:-}" = true ] && it_die "sshd, ssh, ssh-add or git is not installed"
	it_skip "sshd, ssh, ssh-add or git is not installed"
fi
FRAMES=${top_builddir:-.}/tests/interop/test_ssh_frames
[ -x "$FRAMES" ] || it_die "$FRAMES is not built"

# Host keys exist before the agent starts: its configuration names them.
it_write_agent_conf() {
	local conf=$IT_DIR/agent.conf fp1
	ssh-keygen -q -t ed25519 -N '' -C sshd1 -f "$IT_DIR/hostkey1" || it_die "ssh-keygen"
	ssh-keygen -q -t ecdsa -b 256 -N '' -C sshd2 -f "$IT_DIR/hostkey2" || it_die "ssh-keygen"
	ssh-keygen -q -t rsa -b 2048 -N '' -C sshd2 -f "$IT_DIR/hostkey2rsa" || it_die "ssh-keygen"
	fp1=$(ssh-keygen -l -f "$IT_DIR/hostkey1.pub" | awk '{print $2}')
	# OpenSSH certificates of token keys, by a user CA sshd1 trusts.
	ssh-keygen -q -t ed25519 -N '' -C userca -f "$IT_DIR/userca" || it_die "ssh-keygen"
	for k in p256 rsa2048; do
		ssh-keygen -i -m PKCS8 -f "$IT_DIR/$k.pub.pem" >"$IT_DIR/$k.plain.pub" || it_die "ssh-keygen -i"
		ssh-keygen -q -s "$IT_DIR/userca" -I "$k-cert" -n "$(id -un)" -V -5m:+1h \
			"$IT_DIR/$k.plain.pub" || it_die "ssh-keygen -s"
	done
	# Names for the known-hosts destination with a host pattern.
	{
		echo "one.test $(cut -d' ' -f1,2 "$IT_DIR/hostkey1.pub")"
		echo "two.test $(cut -d' ' -f1,2 "$IT_DIR/hostkey2.pub")"
	} >"$IT_DIR/kh-names"
	cat >"$conf" <<CONF
module = $MTLS_TEST_MODULE
log-level = debug

# RSA: logins and signatures with the default namespaces (git, file);
# no ssh-forwarding.
[identity rsa2048]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%01;type=private
certificate = $IT_DIR/rsa2048.pem
purposes = ssh, ssh-sig

# Only to sshd1 (its host-key fingerprint), also through a forwarded agent.
[identity rsa3072]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%02;type=private
certificate = $IT_DIR/rsa3072.pem
purposes = ssh
ssh-destinations = $fp1
ssh-forwarding = yes
# a certificate of another key: not offered
ssh-certificate = $IT_DIR/rsa2048.plain-cert.pub

# EC: hosts named one.* in kh-names; signatures for git only.
[identity p256]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private
certificate = $IT_DIR/p256.pem
purposes = ssh, ssh-sig
ssh-sig-namespaces = git
ssh-destinations = known-hosts=$IT_DIR/kh-names:one.*
ssh-certificate = $IT_DIR/p256.plain-cert.pub

# No one may use it (peers).
[identity p384]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%04;type=private
certificate = $IT_DIR/p384.pem
purposes = ssh
peers = exe:/nonexistent/program
CONF
	chmod 0600 "$conf"
}

it_init
SOCK=$(sed -n 's/^SSH_AUTH_SOCK=\([^;]*\);.*/\1/p' "$D/agent.log" | head -n 1)
[ "$SOCK" = "$D/run/ssh.sock" ] || it_die "the agent did not print SSH_AUTH_SOCK=$D/run/ssh.sock"
[ -S "$SOCK" ] || it_die "no SSH socket at $SOCK"
export SSH_AUTH_SOCK=$SOCK
USER_NAME=$(id -un)
AUDIT=$D/agent.log

# The number of audit lines matching REGEX so far.
audit_count() {
	grep -Ec -- "$1" "$AUDIT" || true
}

# it_audit NAME REGEX: a new audit line matching REGEX since the mark.
MARK=0
mark() {
	MARK=$(wc -l <"$AUDIT")
}
it_audit() {
	local got=
	for _ in $(seq 1 20); do
		got=$(tail -n +"$((MARK + 1))" "$AUDIT" | grep -E -- "$2" | head -n 1)
		[ -n "$got" ] && break
		sleep 0.05
	done
	if [ -n "$got" ]; then
		it_result "$1" 1
	else
		it_result "$1" 0 "no audit line matching /$2/ (last lines: $(tail -n 3 "$AUDIT"))"
	fi
}

# --- ssh-add -----------------------------------------------------------------
it_ok "ssh-add -l lists the token keys" ssh-add -l
it_match "ssh-add -l: RSA-2048 with the certificate subject" \
	"^2048 SHA256:[A-Za-z0-9+/]{43} /O=mtls-agent tests/CN=rsa2048 client \(RSA\)$" "$IT_OUT"
it_match "ssh-add -l: P-256" "^256 SHA256:.* /O=mtls-agent tests/CN=p256 client \(ECDSA\)$" "$IT_OUT"
it_match "ssh-add -l: P-384" "^384 SHA256:.* \(ECDSA\)$" "$IT_OUT"
it_ok "ssh-add -L prints OpenSSH public keys" ssh-add -L
it_check "ssh-add -L: the p256 identity's OpenSSH certificate is offered" grep -qF \
	"ecdsa-sha2-nistp256-cert-v01@openssh.com $(cut -d' ' -f2 "$D/p256.plain-cert.pub") " \
	<<<"$IT_OUT"
it_check "ssh-add -L: a certificate of another key is not offered (rsa3072)" \
	[ "$(grep -c -- "-cert-v01@openssh.com" <<<"$IT_OUT")" -eq 1 ]
it_check "the agent says why it does not offer rsa3072's certificate" \
	grep -q "identity rsa3072: ssh-certificate .* not of the identity's key; not offered" "$AUDIT"
grep -v -- "-cert-v01@openssh.com" <<<"$IT_OUT" >"$D/authorized_keys"
chmod 0600 "$D/authorized_keys"
for k in rsa2048 rsa3072 p256 p384; do
	grep "CN=$k client" "$D/authorized_keys" >"$D/$k.ssh.pub" || it_die "no $k key in ssh-add -L"
done
# The same key as the token's public key (from the fixture's DER).
for k in rsa2048 p256; do
	it_run ssh-keygen -i -m PKCS8 -f "$D/$k.pub.pem"
	it_check "ssh-add -L $k is the token key" \
		[ "$(cut -d' ' -f2 <<<"$IT_OUT")" = "$(cut -d' ' -f2 "$D/$k.ssh.pub")" ]
done
# mtls-agentctl ssh-pubkey: the same lines from the mtls-agent socket.
it_ok "mtls-agentctl ssh-pubkey" "$CTL" ssh-pubkey
it_check "ssh-pubkey prints what ssh-add -L prints (without certificates)" \
	[ "$IT_OUT" = "$(cat "$D/authorized_keys")" ]
it_ok "mtls-agentctl ssh-pubkey p256" "$CTL" ssh-pubkey p256
it_check "ssh-pubkey p256: one line, the p256 key" [ "$IT_OUT" = "$(cat "$D/p256.ssh.pub")" ]
it_refused "mtls-agentctl ssh-pubkey NOSUCH" 1 "^mtls-agentctl: ssh-pubkey: no identity named nosuch$" \
	"$CTL" ssh-pubkey nosuch
it_run "$FRAMES" "$SOCK" query
it_match "query lists session-bind@openssh.com" "^session-bind@openssh.com$" "$IT_OUT"

# --- two sshd on loopback ------------------------------------------------------
[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd # privilege separation directory
start_sshd() { # NAME HOSTKEY...
	local name=$1 k
	shift
	for _ in 1 2 3; do
		it_free_port
		{
			echo "ListenAddress 127.0.0.1:$IT_PORT"
			for k in "$@"; do echo "HostKey $k"; done
			echo "AuthorizedKeysFile $D/authorized_keys"
			echo "PidFile none"
			echo "StrictModes no"
			echo "UsePAM no"
			echo "PasswordAuthentication no"
			echo "KbdInteractiveAuthentication no"
			echo "PubkeyAuthentication yes"
			echo "PermitRootLogin prohibit-password"
			echo "AllowAgentForwarding yes"
			echo "TrustedUserCAKeys $D/userca.pub"
			echo "LogLevel VERBOSE"
		} >"$D/$name.conf"
		it_bg "$name" "$SSHD" -D -e -f "$D/$name.conf"
		it_wait_listen "$IT_PID" "$IT_PORT" "$name" && return 0
	done
	it_die "$name did not start"
}
start_sshd sshd1 "$D/hostkey1"
P1=$IT_PORT
start_sshd sshd2 "$D/hostkey2" "$D/hostkey2rsa"
P2=$IT_PORT
{
	echo "[127.0.0.1]:$P1 $(cut -d' ' -f1,2 "$D/hostkey1.pub")"
	echo "[127.0.0.1]:$P2 $(cut -d' ' -f1,2 "$D/hostkey2.pub")"
	echo "[127.0.0.1]:$P2 $(cut -d' ' -f1,2 "$D/hostkey2rsa.pub")"
} >"$D/known_hosts"
SSH_OPTS=(-F /dev/null -o "UserKnownHostsFile=$D/known_hosts" -o StrictHostKeyChecking=yes
	-o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10 -o LogLevel=ERROR)
# ssh_to KEY PORT [ssh options] -- COMMAND...
ssh_to() {
	local key=$1 port=$2
	shift 2
	ssh "${SSH_OPTS[@]}" -o "IdentityAgent=$SOCK" -i "$D/$key.ssh.pub" -p "$port" "$@"
}

# --- logins --------------------------------------------------------------------
mark
it_ok "ssh with the RSA identity runs a command" ssh_to rsa2048 "$P1" "$USER_NAME@127.0.0.1" \
	echo "hello from rsa"
it_match "ssh RSA: the command's output" "^hello from rsa$" "$IT_OUT"
it_audit "audit: RSA login signed, user and host key named" \
	"ssh-sign ok: .* identity=rsa2048 .* alg=rsa-sha2-(256|512) purpose=ssh ssh-user=$USER_NAME host=\? host-key=SHA256:"
it_audit "audit: the session was bound (host key verified)" "audit: ssh-bind: .* host key SHA256:"
mark
it_ok "ssh with the EC identity runs a command" ssh_to p256 "$P1" "$USER_NAME@127.0.0.1" \
	echo "hello from p256"
it_match "ssh EC: the command's output" "^hello from p256$" "$IT_OUT"
it_audit "audit: EC login to one.test (known-hosts destination)" \
	"ssh-sign ok: .* identity=p256 .* alg=ecdsa-sha2-nistp256 purpose=ssh ssh-user=$USER_NAME host=one.test"
it_ok "ssh RSA to sshd2 (ECDSA host key)" ssh_to rsa2048 "$P2" "$USER_NAME@127.0.0.1" true
it_ok "ssh RSA to sshd2 (RSA host key)" ssh_to rsa2048 "$P2" \
	-o HostKeyAlgorithms=rsa-sha2-512 "$USER_NAME@127.0.0.1" true
it_ok "ssh rsa3072 to its destination sshd1" ssh_to rsa3072 "$P1" "$USER_NAME@127.0.0.1" true
mark
it_ok "ssh with the p256 identity's OpenSSH certificate" ssh_to p256 "$P1" \
	-o "CertificateFile=$D/p256.plain-cert.pub" "$USER_NAME@127.0.0.1" echo cert-login
it_match "certificate login: the command's output" "^cert-login$" "$IT_OUT"
it_check "sshd1 accepted the certificate" grep -q "Accepted publickey for .* ECDSA-CERT .*ID p256-cert" \
	"$D/sshd1.log"

# --- destinations ----------------------------------------------------------------
mark
n_ok=$(audit_count "ssh-sign ok")
it_run ssh_to rsa3072 "$P2" "$USER_NAME@127.0.0.1" echo should-not-run
it_check "ssh rsa3072 to sshd2 (not in ssh-destinations) fails" [ "$IT_STATUS" -eq 255 ]
it_audit "audit: destination refused with the host key" \
	"ssh-sign refused: .* identity=rsa3072 .*result=SSH destination not allowed.*: user \"$USER_NAME\" to host key SHA256:.* not in ssh-destinations"
it_check "nothing was signed for sshd2" [ "$(audit_count "ssh-sign ok")" -eq "$n_ok" ]
mark
it_run ssh_to p256 "$P2" "$USER_NAME@127.0.0.1" true
it_check "ssh p256 to two.test (pattern one.*) fails" [ "$IT_STATUS" -eq 255 ]
it_audit "audit: known-hosts pattern refused" \
	"ssh-sign refused: .* identity=p256 .*not in ssh-destinations"

# --- forwarding ------------------------------------------------------------------
mark
INNER="ssh ${SSH_OPTS[*]} -p $P2 $USER_NAME@127.0.0.1"
it_run ssh_to rsa2048 "$P1" -A "$USER_NAME@127.0.0.1" \
	"$INNER -i $D/rsa2048.ssh.pub echo second-hop; echo inner=\$?"
it_match "ssh -A then ssh to sshd2 with rsa2048 (no ssh-forwarding) fails" "^inner=255$" "$IT_OUT"
it_audit "audit: forwarded binding refused" \
	"ssh-sign refused: .* identity=rsa2048 .*forwarded result=SSH destination not allowed.*does not allow forwarding"
it_run ssh_to rsa3072 "$P1" -A "$USER_NAME@127.0.0.1" \
	"$INNER -i $D/rsa3072.ssh.pub echo second-hop; echo inner=\$?"
it_match "ssh -A with rsa3072 (ssh-forwarding = yes): sshd2 still not a destination" \
	"^inner=255$" "$IT_OUT"
it_run ssh_to rsa3072 "$P1" -A "$USER_NAME@127.0.0.1" \
	"ssh ${SSH_OPTS[*]} -p $P1 -i $D/rsa3072.ssh.pub $USER_NAME@127.0.0.1 echo second-hop"
it_match "ssh -A with rsa3072 to its destination through the forwarded agent" \
	"^second-hop$" "$IT_OUT"

# --- ssh-keygen -Y and git ---------------------------------------------------------
echo "signed by the token" >"$D/msg"
for k in rsa2048 p256; do
	rm -f "$D/msg.sig"
	it_ok "ssh-keygen -Y sign -n git ($k)" ssh-keygen -Y sign -f "$D/$k.ssh.pub" -n git "$D/msg"
	echo "tester@example.com namespaces=\"git\" $(cut -d' ' -f1,2 "$D/$k.ssh.pub")" >"$D/allowed"
	it_run sh -c 'ssh-keygen -Y verify -f "$1" -I tester@example.com -n git -s "$2" <"$3"' \
		_ "$D/allowed" "$D/msg.sig" "$D/msg"
	it_check "ssh-keygen -Y verify ($k)" [ "$IT_STATUS" -eq 0 ]
	it_match "ssh-keygen -Y verify ($k): good signature" "^Good \"git\" signature" "$IT_OUT"
done
rm -f "$D/msg.sig"
mark
it_run ssh-keygen -Y sign -f "$D/p256.ssh.pub" -n file "$D/msg"
it_check "ssh-keygen -Y sign -n file refused for p256 (namespaces: git)" [ "$IT_STATUS" -ne 0 ]
it_audit "audit: namespace refused" \
	"ssh-sign refused: .* identity=p256 .*purpose=ssh-sig sshsig-namespace=file .*SSHSIG namespace \"file\" not in ssh-sig-namespaces \(git\)"
rm -f "$D/msg.sig"
it_ok "ssh-keygen -Y sign -n file with rsa2048 (default namespaces git, file)" \
	ssh-keygen -Y sign -f "$D/rsa2048.ssh.pub" -n file "$D/msg"

# The README's command, as written.
G=$D/repo
git init -q "$G" && cd "$G" || it_die "git init"
git config user.email tester@example.com
git config user.name Tester
echo content >file && git add file
it_ok "git commit -S with gpg.format=ssh and a key:: signing key from ssh-add -L" \
	git -c gpg.format=ssh -c user.signingkey="key::$(ssh-add -L | head -1)" commit -S -m msg
echo "tester@example.com namespaces=\"git\" $(ssh-add -L | head -1)" >"$D/allowed_signers"
it_ok "git verify-commit" git -c gpg.format=ssh -c gpg.ssh.allowedSignersFile="$D/allowed_signers" \
	verify-commit HEAD
it_match "git verify-commit: a good signature" 'Good "git" signature for tester@example.com' \
	"$IT_ERR"
cd "$D" || it_die "cd"

# --- refusals of what OpenSSH never sends ------------------------------------------
mark
it_run "$FRAMES" "$SOCK" sign-random "$D/rsa2048.ssh.pub"
it_match "SIGN_REQUEST over random bytes: FAILURE" "^reply 5$" "$IT_OUT"
it_audit "audit: random bytes refused" \
	"ssh-sign refused: .* identity=rsa2048 .*result=content does not match the stated purpose: not an SSH userauth request"
mark
it_run "$FRAMES" "$SOCK" sign-other "$D/rsa2048.ssh.pub" "$D/p256.ssh.pub"
it_match "SIGN_REQUEST: userauth carrying another key: FAILURE" "^reply 5$" "$IT_OUT"
it_audit "audit: another key refused" \
	"ssh-sign refused: .* identity=rsa2048 .*carries another key"
mark
it_run "$FRAMES" "$SOCK" sign-wrong-alg "$D/rsa2048.ssh.pub"
it_match "SIGN_REQUEST: userauth names rsa-sha2-512, flags ask SHA-256: FAILURE" "^reply 5$" \
	"$IT_OUT"
it_audit "audit: algorithm mismatch refused" "ssh-sign refused: .*names another signature algorithm"
it_run "$FRAMES" "$SOCK" sign-userauth "$D/rsa2048.ssh.pub"
it_match "SIGN_REQUEST: a good userauth request (unbound) is signed" "^reply 14$" "$IT_OUT"
it_run "$FRAMES" "$SOCK" sign-userauth "$D/p256.ssh.pub"
it_match "SIGN_REQUEST: p256 has ssh-destinations: unbound refused" "^reply 5$" "$IT_OUT"
mark
it_run "$FRAMES" "$SOCK" bind "$D/rsa2048.ssh.pub"
[ "$IT_STATUS" -eq 0 ] || it_die "test_ssh_frames bind failed: $IT_ERR"
for c in bind:6 userauth-other-session:5 hostbound-other-hostkey:5 hostbound-bound-hostkey:14 \
	userauth-bound-session:14 rebind-after-auth:5 bind-forwarding:6 bind-same-session:5 \
	bind-wrong-signer:5 hostbound-unbound:5; do
	it_match "session-bind: ${c%:*} gets ${c#*:}" "^${c%:*} reply ${c#*:}$" "$IT_OUT"
done
it_audit "audit: userauth for another session than the bound one" \
	"ssh-sign refused: .*userauth session id is not the one the connection is bound to"
it_audit "audit: hostbound userauth naming another host key" \
	"ssh-sign refused: .*server host key in the userauth request is not the bound one"
it_audit "audit: hostbound userauth on an unbound connection" \
	"ssh-sign refused: .*hostbound userauth on a connection without session-bind"
it_audit "audit: a second binding after one for authentication" \
	"ssh-bind refused: .*already bound for authentication"
it_audit "audit: a session id bound twice" "ssh-bind refused: .*session id bound already"
mark
it_run "$FRAMES" "$SOCK" malformed "$D/rsa2048.ssh.pub"
it_check "malformed frames of every type: FAILURE, and the connection still serves" \
	[ "$IT_STATUS" -eq 0 ]
[ "$IT_STATUS" -eq 0 ] || printf '%s\n' "$IT_OUT"
it_audit "audit: a frame over the limit closed the connection" \
	"ssh connection closed: .*frame over 262144 bytes"
it_audit "audit: a session-bind whose signature does not verify" \
	"ssh-bind refused: .*the signature over the session id does not verify"
it_audit "audit: a malformed session-bind" "ssh-bind refused: .*malformed session-bind"
mark
it_run ssh_to p384 "$P1" "$USER_NAME@127.0.0.1" true
it_check "ssh with p384 (peers = exe:/nonexistent/program) fails" [ "$IT_STATUS" -eq 255 ]
it_audit "audit: peer refused by peers" \
	"ssh-sign refused: .* identity=p384 .*may not use identity p384"

# --- lock ----------------------------------------------------------------------------
printf '#!/bin/sh\necho lockpass\n' >"$D/askpass"
chmod 0700 "$D/askpass"
mark
it_ok "ssh-add -x locks" env SSH_ASKPASS="$D/askpass" SSH_ASKPASS_REQUIRE=force ssh-add -x
it_audit "audit: locked" "audit: lock: .*agent locked"
it_run ssh-add -l
it_match "locked: ssh-add -l lists nothing" "The agent has no identities" "$IT_OUT$IT_ERR"
it_run ssh_to rsa2048 "$P1" "$USER_NAME@127.0.0.1" true
it_check "locked: ssh fails" [ "$IT_STATUS" -eq 255 ]
mark
it_run "$FRAMES" "$SOCK" sign-userauth "$D/rsa2048.ssh.pub"
it_match "locked: a SIGN_REQUEST for a known key gets FAILURE" "^reply 5$" "$IT_OUT"
it_audit "audit: sign refused while locked" "ssh-sign refused: .*agent locked"
it_run "$CTL" list
it_check "locked: the mtls-agent socket is locked too" [ "$IT_STATUS" -ne 0 ]
it_ok "ssh-add -X unlocks" env SSH_ASKPASS="$D/askpass" SSH_ASKPASS_REQUIRE=force ssh-add -X
it_ok "unlocked: ssh works again" ssh_to rsa2048 "$P1" "$USER_NAME@127.0.0.1" true

it_done
