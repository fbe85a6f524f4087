#!/bin/sh
# run-libfuzzer.sh FUZZDIR SECONDS TARGET
#
# Runs one libFuzzer binary TARGET.libfuzzer (built by `make fuzz-build`)
# for SECONDS, starting from the committed seeds FUZZDIR/corpus/NAME/ and
# the inputs earlier runs found (tests/fuzz/corpus-new/NAME/, in the build
# tree; the committed corpus is never written).  A crash, leak, sanitizer
# report, timeout or failed invariant fails the run; the input is kept as
# tests/fuzz/crashes/NAME-crash-* and the log as TARGET.libfuzzer.log.
set -u
fuzzdir=$1
seconds=$2
target=$3
name=$(basename "$target")
builddir=$(dirname "$target")

case $seconds in
'' | *[!0-9]*) echo "$0: FUZZ_SECONDS must be a number of seconds" >&2; exit 2 ;;
esac
mkdir -p "$builddir/corpus-new/$name" "$builddir/crashes" || exit 2
# A target's scratch files (fuzz_usermap's) go here: libFuzzer may leave
# with _exit(), past the target's own clean-up.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX") || exit 2
trap 'rm -rf "$scratch"' EXIT
dict=
[ -f "$fuzzdir/$name.dict" ] && dict="-dict=$fuzzdir/$name.dict"
log=$target.libfuzzer.log

echo "  FUZZ     $name (${seconds}s)"
# -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or an
# allocation a hostile peer could force; -max_len: well past every seed.
# $dict is empty or one word.
# shellcheck disable=SC2086
TMPDIR=$scratch \
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
"$target.libfuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-max_len=16384 -print_final_stats=1 $dict \
	-artifact_prefix="$builddir/crashes/$name-" \
	"$builddir/corpus-new/$name" "$fuzzdir/corpus/$name" >"$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
	echo "FAIL: $name (exit $rc); last lines of $log:" >&2
	tail -n 40 "$log" >&2
	exit 1
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
echo "  PASS     $name: ${runs:-?} runs in ${seconds}s, no crash"
