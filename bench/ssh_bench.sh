#!/usr/bin/env bash
# ssh_bench.sh - SSH SIGN_REQUESTs per second on one SoftHSM2 token, one
# run: through mtls-agent's SSH socket, through OpenSSH's ssh-agent with
# `ssh-add -s MODULE` (ssh-pkcs11-helper), and raw PKCS#11 (bench/sign_bench
# --backend pkcs11, the limit); RSA-2048 and P-256; the signers on CPU 0 and
# the client on CPU 1 ("apart"), then everything on CPU 0 ("one CPU").
# The SSH client is the same program for both agents
# (tests/interop/test_ssh_frames bench: one connection, a userauth request
# per SIGN_REQUEST, the next sent when the reply is in).
#
#   make bench-ssh      (BENCH_REPS, default 5; BENCH_SECONDS, default 2)
#
# Prints a markdown table (median, min-max, ratio to raw) and writes it to
# bench/results-ssh-<date>.md.  Everything started is stopped on exit.
set -u
REPS=${BENCH_REPS:-5}
SECS=${BENCH_SECONDS:-2}
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
FRAMES=$top_builddir/tests/interop/test_ssh_frames
SIGN=$top_builddir/bench/sign_bench
AGENT=$top_builddir/src/agent/mtls-agent
CTL=$top_builddir/src/tools/mtls-agentctl
export MTLS_P11_HELPER_BIN=$top_builddir/src/p11/mtls-agent-p11
for p in "$FRAMES" "$SIGN" "$AGENT" "$CTL" "$MTLS_P11_HELPER_BIN"; do
	[ -x "$p" ] || { echo "ssh_bench: $p is not built" >&2; exit 99; }
done
for p in ssh-agent ssh-add taskset; do
	command -v "$p" >/dev/null || { echo "ssh_bench: $p is not installed" >&2; exit 99; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/mtls-sshbench.XXXXXX") || exit 99
chmod 0700 "$T"
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	sleep 0.3
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	[ "${BENCH_KEEP:-0}" = 1 ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
die() {
	echo "ssh_bench: $*" >&2
	exit 1
}

MKCERT=${MKCERT:-$top_builddir/tests/fixtures/mkcert} \
	"$top_srcdir/tests/fixtures/softhsm-setup.sh" "$T" >"$T/setup.log" 2>&1 ||
	die "fixture: $(cat "$T/setup.log")"
. "$T/env.sh"
cat >"$T/agent.conf" <<CONF
module = $MTLS_TEST_MODULE
log-level = warning
[identity rsa2048]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%01;type=private
certificate = $T/rsa2048.pem
purposes = ssh
[identity p256]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private
certificate = $T/p256.pem
purposes = ssh
CONF
chmod 0600 "$T/agent.conf"
mkdir -m 0700 "$T/run"

# start_signers CPUS: mtls-agent and ssh-agent (with the token's keys)
# pinned to CPUS; sets MSOCK and OSOCK.
start_signers() {
	local cpus=$1 out
	taskset -c "$cpus" "$AGENT" --foreground --config "$T/agent.conf" \
		--socket "$T/run/agent.sock" </dev/null >"$T/agent.log" 2>&1 &
	PIDS+=($!)
	MPID=$!
	for _ in $(seq 1 100); do [ -S "$T/run/ssh.sock" ] && break; sleep 0.05; done
	[ -S "$T/run/ssh.sock" ] || die "mtls-agent did not start: $(cat "$T/agent.log")"
	out=$(printf '%s\n' "$MTLS_TEST_PIN" | "$CTL" -s "$T/run/agent.sock" login --pin-stdin 2>&1) ||
		die "login: $out"
	MSOCK=$T/run/ssh.sock
	OSOCK=$T/run/openssh.sock
	rm -f "$OSOCK"
	taskset -c "$cpus" ssh-agent -D -a "$OSOCK" </dev/null >"$T/ssh-agent.log" 2>&1 &
	PIDS+=($!)
	OPID=$!
	for _ in $(seq 1 100); do [ -S "$OSOCK" ] && break; sleep 0.05; done
	printf '#!/bin/sh\necho %s\n' "$MTLS_TEST_PIN" >"$T/askpass"
	chmod 0700 "$T/askpass"
	out=$(SSH_AUTH_SOCK=$OSOCK SSH_ASKPASS=$T/askpass SSH_ASKPASS_REQUIRE=force \
		ssh-add -s "$MTLS_TEST_MODULE" 2>&1) || die "ssh-add -s: $out"
	SSH_AUTH_SOCK=$MSOCK ssh-add -L >"$T/keys" || die "ssh-add -L"
	grep "CN=rsa2048 client" "$T/keys" >"$T/rsa2048.pub"
	grep "CN=p256 client" "$T/keys" >"$T/p256.pub"
}
stop_signers() {
	kill -TERM "$MPID" "$OPID" 2>/dev/null
	wait "$MPID" "$OPID" 2>/dev/null
	PIDS=()
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
minmax() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }

OUT=${BENCH_OUT:-$top_builddir/bench/results-ssh-$(date +%Y%m%d-%H%M).md}
{
	echo "SSH SIGN_REQUESTs/s, one client, $REPS x ${SECS}s each, $(nproc) CPUs, $(date -u +%F)"
	echo
	echo "| Layout | Key | Variant | median /s | min-max | x raw |"
	echo "|---|---|---|---|---|---|"
} >"$OUT"
for layout in apart one; do
	if [ "$layout" = apart ]; then SCPU=0 CCPU=1; else SCPU=0 CCPU=0; fi
	start_signers "$SCPU"
	for alg in rsa2048 p256; do
		: >"$T/raw" && : >"$T/mtls" && : >"$T/openssh"
		for _ in $(seq 1 "$REPS"); do
			taskset -c "$CCPU" "$SIGN" --backend pkcs11 --module "$MTLS_TEST_MODULE" \
				--token "$MTLS_TEST_TOKEN" --pin "$MTLS_TEST_PIN" --alg "$alg" \
				--seconds "$SECS" | awk '{ print $2 }' >>"$T/raw"
			taskset -c "$CCPU" "$FRAMES" "$MSOCK" bench "$T/$alg.pub" "$SECS" >>"$T/mtls" ||
				die "mtls-agent bench failed"
			taskset -c "$CCPU" "$FRAMES" "$OSOCK" bench "$T/$alg.pub" "$SECS" >>"$T/openssh" ||
				die "ssh-agent bench failed"
		done
		raw=$(median <"$T/raw")
		for v in raw mtls openssh; do
			m=$(median <"$T/$v")
			case $v in
			raw) name="raw PKCS#11 (sign_bench)" ;;
			mtls) name="mtls-agent SSH socket" ;;
			openssh) name="ssh-agent + ssh-add -s" ;;
			esac
			echo "| $layout | $alg | $name | $m | $(minmax <"$T/$v") | $(awk -v a="$m" -v b="$raw" 'BEGIN { printf "%.2f", a / b }') |"
		done >>"$OUT"
	done
	stop_signers
done
cat "$OUT"
