#!/bin/bash
# test_usage.sh - mtls-agentctl's usage and PIN prompts where a user meets them:
#   1. `mtls-agentctl SUBCOMMAND --help` and `-h`, for every subcommand:
#      that subcommand's usage on stdout, exit 0, no agent contacted
#   2. login without a terminal (setsid: no controlling tty) and no askpass:
#      an error that says how to give the PIN, not "cannot read /dev/tty"
#   3. the same with MTLS_AGENT_ASKPASS: the program gets the prompt and
#      its answer logs the token in; an askpass that fails: a clear error
#   4. lock without a terminal: the hint names lock's own --stdin
set -u
prog=test_usage.sh
: "${top_builddir:?}"
AGENT=${MTLS_AGENT_BIN:-$top_builddir/src/agent/mtls-agent}
CTL=${MTLS_AGENTCTL_BIN:-$top_builddir/src/tools/mtls-agentctl}
SETUP=${MTLS_FIXTURE_SETUP:?}
[ -x "$AGENT" ] && [ -x "$CTL" ] || { echo "$prog: build first" >&2; exit 99; }
command -v setsid >/dev/null || { echo "$prog: setsid (util-linux) not installed; skipped"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mtls-usage.XXXXXX") || exit 99
AGENT_PID=
cleanup() {
	if [ -n "$AGENT_PID" ]; then
		kill -TERM "$AGENT_PID" 2>/dev/null
		sleep 0.2
		kill -KILL "$AGENT_PID" 2>/dev/null
		wait "$AGENT_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
failed=0
fail() {
	echo "$prog: FAIL: $*" >&2
	failed=1
}

# 1. --help / -h of every subcommand, with no agent anywhere.
for sub in list login logout status change-pin unblock-pin lock unlock sign connect ssh-pubkey key-file; do
	for h in --help -h; do
		out=$(MTLS_AGENT_SOCK=$T/none.sock "$CTL" "$sub" $h 2>"$T/err")
		rc=$?
		[ "$rc" -eq 0 ] || fail "$sub $h: exit $rc: $(cat "$T/err")"
		[ -s "$T/err" ] && fail "$sub $h: wrote to stderr: $(cat "$T/err")"
		case $out in
		"usage: mtls-agentctl [-s|--socket PATH] [-q|--quiet] $sub"*) ;;
		*) fail "$sub $h: not $sub's usage: $out" ;;
		esac
	done
done
# After the other options too, and "--" ends the search.
out=$("$CTL" sign --identity x --help 2>&1) || fail "sign --identity x --help: $out"
case $out in "usage: mtls-agentctl"*sign*) ;; *) fail "sign --identity x --help: $out" ;; esac
[ "$failed" = 0 ] && echo "$prog: 1. --help and -h answer each subcommand's usage"

# An agent on the fixture token, for the PIN prompts.
mkdir -m 0700 "$T/fx" "$T/run"
MKCERT=${MKCERT:?} "$SETUP" "$T/fx" >"$T/setup.log" 2>&1 || { cat "$T/setup.log" >&2; exit 99; }
. "$T/fx/env.sh"
S=$T/run/agent.sock
"$AGENT" --foreground --module "$MTLS_TEST_MODULE" --token "pkcs11:token=$MTLS_TEST_TOKEN" \
	--socket "$S" </dev/null >"$T/agent.out" 2>"$T/agent.log" &
AGENT_PID=$!
for _ in $(seq 1 100); do
	[ -S "$S" ] && break
	sleep 0.1
done
[ -S "$S" ] || { cat "$T/agent.log" >&2; exit 99; }
export MTLS_AGENT_SOCK=$S
unset SSH_ASKPASS MTLS_AGENT_ASKPASS

# 2. no terminal, no askpass
out=$(setsid -w "$CTL" login </dev/null 2>&1)
rc=$?
[ "$rc" -ne 0 ] || fail "login without terminal or askpass succeeded: $out"
case $out in
*"no terminal to ask on: give it with --pin-stdin or --pin-file FILE, or set MTLS_AGENT_ASKPASS"*) ;;
*) fail "login without a terminal: no hint how to give the PIN: $out" ;;
esac
case $out in *"/dev/tty"*) fail "login without a terminal still talks of /dev/tty: $out" ;; esac
[ "$failed" = 0 ] && echo "$prog: 2. login without a terminal says how to give the PIN"

# 3. askpass: gets the prompt, its line is the PIN
cat >"$T/askpass" <<ASK
#!/bin/sh
printf '%s\n' "\$1" >"$T/askpass.prompt"
printf '%s\n' "$MTLS_TEST_PIN"
ASK
chmod 0700 "$T/askpass"
out=$(MTLS_AGENT_ASKPASS=$T/askpass setsid -w "$CTL" login </dev/null 2>&1) ||
	fail "login through MTLS_AGENT_ASKPASS: $out"
[ "$out" = "logged in" ] || fail "login through MTLS_AGENT_ASKPASS said: $out"
[ "$(cat "$T/askpass.prompt" 2>/dev/null)" = "PIN for $MTLS_TEST_TOKEN: " ] ||
	fail "askpass got the prompt '$(cat "$T/askpass.prompt" 2>/dev/null)'"
out=$("$CTL" logout 2>&1) || fail "logout: $out"
printf '#!/bin/sh\nexit 1\n' >"$T/cancel"
chmod 0700 "$T/cancel"
out=$(MTLS_AGENT_ASKPASS=$T/cancel setsid -w "$CTL" login </dev/null 2>&1) &&
	fail "login with a cancelled askpass succeeded: $out"
case $out in
*"the askpass program $T/cancel gave no PIN"*) ;;
*) fail "cancelled askpass: $out" ;;
esac
[ "$failed" = 0 ] && echo "$prog: 3. MTLS_AGENT_ASKPASS asked without a terminal, its failure reported"

# 4. lock: its own option in the hint
out=$(setsid -w "$CTL" lock </dev/null 2>&1) && fail "lock without a terminal succeeded: $out"
case $out in
*"give it on standard input with --stdin"*) ;;
*) fail "lock without a terminal: $out" ;;
esac
[ "$failed" = 0 ] && echo "$prog: 4. lock without a terminal names --stdin"
exit "$failed"
