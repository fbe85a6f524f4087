#!/bin/bash
# readme.sh - make installcheck: the installed programs, used as README.md
# and etc/pam.d tell a user to use them.
#
# The Makefile has installed the tree into $DESTDIR.  This script
#   1. extracts the commands of README.md's "Using the agent by hand"
#      block and runs each one as written, in order, in one shell, with the
#      installed mtls-agent, mtls-agentctl and provider, against a SoftHSM2
#      fixture token reached through the agent's default module (no -M:
#      p11-kit's registry, which lists SoftHSM2);
#   2. runs the commands of README.md's "SSH and git with the same card"
#      block the same way, with the installed agent's SSH socket, against
#      an sshd started here on 127.0.0.1 and a fresh git repository;
#   3. runs the login snippet etc/pam.d/mtls-agent-login.example with the
#      installed pam_mtls_agent.so under pamtester (pam_wrapper and
#      nss_wrapper: no real account or /etc/pam.d file is touched).
#
# What is substituted, and why (nothing else is):
#   - environment, not commands: PATH, LD_LIBRARY_PATH, OPENSSL_MODULES and
#     MTLS_P11_HELPER_BIN (the agent's PKCS#11 helper, which it otherwise
#     runs from the configured libexecdir) point into $DESTDIR (a DESTDIR
#     tree is not where the system looks);
#     XDG_RUNTIME_DIR and XDG_CONFIG_HOME are private directories; the
#     user's agent.conf there selects the fixture token and names the
#     identity "mycard" (its key and certificate, me.pem, on the token;
#     for the PAM login, "alice": the same key, a certificate for alice);
#     INSTALLCHECK_MODULE, when set, adds "module = ..." (to try another
#     module; unset, as in README, the agent's default module is used);
#     MTLS_AGENT_ASKPASS answers "PIN from the terminal" (there is none);
#   - in README's commands: service.example:8443, the README's example
#     service, becomes localhost:PORT, an openssl s_server that requires a
#     client certificate from the fixture CA (ca.pem);
#   - in README's SSH commands: `ssh user@host` becomes `ssh -F CONFIG
#     USER@host`, CONFIG naming the sshd's loopback port and its
#     known_hosts, USER the user running the test; the agent of part 1 is
#     stopped first (the second block starts its own), the identity
#     "mycard" is also allowed ssh and ssh-sig, and what `ssh-add -L`
#     printed becomes the sshd's authorized_keys (what its comment says to
#     do with it); the git command runs in a new repository with one
#     staged file;
#   - in the PAM snippet: the bare module name becomes the installed
#     module's path (libpam looks in its own directory only), the CA and
#     CRL paths become the fixture's, and socket= is added (the snippet
#     relies on the system agent's /run/mtls-agent/agent.sock).
# Environment (from the Makefile): DESTDIR bindir libdir pamdir
# osslmodulesdir top_srcdir MKCERT MTLS_FIXTURE_SETUP WITH_PAM.
set -u
prog=readme.sh
for v in DESTDIR bindir libdir osslmodulesdir top_srcdir MKCERT MTLS_FIXTURE_SETUP; do
	[ -n "${!v:-}" ] || { echo "$prog: $v is not set (run make installcheck)" >&2; exit 99; }
