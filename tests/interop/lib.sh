# lib.sh - shared set-up for the TLS interop tests (sourced, not run).
#
# it_init makes a private temp directory with the SoftHSM2 fixture
# ($MTLS_FIXTURE_SETUP), starts the real mtls-agent in the foreground on it
# with the identities below, waits for its MTLS_AGENT_SOCK line and logs the
# token in.  Servers are started with it_bg and waited for with
# it_wait_listen; an EXIT trap kills and reaps every process started here
# and removes the directory, on success and on failure alike.
#
# Identities (key on the fixture token, certificate from the fixture):
#   rsa2048 rsa3072 p256 p384            purposes tls13
#   rsa2048-tls12 rsa3072-tls12 p256-tls12 p384-tls12
#                                         purposes tls13, tls12
#   p256-wrongca   the p256 key with a certificate from another CA
#   p256-expired   the p256 key with an expired certificate
#
# Checks: it_ok NAME CMD... expects exit 0; it_refused NAME STATUS REGEX
# CMD... expects exit STATUS and one stderr line matching REGEX.  Output of
# the last command is in $IT_OUT / $IT_ERR.  it_done ends the test: exit 1
# if any check failed.  Skips (exit 77) only for a missing server program.
#
# Environment (set by make check): MTLS_FIXTURE_SETUP, MKCERT,
# MTLS_AGENT_BIN, MTLS_AGENTCTL_BIN, MTLS_PROVIDER_DIR, top_builddir.
# IT_KEEP=1 keeps the directory for a post-mortem.

