#!/bin/bash
# test_walkthrough.sh - README.md's "Mutual TLS from scratch" walk-through,
# run as written: the block between <!-- walkthrough:begin --> and
# <!-- walkthrough:end -->, in one shell, in an empty directory, with the
# build tree's programs, on a private SoftHSM2 token store; then pamtester
# logs in with the identity it made (pam_wrapper, as test_pamtester.sh).
#
# What is substituted, and why (nothing else is):
#   - environment, not commands: PATH (the build tree's mtls-agent and
#     mtls-agentctl, and /usr/sbin for nginx), SOFTHSM2_CONF (a token store
#     of this test's own), XDG_RUNTIME_DIR (the agent's default socket in a
#     private directory), MTLS_AGENT_ASKPASS (answers "the card's PIN":
#     there is no terminal), MTLS_P11_HELPER_BIN (set by make check);
#   - port 8443, which may be taken, becomes a free loopback port;
#   - before the block, an EXIT trap records the agent's pid for the
#     clean-up, also when a command fails.
# The walk-through's output is printed (the report quotes it).
set -u
prog=test_walkthrough.sh
cleanup() {
	if [ -s "$T/agent.pid" ]; then
		kill -TERM "$(cat "$T/agent.pid")" 2>/dev/null
		sleep 0.3
		kill -KILL "$(cat "$T/agent.pid")" 2>/dev/null
	fi
	if [ -s "$T/w/nginx.pid" ]; then
		kill -TERM "$(cat "$T/w/nginx.pid")" 2>/dev/null
	fi
	return 0
}
. "$(dirname "$0")/wrapper-env.sh"

fail() {
	echo "$prog: FAIL: $*" >&2
	[ -s "$T/walk.out" ] && sed 's/^/  walk| /' "$T/walk.out" >&2
	[ -s "$T/w/error.log" ] && sed 's/^/  nginx| /' "$T/w/error.log" >&2
	exit 1
}
missing() {
	if [ "${CI:-}" = true ]; then
		echo "$prog: FAIL: $1 is not installed (CI must have it)" >&2
		exit 1
	fi
	echo "$prog: SKIP: $1 is not installed"
	exit 77
}
PATH=$top_builddir/src/agent:$top_builddir/src/tools:$PATH:/usr/sbin
export PATH
for p in nginx pamtester softhsm2-util openssl; do
	command -v "$p" >/dev/null || missing "$p"
done
[ -n "${MTLS_P11_HELPER_BIN:-}" ] || { echo "$prog: run through make check" >&2; exit 99; }
# No controlling terminal, so that the PIN comes from the askpass program.
if [ -z "${MTLS_WALK_NO_TTY:-}" ] && (exec </dev/tty) 2>/dev/null; then
	command -v setsid >/dev/null || { echo "$prog: setsid not installed" >&2; exit 99; }
	MTLS_WALK_NO_TTY=1 exec setsid -w bash "$0" "$@"
fi

PIN=123456
mkdir -m 0700 "$T/w" "$T/run" "$T/tokens"
cat >"$T/softhsm2.conf" <<CONF
directories.tokendir = $T/tokens
objectstore.backend = file
log.level = ERROR
CONF
printf '#!/bin/sh\necho %s\n' "$PIN" >"$T/askpass"
chmod 0700 "$T/askpass"
export SOFTHSM2_CONF=$T/softhsm2.conf XDG_RUNTIME_DIR=$T/run MTLS_AGENT_ASKPASS=$T/askpass

# A free loopback port for 8443.
port=
for _ in $(seq 1 100); do
	p=$((20000 + RANDOM % 40000))
	if ! awk -v h="$(printf ':%04X ' "$p")" 'index($2 " ", h) { f = 1 } END { exit !f }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null; then
		port=$p
		break
	fi
done
[ -n "$port" ] || fail "no free port"

sed -n '/^<!-- walkthrough:begin -->$/,/^<!-- walkthrough:end -->$/p' "$top_srcdir/README.md" |
	sed -n '/^```sh$/,/^```$/{/^```/d;p}' | sed "s/8443/$port/g" >"$T/walk.sh"
[ -s "$T/walk.sh" ] || fail "no walk-through block in README.md"
sed -i '1i trap '\''echo "${MTLS_AGENT_PID:-}" >"$WALK_T/agent.pid"'\'' EXIT' "$T/walk.sh"
(cd "$T/w" && WALK_T=$T bash -e -o pipefail "$T/walk.sh") </dev/null >"$T/walk.out" 2>&1 ||
	fail "the walk-through failed"
echo "----- the walk-through's output -----"
cat "$T/walk.out"
echo "-------------------------------------"
grep -q "^hello .*CN=alice" "$T/walk.out" || fail "nginx did not greet alice"
echo "ok 1 - README walk-through: enroll, CA, import, nginx ssl_verify_client on accepts"
grep -q "^identity: work$" "$T/walk.out" || fail "list did not show the identity work"
echo "ok 2 - the imported identity is listed at once"

# pamtester logs in with the identity the walk-through made.
cat >"$T/pam.conf" <<CONF
socket = $T/run/mtls-agent/agent.sock
ca_file = $T/w/ca.pem
CONF
chmod 0600 "$T/pam.conf"
out=$(printf '%s\n' "$PIN" | LD_PRELOAD="$WRAPPER_PRELOAD" pamtester -v mtls-pamtester alice \
	authenticate acct_mgmt 2>&1) || fail "pamtester alice failed: $out"
echo "$out" | grep -q "successfully authenticated" || fail "no success in: $out"
echo "ok 3 - pamtester alice authenticate acct_mgmt with the enrolled identity"
if out=$(printf '%s\n' 000000 | LD_PRELOAD="$WRAPPER_PRELOAD" pamtester -v mtls-pamtester alice \
	authenticate 2>&1); then
	fail "a wrong PIN logged in: $out"
fi
echo "ok 4 - a wrong PIN does not"
exit 0
