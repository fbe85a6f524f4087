#!/usr/bin/env bash
# mtls-agentctl lock, unlock, change-pin and unblock-pin against the real
# agent on the SoftHSM2 fixture token (PIN 123456, SO PIN 12345678),
# started through tests/interop/lib.sh.  Checks the exit statuses scripts
# rely on: 6 for a locked agent (also for a wrong passphrase and during the
# back-off), 1 for a wrong PIN or PUK, 2 for usage errors.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_init
PIN=$MTLS_TEST_PIN
SO_PIN=${MTLS_TEST_SO_PIN:-12345678}
PASS='correct horse battery'

# feed INPUT CMD...: runs CMD with INPUT (printf %b) on standard input.
feed() {
	local input=$1
	shift
	printf '%b' "$input" | "$@"
}

# A TLS 1.3 client CertificateVerify content (RFC 8446 4.4.3) around a
# dummy SHA-256 transcript hash.
CV=$D/cv.bin
{
	printf '%64s' ''
	printf 'TLS 1.3, client CertificateVerify\0'
	head -c 32 /dev/zero | tr '\0' '\253'
} >"$CV"
SIGN=("$CTL" sign --identity p256 --scheme ecdsa_secp256r1_sha256
	--purpose tls13-client-certificate-verify --in "$CV" --hex)

# unlock_try PASSPHRASE: one unlock that is not refused for the back-off of
# an earlier failure (retried while the agent says "try again").
unlock_try() {
	for _ in $(seq 1 100); do
		it_run feed "$1\n" "$CTL" unlock --stdin
		case $IT_ERR in
		*"try again in"*) sleep 0.1 ;;
		*) return 0 ;;
		esac
	done
}

# --- lock / unlock -------------------------------------------------------------

it_ok "sign before locking" "${SIGN[@]}"
it_ok "status before locking" "$CTL" status
it_match "status counts the identities" '^identities: +[1-9]' "$IT_OUT"

it_refused "unlock when not locked" 1 'unlock: invalid argument: the agent is not locked' \
	feed "$PASS\n" "$CTL" unlock --stdin
it_refused "lock with an empty passphrase" 1 'lock: empty passphrase' \
	feed '\n' "$CTL" lock --stdin
it_refused "lock with too long a passphrase" 1 'lock: passphrase longer than 256 bytes' \
	feed "$(printf 'x%.0s' $(seq 1 257))\n" "$CTL" lock --stdin
it_refused "lock --stdin --pin-file is a usage error" 2 "lock: invalid option" \
	"$CTL" lock --stdin --pin-file /dev/null
it_refused "lock takes no argument" 2 "lock: unexpected argument 'x'" "$CTL" lock x

it_ok "lock" feed "$PASS\n" "$CTL" lock --stdin
it_match "lock says so" '^agent locked$' "$IT_OUT"

it_refused "list while locked exits 6" 6 'list: agent locked: the agent is locked' "$CTL" list
it_refused "status while locked exits 6" 6 'status: agent locked: the agent is locked' "$CTL" status
it_refused "sign while locked exits 6" 6 'sign: agent locked: the agent is locked' "${SIGN[@]}"
it_refused "login while locked exits 6" 6 'login: agent locked' \
	feed "$PIN\n" "$CTL" login --pin-stdin
it_refused "change-pin while locked exits 6" 6 'change-pin: agent locked' \
	feed "$PIN\n$PIN\n" "$CTL" change-pin --pin-stdin
it_refused "unblock-pin while locked exits 6" 6 'unblock-pin: agent locked' \
	feed "$SO_PIN\n$PIN\n" "$CTL" unblock-pin --pin-stdin
it_refused "lock while locked exits 6" 6 'lock: agent locked: already locked' \
	feed "other passphrase\n" "$CTL" lock --stdin

# Wrong passphrases: each one answered "wrong passphrase" once its
# back-off is over (100, 200, 400, 800 ms)...
for i in 1 2 3 4; do
	unlock_try "wrong passphrase $i"
	if [ "$IT_STATUS" -eq 6 ] && printf '%s\n' "$IT_ERR" |
		grep -q '^mtls-agentctl: unlock: agent locked: wrong passphrase$'; then
		it_result "wrong passphrase $i exits 6" 1
	else
		it_result "wrong passphrase $i exits 6" 0 "exit status $IT_STATUS"
	fi
done
# ... and the right one is refused too while the back-off lasts.
it_refused "right passphrase during the back-off exits 6" 6 \
	'unlock: agent locked: too many failed unlocks: try again in [0-9]+ ms' \
	feed "$PASS\n" "$CTL" unlock --stdin
it_refused "still locked after the refused unlock" 6 'sign: agent locked' "${SIGN[@]}"

unlock_try "$PASS"
if [ "$IT_STATUS" -eq 0 ] && [ "$IT_OUT" = "agent unlocked" ]; then
	it_result "unlock with the right passphrase" 1
