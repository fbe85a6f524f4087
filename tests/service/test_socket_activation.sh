#!/bin/bash
# test_socket_activation.sh - the agent started the way systemd starts a
# socket-activated service (tests/fixtures/listen-fds: a listening AF_UNIX
# socket on fd 3, LISTEN_FDS=1, LISTEN_PID = the agent's pid, then exec),
# on the SoftHSM2 fixture:
#   1. it serves on the passed socket: list, login, a TLS 1.3
#      CertificateVerify signed and verified with the certificate;
#      after SIGTERM the socket file is still there (systemd owns it)
#   2. LISTEN_PID of another process: the variables are not for it, it
#      listens on its own --socket and the passed one gets no answer
#   3. a passed socket that is not listening: refused with a clear error
#   4. stderr that is the journal (JOURNAL_STREAM = its device:inode): the
#      log goes through syslog(3), with priorities, not to stderr; a
#      JOURNAL_STREAM naming another file changes nothing
set -u
prog=test_socket_activation.sh
: "${top_builddir:?}"
AGENT=${MTLS_AGENT_BIN:-$top_builddir/src/agent/mtls-agent}
CTL=${MTLS_AGENTCTL_BIN:-$top_builddir/src/tools/mtls-agentctl}
LFDS=${MTLS_LISTEN_FDS:-$top_builddir/tests/fixtures/listen-fds}
SETUP=${MTLS_FIXTURE_SETUP:?}
[ -x "$AGENT" ] && [ -x "$CTL" ] && [ -x "$LFDS" ] || { echo "$prog: build first" >&2; exit 99; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mtls-sockact.XXXXXX") || exit 99
AGENT_PID=
cleanup() {
	if [ -n "$AGENT_PID" ]; then
		kill -KILL "$AGENT_PID" 2>/dev/null
		wait "$AGENT_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
fail() {
	echo "$prog: FAIL: $*" >&2
	[ -s "$T/agent.log" ] && sed 's/^/  agent| /' "$T/agent.log" >&2
	exit 1
}

mkdir -m 0700 "$T/fx" "$T/run" "$T/own"
MKCERT=${MKCERT:?} "$SETUP" "$T/fx" >"$T/setup.log" 2>&1 || { cat "$T/setup.log" >&2; exit 99; }
. "$T/fx/env.sh"

# Starts the agent under listen-fds; waits for its MTLS_AGENT_SOCK line.
start() { # listen-fds options... -- agent options...
	local lopts=()
	while [ "$1" != -- ]; do lopts+=("$1"); shift; done
	shift
	"$LFDS" "${lopts[@]}" "$T/run/agent.sock" "$AGENT" --foreground \
		--module "$MTLS_TEST_MODULE" --token "pkcs11:token=$MTLS_TEST_TOKEN" "$@" \
		</dev/null >"$T/agent.out" 2>"$T/agent.log" &
	AGENT_PID=$!
	for _ in $(seq 1 100); do
		grep -q '^MTLS_AGENT_SOCK=' "$T/agent.out" 2>/dev/null && return 0
		kill -0 "$AGENT_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

stop() {
	kill -TERM "$AGENT_PID" 2>/dev/null
	for _ in $(seq 1 50); do
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$AGENT_PID" 2>/dev/null && fail "agent still running 5 s after SIGTERM"
	wait "$AGENT_PID"
	rc=$?
	AGENT_PID=
	[ "$rc" -eq 0 ] || fail "agent exited with $rc after SIGTERM"
}

# 1. the passed socket
start -- || fail "socket-activated agent did not start"
grep -qx "MTLS_AGENT_SOCK=$T/run/agent.sock; export MTLS_AGENT_SOCK;" "$T/agent.out" ||
	fail "agent does not say it serves the passed socket: $(cat "$T/agent.out")"
S=$T/run/agent.sock
out=$("$CTL" -s "$S" list 2>&1) || fail "list through the passed socket: $out"
case $out in *p256*) ;; *) fail "list shows no p256 identity: $out" ;; esac
out=$(printf '%s\n' "$MTLS_TEST_PIN" | "$CTL" -s "$S" login --pin-stdin 2>&1) ||
	fail "login through the passed socket: $out"
{
	head -c 64 /dev/zero | tr '\0' ' '
	printf 'TLS 1.3, client CertificateVerify\0'
	head -c 32 /dev/urandom
} >"$T/tbs.bin"
out=$("$CTL" -s "$S" sign --identity p256 --scheme ecdsa_secp256r1_sha256 \
	--purpose tls13-client-certificate-verify --in "$T/tbs.bin" --out "$T/sig.bin" 2>&1) ||
	fail "sign through the passed socket: $out"
openssl x509 -in "$T/fx/p256.pem" -pubkey -noout >"$T/p256.pub" || exit 99
out=$(openssl dgst -sha256 -verify "$T/p256.pub" -signature "$T/sig.bin" "$T/tbs.bin" 2>&1) ||
	fail "the signature made through the passed socket does not verify: $out"
[ -S "$T/run/ssh.sock" ] || fail "no SSH socket beside the passed one"
grep -qx "SSH_AUTH_SOCK=$T/run/ssh.sock; export SSH_AUTH_SOCK;" "$T/agent.out" ||
	fail "agent does not print SSH_AUTH_SOCK beside the passed socket: $(cat "$T/agent.out")"
stop
[ -S "$S" ] || fail "the agent removed the socket systemd owns"
[ -e "$T/run/ssh.sock" ] && fail "the agent left its own SSH socket behind"
echo "$prog: 1. list, login and a verified signature through the passed socket; socket kept"

# 1b. both sockets passed (mtls-agent.socket + mtls-agent-ssh.socket)
start --ssh "$T/run/sshp.sock" -- || fail "agent with two passed sockets did not start"
grep -qx "SSH_AUTH_SOCK=$T/run/sshp.sock; export SSH_AUTH_SOCK;" "$T/agent.out" ||
	fail "agent does not serve the passed SSH socket: $(cat "$T/agent.out")"
if command -v ssh-add >/dev/null; then
	out=$(SSH_AUTH_SOCK=$T/run/sshp.sock ssh-add -l 2>&1) ||
		fail "ssh-add -l through the passed SSH socket: $out"
	case $out in *ECDSA*) ;; *) fail "ssh-add -l shows no ECDSA key: $out" ;; esac