done
# No controlling terminal, so that nothing prompts whoever runs make.
if [ -z "${MTLS_README_NO_TTY:-}" ] && (exec </dev/tty) 2>/dev/null; then
	command -v setsid >/dev/null || { echo "$prog: setsid not installed" >&2; exit 99; }
	MTLS_README_NO_TTY=1 exec setsid -w bash "$0" "$@"
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/mtls-readme.XXXXXX") || exit 99
SERVER_PID=
SSHD_PID=
cleanup() {
	[ -n "$SSHD_PID" ] && kill -TERM "$SSHD_PID" 2>/dev/null
	[ -n "${MTLS_AGENT_PID:-}" ] && kill -TERM "$MTLS_AGENT_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null
	sleep 0.3
	[ -n "${MTLS_AGENT_PID:-}" ] && kill -KILL "$MTLS_AGENT_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && { kill -KILL "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
fail() {
	echo "$prog: FAIL: $*" >&2
	exit 1
}

# --- the README commands -------------------------------------------------
readme=$top_srcdir/README.md
# The first ```sh block after the heading; lines ending in \ joined.
sed -n '/^## Using the agent by hand/,/^## /p' "$readme" |
	sed -n '/^```sh$/,/^```$/{/^```/d;p}' |
	awk '{ if (sub(/\\$/, "")) { acc = acc $0; next } print acc $0; acc = "" }' >"$T/commands"
[ -s "$T/commands" ] || fail "no command block under '## Using the agent by hand' in README.md"

# The installed tree, found as a user's shell would find a system install.
export PATH=$DESTDIR$bindir:$PATH
export LD_LIBRARY_PATH=$DESTDIR$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OPENSSL_MODULES=$DESTDIR$osslmodulesdir
export MTLS_P11_HELPER_BIN=$DESTDIR$libexecdir/mtls-agent-p11
[ -x "$MTLS_P11_HELPER_BIN" ] || fail "mtls-agent-p11 not installed in $DESTDIR$libexecdir"
[ -x "$DESTDIR$bindir/mtls-agent" ] && [ -x "$DESTDIR$bindir/mtls-agentctl" ] ||
	fail "mtls-agent or mtls-agentctl not installed in $DESTDIR$bindir"
[ -e "$OPENSSL_MODULES/mtls-agent.so" ] || fail "provider not installed in $OPENSSL_MODULES"
[ ! -e "$OPENSSL_MODULES/mtls-agent.la" ] || fail "libtool archive installed next to the provider"

mkdir -m 0700 "$T/fx" "$T/run" "$T/config" "$T/config/mtls-agent" "$T/work"
MKCERT=$MKCERT "$MTLS_FIXTURE_SETUP" "$T/fx" >"$T/setup.log" 2>&1 ||
	{ cat "$T/setup.log" >&2; exit 99; }
. "$T/fx/env.sh" # SOFTHSM2_CONF: SoftHSM2, registered with p11-kit, sees the fixture token
export XDG_RUNTIME_DIR=$T/run XDG_CONFIG_HOME=$T/config
unset MTLS_AGENT_SOCK MTLS_AGENT_PID SSH_ASKPASS
cat >"$XDG_CONFIG_HOME/mtls-agent/agent.conf" <<CONF
${INSTALLCHECK_MODULE:+module = $INSTALLCHECK_MODULE}
token = pkcs11:token=$MTLS_TEST_TOKEN
[identity mycard]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private
purposes = tls13, tls12
CONF
"$MKCERT" issue --ca-cert "$T/fx/ca.pem" --ca-key "$T/fx/ca.key" --pubkey "$T/fx/p256.pub.pem" \
	--subj "/O=mtls-agent tests/CN=alice" --eku clientAuth --out "$T/fx/alice.pem" ||
	exit 99
cat >"$T/askpass" <<ASK
#!/bin/sh
case \$1 in
PIN*) printf '%s\n' "$MTLS_TEST_PIN" ;;
*) echo 'lock passphrase' ;;
esac
ASK
chmod 0700 "$T/askpass"
export MTLS_AGENT_ASKPASS=$T/askpass
cp "$T/fx/ca.pem" "$T/work/ca.pem"
cp "$T/fx/p256.pem" "$T/work/me.pem"

# The README's service: mutual TLS, client certificates from ca.pem.
port=
for _ in $(seq 1 20); do
	port=$((20000 + RANDOM % 40000))
	openssl s_server -www -accept "127.0.0.1:$port" -cert "$T/fx/server.pem" \
		-key "$T/fx/server.key" -Verify 1 -verify_return_error -CAfile "$T/fx/ca.pem" \
		</dev/null >"$T/server.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 30); do
		grep -q '^ACCEPT' "$T/server.log" && break 2
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill "$SERVER_PID" 2>/dev/null
	wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
done
[ -n "$SERVER_PID" ] || { cat "$T/server.log" >&2; exit 99; }

cd "$T/work" || exit 99
n=0
while IFS= read -r line <&3; do
	n=$((n + 1))
	cmd=${line//service.example:8443/localhost:$port}
	echo "$prog: README command $n: $cmd"
	case $cmd in
	openssl\ s_client*)
		# Its stdin: an HTTP request; the status page shows the client
		# certificate the server verified.
		{ printf 'GET / HTTP/1.0\r\n\r\n'; sleep 3; } | eval "$cmd" >"$T/out" 2>&1
		;;
	*) eval "$cmd" >"$T/out" 2>&1 </dev/null ;; # in this shell: eval "$(mtls-agent)" sets variables
	esac
	rc=$?
	out=$(cat "$T/out")
	printf '%s\n' "$out" | sed 's/^/    | /'
	[ "$rc" -eq 0 ] || fail "README command $n exited $rc: $line"
	case $cmd in
	eval\ *) [ -n "${MTLS_AGENT_PID:-}" ] && [ -S "${MTLS_AGENT_SOCK:-}" ] ||
		fail "after '$line': no MTLS_AGENT_PID, or MTLS_AGENT_SOCK is not a socket" ;;
	*"agentctl list"*) case $out in *mycard*"state:"*) ;; *) fail "list shows no mycard identity" ;; esac
		case $out in *"token absent"*) fail "list: the fixture token is absent (default module)" ;; esac ;;
	*"agentctl login"*) [ "$out" = "logged in" ] || fail "login said: $out" ;;
	*"agentctl connect"*) case $out in *"-----BEGIN CERTIFICATE-----"*) ;;
		*) fail "the server did not report a client certificate" ;; esac ;;
	openssl\ s_client*) case $out in *"Client certificate"*"-----BEGIN CERTIFICATE-----"*) ;;
		*) fail "s_client: the server did not report the client certificate" ;; esac ;;
	*"agentctl lock"*) out=$(mtls-agentctl list 2>&1) && case $out in *mycard*)
		fail "the locked agent still lists identities" ;; esac ;;
	esac
