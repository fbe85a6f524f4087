#!/usr/bin/env bash
# mtls-agentctl tells why it was refused, against the real agent on the
# SoftHSM2 fixture token (tests/interop/lib.sh): a refused peer
# (PEER_DENIED) and a full agent (BUSY) give the agent's reason, not
# "connection closed by peer"; "cannot connect" names the socket and the
# errno; a locked agent answers list, status and connect with "agent
# locked" (exit 6); before login, list says the private key shows after
# login; a wrong PIN is reported once, with the tries left only when the
# token counts them.  Every message is checked verbatim, every exit status.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_init
PIN=$MTLS_TEST_PIN
SOCK=$MTLS_AGENT_SOCK

# Runs a second agent on $1 (a directory) with config $2; sets SOCK2, PID2.
start_agent2() {
	mkdir -m 0700 "$1"
	it_bg "agent-${1##*/}" "$MTLS_AGENT_BIN" --foreground --config "$2" --socket "$1/agent.sock"
	PID2=$IT_PID
	SOCK2=$1/agent.sock
	for _ in $(seq 1 200); do
		grep -q '^MTLS_AGENT_SOCK=' "$IT_DIR/agent-${1##*/}.log" && return 0
		kill -0 "$PID2" 2>/dev/null || break
		sleep 0.05
	done
	cat "$IT_DIR/agent-${1##*/}.log"
	it_die "agent in $1 did not start"
}

# --- cannot connect ------------------------------------------------------------

it_refused "no agent at the socket: path and errno, exit 3" 3 \
	"^mtls-agentctl: list: cannot connect to the agent: $D/nosuch.sock: No such file or directory\$" \
	"$CTL" list --socket "$D/nosuch.sock"
: >"$D/notasocket"
it_refused "a file that is no socket: exit 3" 3 \
	"^mtls-agentctl: status: cannot connect to the agent: $D/notasocket: Connection refused\$" \
	"$CTL" status --socket "$D/notasocket"

# --- BUSY ----------------------------------------------------------------------

# max-connections = 1, held by an idle connection: every other client is
# refused at accept.  The agent writes its ERROR and closes at once, so
# the client's HELLO often meets a closed socket; the reason is still
# there to read.  Many runs, as that is a race.
sed 's/^log-level = debug$/log-level = debug\nmax-connections = 1/' "$IT_DIR/agent.conf" \
	>"$D/busy.conf"