elif [ "${CI:-}" = true ]; then
	fail "ssh-add is not installed (openssh-client)"
fi
out=$("$CTL" -s "$S" list 2>&1) || fail "list through the passed agent socket: $out"
[ -e "$T/run/ssh.sock" ] && fail "the agent made its own SSH socket though one was passed"
stop
[ -S "$T/run/sshp.sock" ] || fail "the agent removed the SSH socket systemd owns"
"$LFDS" --ssh "$T/run/sshp.sock" --names "mtls-agent.socket:other" "$T/run/agent.sock" \
	"$AGENT" --foreground --module "$MTLS_TEST_MODULE" </dev/null >"$T/agent.out" 2>"$T/agent.log"
rc=$?
[ "$rc" -eq 1 ] || fail "agent with two sockets, none named ssh: exit $rc, not 1"
grep -q 'socket activation: 2 sockets passed, and LISTEN_FDNAMES does not name exactly one of them "ssh"' \
	"$T/agent.log" || fail "no clear error for two sockets without an ssh one: $(cat "$T/agent.log")"
echo "$prog: 1b. the SSH socket passed by mtls-agent-ssh.socket is served and kept; two sockets without one named ssh refused"

# 2. LISTEN_PID of another process: ignored
start --other-pid -- --socket "$T/own/agent.sock" || fail "agent with a foreign LISTEN_PID did not start"
grep -qx "MTLS_AGENT_SOCK=$T/own/agent.sock; export MTLS_AGENT_SOCK;" "$T/agent.out" ||
	fail "foreign LISTEN_PID taken: $(cat "$T/agent.out")"
out=$("$CTL" -s "$T/own/agent.sock" list 2>&1) || fail "list through the agent's own socket: $out"
out=$(MTLS_AGENT_TIMEOUT=2 timeout 10 "$CTL" -s "$S" status 2>&1) &&
	fail "the passed socket of another process answered: $out"
stop
echo "$prog: 2. LISTEN_PID of another process ignored"

# 3. not listening
"$LFDS" --no-listen "$T/run/agent.sock" "$AGENT" --foreground --module "$MTLS_TEST_MODULE" \
	</dev/null >"$T/agent.out" 2>"$T/agent.log"
rc=$?
[ "$rc" -eq 1 ] || fail "agent with a non-listening socket: exit $rc, not 1"
grep -q 'socket activation: descriptor 3 is not listening' "$T/agent.log" ||
	fail "no clear error for a non-listening socket: $(cat "$T/agent.log")"
echo "$prog: 3. a socket that is not listening refused"

# 4. JOURNAL_STREAM
: >"$T/agent.log"
js=$(stat -c '%d:%i' "$T/agent.log")
JOURNAL_STREAM=$js start -- || fail "agent with JOURNAL_STREAM did not start"
stop
grep -q 'mtls-agent: info: ' "$T/agent.log" &&
	fail "stderr is the journal, yet the agent wrote its log lines there: $(cat "$T/agent.log")"
JOURNAL_STREAM=1:1 start -- || fail "agent with a foreign JOURNAL_STREAM did not start"
stop
grep -q 'mtls-agent: info: listening on' "$T/agent.log" ||
	fail "a JOURNAL_STREAM of another file took the log away from stderr"
echo "$prog: 4. stderr that is the journal: logged through syslog"