done 3<"$T/commands"
[ "$n" -ge 5 ] || fail "only $n commands found in README.md"
echo "$prog: the $n README commands ran as written"
cd "$T" || exit 99

# --- the README's SSH commands ---------------------------------------------
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
if [ ! -x "$SSHD" ] || ! command -v ssh >/dev/null || ! command -v git >/dev/null; then
	[ "${CI:-}" = true ] && fail "sshd, ssh or git is not installed (openssh-server, git)"
	echo "$prog: sshd, ssh or git not installed: the SSH commands are skipped"
else
	kill -TERM "$MTLS_AGENT_PID"
	for _ in $(seq 1 50); do kill -0 "$MTLS_AGENT_PID" 2>/dev/null || break; sleep 0.1; done
	unset MTLS_AGENT_SOCK MTLS_AGENT_PID SSH_AUTH_SOCK
	cat >"$XDG_CONFIG_HOME/mtls-agent/agent.conf" <<CONF
${INSTALLCHECK_MODULE:+module = $INSTALLCHECK_MODULE}
token = pkcs11:token=$MTLS_TEST_TOKEN
[identity mycard]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private
purposes = tls13, tls12, ssh, ssh-sig
CONF
	S=$T/ssh
	mkdir -m 0700 "$S"
	ssh-keygen -q -t ed25519 -N '' -f "$S/hostkey" || exit 99
	: >"$S/authorized_keys"
	[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd
	sport=
	for _ in $(seq 1 20); do
		sport=$((20000 + RANDOM % 40000))
		printf '%s\n' "ListenAddress 127.0.0.1:$sport" "HostKey $S/hostkey" \
			"AuthorizedKeysFile $S/authorized_keys" "PidFile none" "StrictModes no" \
			"UsePAM no" "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
			"PermitRootLogin prohibit-password" "PrintMotd no" >"$S/sshd_config"
		"$SSHD" -D -e -f "$S/sshd_config" </dev/null >"$S/sshd.log" 2>&1 &
		SSHD_PID=$!
		for _ in $(seq 1 30); do
			grep -q 'Server listening' "$S/sshd.log" && break 2
			kill -0 "$SSHD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$SSHD_PID" 2>/dev/null
		wait "$SSHD_PID" 2>/dev/null
		SSHD_PID=
	done
	[ -n "$SSHD_PID" ] || { cat "$S/sshd.log" >&2; exit 99; }
	echo "[127.0.0.1]:$sport $(cut -d' ' -f1,2 "$S/hostkey.pub")" >"$S/known_hosts"
	printf '%s\n' "Host host" "  HostName 127.0.0.1" "  Port $sport" \
		"  UserKnownHostsFile $S/known_hosts" "  StrictHostKeyChecking yes" \
		"  BatchMode yes" >"$S/config"
	git init -q "$T/repo" && cd "$T/repo" || exit 99
	git config user.email me@example.com && git config user.name Me
	echo content >file && git add file
	sed -n '/^## SSH and git with the same card/,/^## /p' "$readme" |
		sed -n '/^```sh$/,/^```$/{/^```/d;p}' |
		awk '{ if (sub(/\\$/, "")) { acc = acc $0; next } print acc $0; acc = "" }' \
			>"$T/ssh-commands"
	[ -s "$T/ssh-commands" ] || fail "no command block under '## SSH and git with the same card'"
	n=0
	while IFS= read -r line <&3; do
		n=$((n + 1))
		cmd=${line//ssh user@host/ssh -F $S/config $(id -un)@host}
		echo "$prog: README SSH command $n: $cmd"
		eval "$cmd" >"$T/out" 2>&1 </dev/null
		rc=$?
		out=$(cat "$T/out")
		printf '%s\n' "$out" | sed 's/^/    | /'
		[ "$rc" -eq 0 ] || fail "README SSH command $n exited $rc: $line"
		case $cmd in
		eval\ *) [ -S "${SSH_AUTH_SOCK:-}" ] ||
			fail "after '$line': SSH_AUTH_SOCK is not a socket" ;;
		ssh-add\ -L*) case $out in "ecdsa-sha2-nistp256 "*) ;;
			*) fail "ssh-add -L shows no ECDSA key: $out" ;; esac
			printf '%s\n' "$out" >"$S/authorized_keys" ;;
		git\ *) echo "me@example.com namespaces=\"git\" $(ssh-add -L | head -1)" >"$S/allowed"
			out=$(git -c gpg.ssh.allowedSignersFile="$S/allowed" verify-commit HEAD 2>&1) ||
				fail "git verify-commit: $out"
			case $out in *"Good \"git\" signature"*) ;;
				*) fail "git verify-commit: $out" ;; esac ;;
		esac
	done 3<"$T/ssh-commands"
	[ "$n" -ge 5 ] || fail "only $n SSH commands found in README.md"
	grep -q "Accepted publickey for $(id -un) from 127.0.0.1" "$S/sshd.log" ||
		fail "sshd did not accept the login: $(tail -5 "$S/sshd.log")"
	kill "$SSHD_PID" 2>/dev/null
	wait "$SSHD_PID" 2>/dev/null
	SSHD_PID=
	echo "$prog: the $n README SSH commands ran as written"
	cd "$T" || exit 99
