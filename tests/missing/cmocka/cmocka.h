/*
 * Stand-in for <cmocka.h> when ./configure did not find cmocka: the
 * daemon, library and modules build without it, only `make check` needs it.
 */
#error "cmocka was not found by ./configure: make check needs it (Debian: apt-get install libcmocka-dev), then run ./configure again"