chmod 0600 "$D/busy.conf"
start_agent2 "$D/busy" "$D/busy.conf"
exec 7> >(exec python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
open(sys.argv[2], "w").close()
sys.stdin.read()' "$SOCK2" "$D/holder.ready")
HOLDER=$!
IT_PIDS+=("$HOLDER")
# The holder must be connected before the runs (a loaded machine starts
# python slowly), and the agent must have counted it.
for _ in $(seq 1 200); do
	[ -e "$D/holder.ready" ] && break
	sleep 0.05
done
[ -e "$D/holder.ready" ] || it_die "the connection holder did not connect"
sleep 0.2
bad=0
for i in $(seq 1 30); do
	it_run "$CTL" status --socket "$SOCK2"
	if [ "$IT_STATUS" -ne 1 ] ||
		[ "$IT_ERR" != "mtls-agentctl: status: agent busy: too many connections: max-connections reached" ]; then
		bad=$((bad + 1))
		why="run $i: exit $IT_STATUS: $IT_ERR"
	fi
done
it_result "a full agent says it is busy (30 runs)" $((bad == 0)) "${why:-}"
exec 7>&-
it_stop "$HOLDER"
it_stop "$PID2"

# --- PEER_DENIED ---------------------------------------------------------------

# The agent serves only its own uid: another user gets PEER_DENIED with
# the reason.  Needs root, to run the control tool as nobody.
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
	echo "ok - # SKIP another user is told it is not allowed: needs root and setpriv"
elif ! "${NOBODY[@]}" test -x "$CTL"; then
	# A build tree under a 0700 directory (mktemp -d) is closed to nobody.
	echo "ok - # SKIP another user is told it is not allowed: nobody cannot run $CTL"
else
	start_agent2 "$D/peer" "$IT_DIR/agent.conf"
	chmod 0711 "$D" "$D/peer"
	chmod 0666 "$SOCK2"
	bad=0
	for i in $(seq 1 30); do
		it_run "${NOBODY[@]}" "$CTL" list --socket "$SOCK2"
		if [ "$IT_STATUS" -ne 1 ] || [ "$IT_ERR" != "mtls-agentctl: list: peer not allowed to use this agent: this agent serves only its own user" ]; then
			bad=$((bad + 1))
			why="run $i: exit $IT_STATUS: $IT_ERR"
		fi
	done
	it_result "another user is told it is not allowed (30 runs)" $((bad == 0)) "${why:-}"
	chmod 0700 "$D"
	it_stop "$PID2"
fi

# --- a locked agent ------------------------------------------------------------

it_ok "lock" sh -c "printf '%s\n' 'a passphrase' | '$CTL' lock --stdin"
it_refused "list while locked exits 6" 6 \
	'^mtls-agentctl: list: agent locked: the agent is locked$' "$CTL" list
it_refused "list --json while locked exits 6" 6 \
	'^mtls-agentctl: list: agent locked: the agent is locked$' "$CTL" list --json
it_check "list while locked prints nothing" [ -z "$IT_OUT" ]
it_refused "status while locked exits 6" 6 \
	'^mtls-agentctl: status: agent locked: the agent is locked$' "$CTL" status
it_refused "connect while locked exits 6" 6 \
	'^mtls-agentctl: connect: agent locked: the agent is locked$' \
	"$CTL" connect --identity p256 https://127.0.0.1:1/
it_ok "unlock" sh -c "printf '%s\n' 'a passphrase' | '$CTL' unlock --stdin"
it_ok "status after unlocking" "$CTL" status

# --- before login --------------------------------------------------------------

# Discovery mode (no [identity] sections): identities come from the
# certificates, the private keys show only once the token is logged in.
grep -v '^\[identity\|^key =\|^certificate =\|^purposes =' "$IT_DIR/agent.conf" |
	sed "s|^module = .*|&\ntoken = pkcs11:token=$MTLS_TEST_TOKEN|" >"$D/discover.conf"
chmod 0600 "$D/discover.conf"
start_agent2 "$D/discover" "$D/discover.conf"
it_ok "list before login" "$CTL" list --socket "$SOCK2"
it_match "before login: the private key shows after login" \
	'^  state:        token present, login required, private key visible after login$' "$IT_OUT"
it_check "before login: never 'key not found'" sh -c "! printf '%s' \"\$1\" | grep -q 'key not found'" _ "$IT_OUT"

# --- wrong PIN -----------------------------------------------------------------

# SoftHSM2 reports no count, only "count low" after a wrong PIN: said
# once, no "-1", no "PIN incorrect" twice.
it_refused "wrong PIN, count unknown" 1 \
	"^mtls-agentctl: login: PIN incorrect: token $MTLS_TEST_TOKEN: few tries left\$" \
	sh -c "printf '999999\n' | '$CTL' login --socket '$SOCK2' --pin-stdin"
it_ok "the right PIN" sh -c "printf '%s\n' '$PIN' | '$CTL' login --socket '$SOCK2' --pin-stdin"
it_ok "list after login" "$CTL" list --socket "$SOCK2"
it_match "after login: the key is there" '^  state:        token present, logged in$' "$IT_OUT"
it_stop "$PID2"

# The card-like shim counts: 3 tries, then final try, then locked.
if [ -r "${MTLS_LOCKOUT_MODULE:-}" ]; then
	sed "s|^module = .*|module = $MTLS_LOCKOUT_MODULE\nmodule-dirs = /usr/lib:/usr/lib64:/lib:/lib64:${MTLS_LOCKOUT_MODULE%/*}|" \
		"$IT_DIR/agent.conf" >"$D/shim.conf"
	chmod 0600 "$D/shim.conf"
	MTLS_LOCKOUT_REAL=$MTLS_TEST_MODULE start_agent2 "$D/shim" "$D/shim.conf"
	it_refused "wrong PIN 1 of 3: count low" 1 \
		"^mtls-agentctl: login: PIN incorrect: token $MTLS_TEST_TOKEN: few tries left\$" \
		sh -c "printf '999999\n' | '$CTL' login --socket '$SOCK2' --pin-stdin"
	it_refused "wrong PIN 2 of 3: one try left, said once" 1 \
		"^mtls-agentctl: login: PIN incorrect: token $MTLS_TEST_TOKEN: 1 try left\$" \
		sh -c "printf '999999\n' | '$CTL' login --socket '$SOCK2' --pin-stdin"
	it_refused "wrong PIN 3 of 3: locked, exit 5" 5 \
		"^mtls-agentctl: login: PIN locked: token $MTLS_TEST_TOKEN: PIN incorrect; it is now locked\$" \
		sh -c "printf '999999\n' | '$CTL' login --socket '$SOCK2' --pin-stdin"
	it_stop "$PID2"
else
	echo "ok - # SKIP the card-like shim: MTLS_LOCKOUT_MODULE not built"
fi

it_done
