/*
 * Stand-in for <libpamtest.h> when ./configure did not find libpamtest:
 * the PAM module builds without it, only `make check` needs it.
 */
#error "libpamtest was not found by ./configure: make check needs it (Debian: apt-get install libpamtest0-dev libpam-wrapper), then run ./configure again"