else
	it_result "unlock with the right passphrase" 0 "exit status $IT_STATUS"
fi
it_ok "list after unlocking" "$CTL" list
it_match "list after unlocking shows the identities" '^identity: p256$' "$IT_OUT"
it_ok "sign after unlocking (the token stayed logged in)" "${SIGN[@]}"
it_refused "unlock again: not locked" 1 'the agent is not locked' \
	feed "$PASS\n" "$CTL" unlock --stdin

# Lock again with another passphrase: the old one no longer unlocks.
it_ok "lock again" feed "second passphrase\n" "$CTL" lock --stdin
it_refused "the first passphrase no longer unlocks" 6 'wrong passphrase' \
	feed "$PASS\n" "$CTL" unlock --stdin
unlock_try "second passphrase"
it_check "unlock with the second passphrase" [ "$IT_STATUS" -eq 0 ]

# --- change-pin ----------------------------------------------------------------

it_refused "change-pin --pin-stdin --pin-file is a usage error" 2 \
	'change-pin: --pin-stdin and --pin-file exclude each other' \
	"$CTL" change-pin --pin-stdin --pin-file /dev/null
it_refused "change-pin takes one identity" 2 "change-pin: unexpected argument 'b'" \
	"$CTL" change-pin a b
it_refused "change-pin with a wrong old PIN exits 1" 1 \
	'change-pin: PIN incorrect' feed "999999\n654321\n" "$CTL" change-pin --pin-stdin
it_refused "change-pin without a new PIN" 1 'change-pin: PIN empty, too long or malformed' \
	feed "$PIN\n" "$CTL" change-pin --pin-stdin
it_refused "change-pin for an unknown identity" 1 'change-pin: no such identity' \
	feed "$PIN\n654321\n" "$CTL" change-pin nosuch --pin-stdin
it_refused "change-pin with an unreadable PIN file" 1 \
	"change-pin: cannot open $D/nosuch.pin" "$CTL" change-pin --pin-file "$D/nosuch.pin"

it_ok "change-pin" feed "$PIN\n654321\n" "$CTL" change-pin --pin-stdin
it_match "change-pin says so" '^PIN changed$' "$IT_OUT"
it_ok "logout" "$CTL" logout
it_refused "the old PIN no longer logs in" 1 'login: PIN incorrect' \
	feed "$PIN\n" "$CTL" login --pin-stdin
it_ok "the new PIN logs in" feed "654321\n" "$CTL" login --pin-stdin
it_ok "sign with the new PIN" "${SIGN[@]}"

# Back to the fixture's PIN, from a file, naming the identity.
printf '654321\n%s\n' "$PIN" >"$D/change.pins"
it_ok "change-pin back from a file" "$CTL" change-pin p256 --pin-file "$D/change.pins"
it_ok "logout" "$CTL" logout
it_ok "the fixture PIN logs in again" feed "$PIN\n" "$CTL" login --pin-stdin

# --- unblock-pin ---------------------------------------------------------------

it_ok "change-pin to a PIN nobody will remember" feed "$PIN\n111111\n" "$CTL" change-pin --pin-stdin
it_ok "logout" "$CTL" logout
it_refused "unblock-pin with a wrong PUK exits 1" 1 'unblock-pin: PIN incorrect' \
	feed "87654321\n$PIN\n" "$CTL" unblock-pin --pin-stdin
it_refused "the user PIN did not change" 1 'login: PIN incorrect' \
	feed "$PIN\n" "$CTL" login --pin-stdin
it_ok "unblock-pin with the SO PIN" feed "$SO_PIN\n$PIN\n" "$CTL" unblock-pin p256 --pin-stdin
it_match "unblock-pin says so" '^PIN unblocked$' "$IT_OUT"
it_ok "sign after unblocking (logged in with the new PIN)" "${SIGN[@]}"
it_ok "logout" "$CTL" logout
it_ok "the PIN set by unblock-pin logs in" feed "$PIN\n" "$CTL" login --pin-stdin
it_refused "the forgotten PIN is gone" 1 'PIN incorrect' \
	feed "111111\n$PIN\n" "$CTL" change-pin --pin-stdin

# Without a terminal (a new session has none) and no askpass program, the
# default of prompting on /dev/tty fails cleanly, saying how to give it.
it_refused "change-pin without a terminal" 1 'change-pin: cannot read the PIN: no terminal to ask on: give it with --pin-stdin or --pin-file FILE' \
	env -u MTLS_AGENT_ASKPASS -u SSH_ASKPASS setsid -w "$CTL" change-pin
it_refused "lock without a terminal" 1 'lock: cannot read the passphrase: no terminal to ask on: give it on standard input with --stdin' \
	env -u MTLS_AGENT_ASKPASS -u SSH_ASKPASS setsid -w "$CTL" lock

it_done