fi

# --- the PAM login snippet -----------------------------------------------
if [ "${WITH_PAM:-yes}" = no ]; then
	echo "$prog: built --without-pam: no PAM snippet to run"
	exit 0
fi
[ -n "${pamdir:-}" ] || fail "pamdir is not set"
module=$DESTDIR$pamdir/pam_mtls_agent.so
[ -e "$module" ] || fail "PAM module not installed as $module"
[ ! -e "$DESTDIR$pamdir/pam_mtls_agent.la" ] || fail "libtool archive installed next to the PAM module"
command -v pamtester >/dev/null || { echo "$prog: pamtester not installed: PAM snippet skipped"; exit 0; }
# A fresh agent for the login (README's left its token logged out and locked).
kill -TERM "$MTLS_AGENT_PID"
for _ in $(seq 1 50); do kill -0 "$MTLS_AGENT_PID" 2>/dev/null || break; sleep 0.1; done
# The login's identity: the token's P-256 key with a certificate for alice.
cat >"$XDG_CONFIG_HOME/mtls-agent/agent.conf" <<CONF
${INSTALLCHECK_MODULE:+module = $INSTALLCHECK_MODULE}
token = pkcs11:token=$MTLS_TEST_TOKEN
[identity alice]
key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private
certificate = $T/fx/alice.pem
purposes = pam
CONF
eval "$(mtls-agent)" >/dev/null || fail "mtls-agent did not start again"
top_builddir=$T # wrapper-env.sh wants a built module: it is given below
mkdir -p "$T/pam/.libs" && ln -s "$module" "$T/pam/.libs/pam_mtls_agent.so"
(
	cleanup() { :; }
	. "$top_srcdir/tests/pam/wrapper-env.sh"
	mkdir -m 0700 "$T/crl"
	snippet=$top_srcdir/etc/pam.d/mtls-agent-login.example
	grep -E '^(auth|account|password|session)[[:space:]]' "$snippet" |
		sed -e "s|pam_mtls_agent\.so|$module socket=$MTLS_AGENT_SOCK|" \
			-e "s|ca_file=/etc/mtls-agent/ca.pem|ca_file=$MTLS_TEST_DIR/ca.pem|" \
			-e "s|crl_dir=/etc/mtls-agent/crl|crl_dir=$T/crl|" >"$PAM_WRAPPER_SERVICE_DIR/mtls-login"
	grep -q "$module" "$PAM_WRAPPER_SERVICE_DIR/mtls-login" || fail "no pam_mtls_agent line in $snippet"
	echo "$prog: PAM service from etc/pam.d/mtls-agent-login.example:"
	sed 's/^/    | /' "$PAM_WRAPPER_SERVICE_DIR/mtls-login"
	out=$(printf '%s\n' "$MTLS_TEST_PIN" |
		LD_PRELOAD="$WRAPPER_PRELOAD" pamtester -v mtls-login alice authenticate acct_mgmt 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed 's/^/    | /'
	[ "$rc" -eq 0 ] || fail "pamtester mtls-login alice authenticate acct_mgmt failed"
	case $out in *"PIN for"*) ;; *) fail "the module did not ask the PIN" ;; esac
	mtls-agentctl logout >/dev/null || fail "mtls-agentctl logout failed"
	out=$(printf 'wrong\n' |
		LD_PRELOAD="$WRAPPER_PRELOAD" pamtester -v mtls-login alice authenticate 2>&1) &&
		fail "a wrong PIN let alice in: $out"
	exit 0
) || exit 1
echo "$prog: the PAM login snippet worked with the installed module"
