#!/usr/bin/env bash
# bench/pkcs11.sh - `make bench-pkcs11` (docs/BENCHMARKS.md, "The PKCS#11
# front end"): TLS 1.3 handshakes per second of one GnuTLS client
# (bench/pkcs11_handshake_bench) against nginx on loopback, P-256, its key
# reached through
#   agent   mtls-agent-pkcs11.so -> mtls-agent -> mtls-agent-p11 -> SoftHSM2
#   direct  SoftHSM2's module loaded in the client (the reference)
#   remote  p11-kit-client.so -> `p11-kit server` -> SoftHSM2
# BENCH_REPS repetitions (default 5) of BENCH_SECONDS (default 3) each,
# interleaved; prints median, min-max and the ratio to direct.
set -u
. "${top_srcdir:?}/tests/interop/lib.sh"

REPS=${BENCH_REPS:-5}
SECS=${BENCH_SECONDS:-3}
B=${top_builddir:?}/bench/pkcs11_handshake_bench
[ -x "$B" ] || it_die "$B not built (make bench-pkcs11 builds it; needs GnuTLS headers)"
: "${MTLS_PKCS11_MODULE:?}"
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
CLIENT=
for m in /usr/lib/$MULTIARCH/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so; do
	[ -f "$m" ] && CLIENT=$m && break
done
[ -n "$CLIENT" ] || it_die "p11-kit-client.so not found (Debian: p11-kit-modules)"
IT_ONLY_EXTRA=1
it_extra_conf() {
	echo
	echo "[identity p256]"
	echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private"
	echo "certificate = $IT_DIR/p256.pem"
	echo "purposes = tls13, pkcs11-digest"
	echo "peers = uid:$(id -u)"
}
it_init
it_nginx_start
P=$NGINX_TLS13
it_bg p11kit p11-kit server -f -n "$D/p11kit.sock" --provider "$MTLS_TEST_MODULE" \
	"pkcs11:token=$MTLS_TEST_TOKEN"
for _ in $(seq 1 100); do [ -S "$D/p11kit.sock" ] && break; sleep 0.05; done
[ -S "$D/p11kit.sock" ] || it_die "p11-kit server did not start: $(cat "$D/p11kit.log")"

run() { # variant -> handshakes/s
	local v=$1 out
	case $v in
	agent) out=$("$B" "$MTLS_PKCS11_MODULE" "$D/ca.pem" "pkcs11:token=p256;object=p256;type=cert" \
		"pkcs11:token=p256;object=p256;type=private" "$P" "$SECS") ;;
	direct) out=$("$B" "$MTLS_TEST_MODULE" "$D/ca.pem" "$D/p256.pem" \
		"pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private" "$P" "$SECS" "$MTLS_TEST_PIN") ;;
	remote) out=$(P11_KIT_SERVER_ADDRESS=unix:path=$D/p11kit.sock "$B" "$CLIENT" "$D/ca.pem" \
		"$D/p256.pem" "pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private" "$P" "$SECS" \
		"$MTLS_TEST_PIN") ;;
	esac || it_die "$v: the benchmark client failed"
	printf '%s\n' "${out#handshakes/s }"
}
declare -A R
for i in $(seq 1 "$REPS"); do
	for v in direct agent remote; do
		R[$v]="${R[$v]:-} $(run "$v")"
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
range() { tr ' ' '\n' | grep . | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }
ref=$(echo "${R[direct]}" | median)
printf '| TLS 1.3 handshakes/s, P-256, GnuTLS client (%s x %s s) | median | min-max | vs direct |\n' "$REPS" "$SECS"
printf '|---|---|---|---|\n'
for v in direct agent remote; do
	m=$(echo "${R[$v]}" | median)
	case $v in
	direct) name="SoftHSM2 loaded in the client" ;;
	agent) name="mtls-agent-pkcs11.so (agent, helper, SoftHSM2)" ;;
	remote) name="p11-kit-client.so + p11-kit server" ;;
	esac
	printf '| %s | %s | %s | %.2fx |\n' "$name" "$m" "$(echo "${R[$v]}" | range)" \
		"$(awk -v a="$m" -v b="$ref" 'BEGIN { print a / b }')"
done
signed=$(grep -c "audit: sign ok: .* identity=p256 " "$D/agent.log" || true)
echo "(the agent logged $signed signatures)"
