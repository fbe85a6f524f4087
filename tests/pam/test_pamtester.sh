#!/bin/bash
# test_pamtester.sh - the real pamtester against a PAM service file that
# uses pam_mtls_agent, under pam_wrapper and nss_wrapper (wrapper-env.sh),
# with the real agent on a fresh SoftHSM2 token.  pamtester asks the PIN
# through its own conversation (libpam_misc), which reads it from stdin.
#   1. right PIN: authenticate + acct_mgmt succeed
#   2. wrong PIN: authenticate fails ("Authentication failure")
#   3. bob, to whom the certificate does not map: fails without a PIN prompt
set -u
prog=test_pamtester.sh
AGENT_PID=

cleanup() {
	if [ -n "$AGENT_PID" ]; then
		kill -TERM "$AGENT_PID" 2>/dev/null
		for _ in $(seq 1 50); do
			kill -0 "$AGENT_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$AGENT_PID" 2>/dev/null
		wait "$AGENT_PID" 2>/dev/null
		AGENT_PID=
	fi
}

. "$(dirname "$0")/wrapper-env.sh"

fail() {
	echo "$prog: FAIL: $*" >&2
	[ -s "$T/agent.log" ] && sed 's/^/  agent| /' "$T/agent.log" >&2
	exit 1
}

command -v pamtester >/dev/null || { echo "$prog: pamtester not installed (apt-get install pamtester); skipped"; exit 77; }
MKCERT=${MKCERT:-$top_builddir/tests/fixtures/mkcert}
AGENT=${MTLS_AGENT_BIN:-$top_builddir/src/agent/mtls-agent}
SETUP=${MTLS_FIXTURE_SETUP:-$top_srcdir/tests/fixtures/softhsm-setup.sh}
[ -x "$MKCERT" ] && [ -x "$AGENT" ] || { echo "$prog: build mkcert and the agent first" >&2; exit 99; }

# Token, and a certificate with CN=alice for the token's P-256 key.
mkdir -m 0700 "$T/fx" "$T/run"
MKCERT=$MKCERT "$SETUP" "$T/fx" >"$T/setup.log" 2>&1 || { cat "$T/setup.log" >&2; exit 99; }
. "$T/fx/env.sh"
"$MKCERT" issue --ca-cert "$T/fx/ca.pem" --ca-key "$T/fx/ca.key" --pubkey "$T/fx/p256.pub.pem" \
	--subj "/O=mtls-agent tests/CN=alice" --eku clientAuth --out "$T/fx/alice.pem" ||
	fail "mkcert"

cat >"$T/agent.conf" <<CONF
module = $MTLS_TEST_MODULE
token = pkcs11:token=$MTLS_TEST_TOKEN
[identity alice]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private
certificate = $T/fx/alice.pem
purposes = pam
CONF
chmod 0600 "$T/agent.conf"
"$AGENT" --foreground --config "$T/agent.conf" --socket "$T/run/agent.sock" \
	</dev/null >"$T/agent.out" 2>"$T/agent.log" &
AGENT_PID=$!
for _ in $(seq 1 100); do
	[ -S "$T/run/agent.sock" ] && break
	kill -0 "$AGENT_PID" 2>/dev/null || break
	sleep 0.1
done
[ -S "$T/run/agent.sock" ] || fail "agent did not start"

cat >"$T/pam.conf" <<CONF
socket = $T/run/agent.sock
ca_file = $T/fx/ca.pem
CONF
chmod 0600 "$T/pam.conf"

pamtest() { # user stdin-text operations...
	local user=$1 input=$2
	shift 2
	printf '%s\n' "$input" | LD_PRELOAD="$WRAPPER_PRELOAD" pamtester -v mtls-pamtester "$user" "$@" 2>&1
}

# 1. the right PIN
out=$(pamtest alice "$MTLS_TEST_PIN" authenticate acct_mgmt) ||
	fail "login with the right PIN failed: $out"
echo "$out" | grep -q "PIN for $MTLS_TEST_TOKEN" || fail "no PIN prompt in: $out"
echo "$out" | grep -q "successfully authenticated" || fail "no success in: $out"
echo "ok 1 - pamtester alice authenticate acct_mgmt with the right PIN"

# 2. a wrong PIN, on a fresh agent so the token is not logged in
cleanup
"$AGENT" --foreground --config "$T/agent.conf" --socket "$T/run/agent.sock" \
	</dev/null >"$T/agent.out" 2>"$T/agent.log" &
AGENT_PID=$!
for _ in $(seq 1 100); do
	[ -S "$T/run/agent.sock" ] && break
	sleep 0.1
done
if out=$(pamtest alice 000000 authenticate); then
	fail "login with a wrong PIN succeeded: $out"
fi
echo "$out" | grep -q "Authentication failure" || fail "unexpected failure: $out"
echo "ok 2 - pamtester alice authenticate with a wrong PIN fails"

# 3. bob: the certificate maps to alice
if out=$(pamtest bob "$MTLS_TEST_PIN" authenticate); then
	fail "bob logged in with alice's certificate: $out"
fi
echo "$out" | grep -q "PIN for" && fail "bob was asked for a PIN: $out"
echo "ok 3 - pamtester bob authenticate fails (certificate maps to alice)"
exit 0