IT_NAME=${0##*/}
IT_NAME=${IT_NAME%.sh}
IT_DIR=
IT_PIDS=()
IT_SYSTEM_FILES=()
IT_PORTS=()
IT_CHECKS=0
IT_FAILED=0
IT_OUT=
IT_ERR=
IT_STATUS=0
AGENT_PID=

it_msg() {
	printf '%s: %s\n' "$IT_NAME" "$*"
}

# A broken set-up is a hard error (99), not a test failure.
it_die() {
	printf '%s: ERROR: %s\n' "$IT_NAME" "$*" >&2
	exit 99
}

it_skip() {
	printf '%s: SKIP: %s\n' "$IT_NAME" "$*"
	exit 77
}

it_need_env() {
	local v
	for v in "$@"; do
		[ -n "${!v:-}" ] || it_die "$v is not set (run the test through 'make check')"
	done
}

# Stops one process: TERM, up to 3 s, then KILL; always reaped.
it_stop() {
	local pid=$1
	[ -n "$pid" ] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

it_cleanup() {
	local rc=$? pid f
	trap - EXIT INT TERM
	for pid in "${IT_PIDS[@]}"; do
		it_stop "$pid"
	done
	for f in "${IT_SYSTEM_FILES[@]}"; do
		rm -f "$f"
	done
	if [ -n "$IT_DIR" ] && [ -d "$IT_DIR" ]; then
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
			for f in "$IT_DIR"/*.log "$IT_DIR"/nginx/error.log; do
				[ -s "$f" ] || continue
				echo "----- ${f#"$IT_DIR"/} (last 25 lines) -----"
				tail -n 25 "$f"
			done
		fi
		if [ "${IT_KEEP:-0}" = 1 ]; then
			echo "$IT_NAME: kept $IT_DIR"
		else
			rm -rf "$IT_DIR"
		fi
	fi
	exit "$rc"
}

# Runs "$@" in the background with output to $IT_DIR/NAME.log; sets IT_PID.
it_bg() {
	local name=$1
	shift
	"$@" </dev/null >"$IT_DIR/$name.log" 2>&1 &
	IT_PID=$!
	IT_PIDS+=("$IT_PID")
}

# True when something listens on TCP PORT (any address, v4 or v6); read
# from /proc so that probing does not open a connection to the server.
it_listening() {
	local hex
	hex=$(printf ':%04X ' "$1")
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		awk -v p="$hex" 'index($2 " ", p) && $4 == "0A" { found = 1 } END { exit !found }'
}

it_port_used() {
	local hex
	hex=$(printf ':%04X ' "$1")
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		awk -v p="$hex" 'index($2 " ", p) { found = 1 } END { exit !found }'
}

# A loopback port nobody uses now; also distinct from the ones this test
# picked before.  Sets IT_PORT.
it_free_port() {
	local p q taken
	for _ in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		taken=0
		for q in "${IT_PORTS[@]}"; do
			[ "$q" = "$p" ] && taken=1
		done
		[ "$taken" = 0 ] || continue
		it_port_used "$p" && continue
		IT_PORTS+=("$p")
		IT_PORT=$p
		return 0
	done
	it_die "no free loopback port found"
}

# Waits until PID listens on PORT (10 s at most).  Returns 1 when the
# server exited first (someone may have taken the port since it was
# picked: the caller tries another), after showing its log.
it_wait_listen() {
	local pid=$1 port=$2 name=$3
	for _ in $(seq 1 200); do
		it_listening "$port" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null || true
			it_msg "$name exited before listening on port $port:"
			sed 's/^/    /' "$IT_DIR/$name.log" 2>/dev/null
			return 1
		fi
		sleep 0.05
	done
	it_die "$name did not listen on port $port within 10 s"
}

# it_server NAME CMD...: starts a server on a fresh port, written @PORT@ in
# CMD; three tries.  Sets IT_PORT and IT_PID.
it_server() {
	local name=$1 a args
	shift
	for _ in 1 2 3; do
		it_free_port
		args=()
		for a in "$@"; do
			args+=("${a//@PORT@/$IT_PORT}")
		done
		it_bg "$name" "${args[@]}"
		it_wait_listen "$IT_PID" "$IT_PORT" "$name" && return 0
	done
	it_die "$name did not start"
}

it_write_agent_conf() {
	local id label purposes cert conf=$IT_DIR/agent.conf
	{
		echo "# generated by $IT_NAME"
		echo "module = $MTLS_TEST_MODULE"
		echo "log-level = debug"
		# IT_ONLY_EXTRA=1: only the test's own identities (it_extra_conf).
		[ "${IT_ONLY_EXTRA:-0}" = 1 ] || for label in rsa2048:01 rsa3072:02 p256:03 p384:04; do
			id=${label#*:}
			label=${label%:*}
			for purposes in "tls13" "tls13, tls12"; do
				echo
				if [ "$purposes" = tls13 ]; then
					echo "[identity $label]"
				else
					echo "[identity $label-tls12]"
				fi
				echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%$id;type=private"
				echo "certificate = $IT_DIR/$label.pem"
				echo "purposes = $purposes"
			done
		done
		[ "${IT_ONLY_EXTRA:-0}" = 1 ] || for cert in wrongca expired; do
			echo
			echo "[identity p256-$cert]"
			echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private"
			echo "certificate = $IT_DIR/p256-$cert.pem"
			echo "purposes = tls13, tls12"
		done
		# A test may add identities of its own (a function it defines).
		if declare -F it_extra_conf >/dev/null; then
			it_extra_conf
		fi
	} >"$conf"
	chmod 0600 "$conf"
}

# Starts the agent and waits for its MTLS_AGENT_SOCK line.
it_start_agent() {
	local sock
	mkdir -m 0700 "$IT_DIR/run"
	# The agent prints (and flushes) its MTLS_AGENT_SOCK line once it
	# listens; its log goes to the same file.
	it_bg agent "$MTLS_AGENT_BIN" --foreground --config "$IT_DIR/agent.conf" \
		--socket "$IT_DIR/run/agent.sock"
	AGENT_PID=$IT_PID
	for _ in $(seq 1 200); do
		sock=$(sed -n 's/^MTLS_AGENT_SOCK=\([^;]*\);.*/\1/p' "$IT_DIR/agent.log" | head -n 1)
		[ -n "$sock" ] && break
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$sock" ]; then
		cat "$IT_DIR/agent.log"
		it_die "the agent did not print MTLS_AGENT_SOCK within 10 s"
	fi
	export MTLS_AGENT_SOCK=$sock
}

it_login() {
	local out
	out=$(printf '%s\n' "$MTLS_TEST_PIN" | "$MTLS_AGENTCTL_BIN" login --pin-stdin 2>&1) ||
		it_die "mtls-agentctl login failed: $out"
}

# The path of a program; servers live in /usr/sbin, which a user's PATH
# may lack.
it_find() {
	command -v "$1" 2>/dev/null && return 0
	[ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1" && return 0
	return 1
}

# it_system_file PATH: writes stdin to PATH outside the test directory
# (a p11-kit registration, a browser policy: programs running as root read
# only the system's), removed again when the test ends.
it_system_file() {
	mkdir -p "$(dirname "$1")" || it_die "cannot create $(dirname "$1")"
	IT_SYSTEM_FILES+=("$1")
	cat >"$1" || it_die "cannot write $1"
}

# The ASan runtime of a sanitizer build (.ci/sanitizers), empty otherwise:
# what this build's modules (mtls-agent.so, mtls-agent-pkcs11.so) link.
# Foreign programs that host them next to SoftHSM2 cannot run then.
IT_ASAN_RT=$(ldd "${top_builddir:-.}/.libs/mtls-agent-pkcs11.so" 2>/dev/null |
	awk '$1 ~ /^libasan/ { print $3; exit }')

# it_require PROGRAM...: clients a test cannot do without.  Missing ones
# skip the test on a developer's machine, with the reason, and FAIL it in
# CI (CI=true), where ./quickstart check installs them.
it_require() {
	local p missing=
	for p in "$@"; do
		it_find "$p" >/dev/null || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	if [ "${CI:-}" = true ]; then
		printf '%s: FAIL: not installed:%s (./quickstart check installs them)\n' \
			"$IT_NAME" "$missing" >&2
		exit 1
	fi
	it_skip "not installed:$missing"
}

# Sets up everything; "$@" are programs the test needs (skip if missing).
it_init() {
	local p out
	for p in "$@"; do
		it_find "$p" >/dev/null || it_skip "$p is not installed"
	done
	NGINX=$(it_find nginx) || NGINX=nginx
	it_need_env MTLS_FIXTURE_SETUP MKCERT MTLS_AGENT_BIN MTLS_AGENTCTL_BIN
	trap it_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	IT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mtls-interop.XXXXXX") || it_die "mktemp failed"
	chmod 0700 "$IT_DIR"
	out=$(MKCERT=$MKCERT "$MTLS_FIXTURE_SETUP" "$IT_DIR" 2>&1 </dev/null) ||
		it_die "fixture set-up failed: $out"
	# shellcheck disable=SC1091
	. "$IT_DIR/env.sh"
	it_write_agent_conf
	it_start_agent
	it_login
	# For the tests: the control tool and the fixture directory.
	# shellcheck disable=SC2034
	CTL=$MTLS_AGENTCTL_BIN
	D=$IT_DIR
}

# Records one check's result.
it_result() {
	local name=$1 ok=$2 why=${3:-}
	IT_CHECKS=$((IT_CHECKS + 1))
	if [ "$ok" = 1 ]; then
		echo "ok $IT_CHECKS - $name"
	else
		IT_FAILED=$((IT_FAILED + 1))
		echo "not ok $IT_CHECKS - $name: $why"
		[ -z "$IT_OUT" ] || printf '%s\n' "$IT_OUT" | head -n 20 | sed 's/^/    stdout: /'
		[ -z "$IT_ERR" ] || printf '%s\n' "$IT_ERR" | head -n 20 | sed 's/^/    stderr: /'
	fi
}

it_run() {
	local o=$IT_DIR/cmd.out e=$IT_DIR/cmd.err
	"$@" </dev/null >"$o" 2>"$e" && IT_STATUS=0 || IT_STATUS=$?
	IT_OUT=$(cat "$o")
	IT_ERR=$(cat "$e")
}

# it_ok NAME CMD...: exit 0 expected.
it_ok() {
	local name=$1
	shift
	it_run "$@"
	if [ "$IT_STATUS" -eq 0 ]; then
		it_result "$name" 1
	else
		it_result "$name" 0 "exit status $IT_STATUS, expected 0"
	fi
}

# it_refused NAME STATUS REGEX CMD...: exit STATUS and exactly one stderr
# line, matching the extended REGEX.
it_refused() {
	local name=$1 want=$2 re=$3 lines
	shift 3
	it_run "$@"
	lines=$(printf '%s\n' "$IT_ERR" | grep -c . || true)
	if [ "$IT_STATUS" -ne "$want" ]; then
		it_result "$name" 0 "exit status $IT_STATUS, expected $want"
	elif [ "$lines" -ne 1 ]; then
		it_result "$name" 0 "expected one line on stderr, got $lines"
	elif ! printf '%s\n' "$IT_ERR" | grep -Eq -- "$re"; then
		it_result "$name" 0 "stderr does not match /$re/"
	else
		it_result "$name" 1
	fi
}

# it_check NAME CMD...: a check that CMD succeeds, its output not captured.
it_check() {
	local name=$1
	shift
	if "$@"; then
		it_result "$name" 1
	else
		it_result "$name" 0 "failed: $*"
	fi
}

# it_match NAME REGEX TEXT: a check on output already captured.
it_match() {
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		it_result "$1" 1
	else
		it_result "$1" 0 "output does not match /$2/"
	fi
}

it_done() {
	echo "$IT_NAME: $((IT_CHECKS - IT_FAILED))/$IT_CHECKS checks passed"
	[ "$IT_CHECKS" -gt 0 ] || it_die "no checks ran"
	[ "$IT_FAILED" -eq 0 ] || exit 1
	exit 0
}

# --- servers ------------------------------------------------------------------

# nginx with client verification, one server block per port, as this user.
# it_nginx_start: NGINX_TLS13 (TLS 1.3), NGINX_TLS12_PKCS1 and
# NGINX_TLS12_PSS (TLS 1.2, CertificateRequest offers only RSA PKCS#1 or
# only RSA-PSS, and ECDSA for both) and NGINX_H2 (TLS 1.3, HTTP/2 offered
# by ALPN) are the ports.  Each location answers
# "dn=<$ssl_client_s_dn> proto=<$ssl_protocol> verify=<...> x=<X-Test>";
# /forbidden answers 403; /redirect redirects (302) to /, /to-http to a
# plain http:// URL.
it_nginx_server() {
	local port=$1 protocols=$2 sigalgs=${3:-} http2=${4:-}
	cat <<EOF
	server {
		listen 127.0.0.1:$port ssl${http2:+ http2};
		server_name localhost;
		ssl_certificate $D/server.pem;
		ssl_certificate_key $D/server.key;
		ssl_client_certificate $D/ca.pem;
		ssl_verify_client on;
		ssl_protocols $protocols;
EOF
	[ -z "$sigalgs" ] || echo "		ssl_conf_command ClientSignatureAlgorithms $sigalgs;"
	cat <<'EOF'
		default_type text/plain;
		location / {
			return 200 "dn=<$ssl_client_s_dn> proto=<$ssl_protocol> verify=<$ssl_client_verify> x=<$http_x_test>\n";
		}
		location /forbidden {
			return 403;
		}
		location /redirect {
			return 302 /;
		}
		location /to-http {
			return 302 http://localhost/;
		}
EOF
	# More locations from the test, e.g. a git repository to clone.
	[ -z "${NGINX_EXTRA:-}" ] || printf '%s\n' "$NGINX_EXTRA"
	echo "	}"
}

it_nginx_start() {
	for _ in 1 2 3; do
		it_nginx_try && return 0
	done
	it_die "nginx did not start"
}

it_nginx_try() {
	local N=$IT_DIR/nginx
	mkdir -p "$N/tmp"
	it_free_port
	NGINX_TLS13=$IT_PORT
	it_free_port
	NGINX_TLS12_PKCS1=$IT_PORT
	it_free_port
	NGINX_TLS12_PSS=$IT_PORT
	it_free_port
	NGINX_H2=$IT_PORT
	{
		cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $N/nginx.pid;
error_log $N/error.log info;
events {
	worker_connections 64;
}
http {
	access_log $N/access.log;
	client_body_temp_path $N/tmp/body;
	proxy_temp_path $N/tmp/proxy;
	fastcgi_temp_path $N/tmp/fastcgi;
	uwsgi_temp_path $N/tmp/uwsgi;
	scgi_temp_path $N/tmp/scgi;
EOF
		it_nginx_server "$NGINX_TLS13" TLSv1.3
		it_nginx_server "$NGINX_TLS12_PKCS1" TLSv1.2 \
			"RSA+SHA256:RSA+SHA384:ECDSA+SHA256:ECDSA+SHA384"
		it_nginx_server "$NGINX_TLS12_PSS" TLSv1.2 \
			"rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:ECDSA+SHA256:ECDSA+SHA384"
		it_nginx_server "$NGINX_H2" TLSv1.3 "" http2
		echo "}"
	} >"$N/nginx.conf"
	it_bg nginx "$NGINX" -p "$N" -c "$N/nginx.conf" -e "$N/error.log"
	NGINX_PID=$IT_PID
	it_wait_listen "$NGINX_PID" "$NGINX_TLS13" nginx &&
		it_wait_listen "$NGINX_PID" "$NGINX_TLS12_PKCS1" nginx &&
		it_wait_listen "$NGINX_PID" "$NGINX_TLS12_PSS" nginx &&
		it_wait_listen "$NGINX_PID" "$NGINX_H2" nginx
}
