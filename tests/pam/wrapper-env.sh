# wrapper-env.sh - sourced by test_pam.sh and test_pamtester.sh.
#
# Makes a temp directory $T (removed on exit) with:
#   pam.d/<service>   from tests/pam/pam.d/*.in, @MODULE@ = the absolute path
#                     of the built pam_mtls_agent.so, @CONF@ = $T/pam.conf
#   passwd, group     for nss_wrapper: alice (this process's uid and gid,
#                     home $T/home/alice), bob (uid 4243), root, nobody
# and exports what pam_wrapper and nss_wrapper need, so PAM never reads
# /etc/pam.d and no real account is touched.  Needs libpam-wrapper and
# libnss-wrapper (Debian package names).

wrapper_lib() {
	# $1: pkg-config name; prints the library path.
	local lib
	lib=$(pkg-config --libs "$1" 2>/dev/null | tr ' ' '\n' | grep '\.so' | head -n1)
	if [ -z "$lib" ]; then
		for d in /usr/lib/$(gcc -print-multiarch 2>/dev/null) /usr/lib64 /usr/lib; do
			if [ -e "$d/lib$1.so" ]; then lib=$d/lib$1.so; break; fi
			if [ -e "$d/lib$1.so.0" ]; then lib=$d/lib$1.so.0; break; fi
		done
	fi
	[ -n "$lib" ] && [ -e "$lib" ] || { echo "$prog: lib$1.so not found (apt-get install lib${1%_wrapper}-wrapper)" >&2; exit 99; }
	printf '%s\n' "$lib"
}

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
MODULE=$(cd "$top_builddir/pam/.libs" 2>/dev/null && pwd)/pam_mtls_agent.so
[ -e "$MODULE" ] || { echo "$prog: $MODULE not built (make pam/pam_mtls_agent.la)" >&2; exit 99; }
PAM_WRAPPER_LIB=$(wrapper_lib pam_wrapper) || exit 99
NSS_WRAPPER_LIB=$(wrapper_lib nss_wrapper) || exit 99

T=$(mktemp -d "${TMPDIR:-/tmp}/mtls-pam-test.XXXXXX")
cleanup_dirs() { rm -rf "$T"; }
trap 'cleanup; cleanup_dirs' EXIT
trap 'exit 1' INT TERM HUP

mkdir -m 0700 "$T/pam.d"
mkdir -m 0755 "$T/home" "$T/home/alice" "$T/home/bob"
for f in "$top_srcdir"/tests/pam/pam.d/*.in; do
	sed -e "s|@MODULE@|$MODULE|g" -e "s|@CONF@|$T/pam.conf|g" "$f" \
		>"$T/pam.d/$(basename "$f" .in)"
done
uid=$(id -u)
gid=$(id -g)
{
	echo "root:x:0:0:root:/root:/bin/sh"
	echo "alice:x:$uid:$gid:Alice:$T/home/alice:/bin/sh"
	echo "bob:x:4243:4243:Bob:$T/home/bob:/bin/sh"
	echo "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"
} >"$T/passwd"
{
	echo "root:x:0:"
	[ "$gid" != 0 ] && echo "alice:x:$gid:"
	echo "bob:x:4243:"
	echo "nogroup:x:65534:"
} >"$T/group"

export MTLS_PAM_TEST_DIR=$T MTLS_PAM_MODULE=$MODULE
export PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$T/pam.d
export NSS_WRAPPER_PASSWD=$T/passwd NSS_WRAPPER_GROUP=$T/group
WRAPPER_PRELOAD="$PAM_WRAPPER_LIB $NSS_WRAPPER_LIB"
