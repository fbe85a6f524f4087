/*
 * test_log.c - log lines cannot be forged: every byte that is not valid,
 * printable UTF-8 is written as \xNN, by log_escape() and by log_msg(),
 * the one function that writes the agent's log lines.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Escapes src (len bytes) and compares with want. */
static void
check(const char *src, size_t len, const char *want)
{
	char out[256];
	size_t n;

	n = log_escape(out, sizeof(out), src, len);
	assert_int_equal(n, strlen(want));
	assert_string_equal(out, want);
}

#define CHECK(lit, want) check((lit), sizeof(lit) - 1, (want))

static void
test_plain_kept(void **state)
{
	(void)state;
	CHECK("", "");
	CHECK("audit: sign ok: peer pid=1 exe=/usr/bin/curl",
	      "audit: sign ok: peer pid=1 exe=/usr/bin/curl");
	CHECK(" ~!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}",
	      " ~!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}");
}

static void
test_controls_escaped(void **state)
{
	(void)state;
	CHECK("x\naudit: sign ok", "x\\x0aaudit: sign ok");
	CHECK("a\rb", "a\\x0db");
	CHECK("\t", "\\x09");
	CHECK("\x1b[2J", "\\x1b[2J");
	CHECK("\x7f", "\\x7f");
	CHECK("\x01\x1f", "\\x01\\x1f");
	check("a\0b", 3, "a\\x00b");
}

static void
test_utf8_kept(void **state)
{
	(void)state;
	CHECK("caf\xc3\xa9", "caf\xc3\xa9");	       /* U+00E9 */
	CHECK("\xc2\xa0", "\xc2\xa0");		       /* U+00A0, first after C1 */
	CHECK("\xdf\xbf", "\xdf\xbf");		       /* U+07FF */
	CHECK("\xe0\xa0\x80", "\xe0\xa0\x80");	       /* U+0800 */
	CHECK("\xe2\x82\xac", "\xe2\x82\xac");	       /* U+20AC */
	CHECK("\xed\x9f\xbf", "\xed\x9f\xbf");	       /* U+D7FF */
	CHECK("\xee\x80\x80", "\xee\x80\x80");	       /* U+E000 */
	CHECK("\xef\xbf\xbd", "\xef\xbf\xbd");	       /* U+FFFD */
	CHECK("\xf0\x90\x80\x80", "\xf0\x90\x80\x80"); /* U+10000 */
	CHECK("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"); /* U+1F600 */
	CHECK("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
}

static void
test_c1_controls_escaped(void **state)
{
	(void)state;
	/* U+0080..U+009F: valid UTF-8, but U+009B is CSI to some terminals. */
	CHECK("\xc2\x80", "\\xc2\\x80");
	CHECK("\xc2\x9b"
	      "2J",
	      "\\xc2\\x9b2J");
	CHECK("\xc2\x9f", "\\xc2\\x9f");
}

static void
test_invalid_utf8_escaped(void **state)
{
	(void)state;
	/* stray continuation bytes and bytes that never start a character */
	CHECK("\x80", "\\x80");
	CHECK("\xbf", "\\xbf");
	CHECK("\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80");
	CHECK("\xfe\xff", "\\xfe\\xff");
	/* cut sequences: at the end, and followed by a non-continuation */
	CHECK("\xe2\x82", "\\xe2\\x82");
	CHECK("\xe2\x82"
	      "A",
	      "\\xe2\\x82A");
	CHECK("\xf0\x9f\x98", "\\xf0\\x9f\\x98");
	CHECK("\xc3"
	      "\n",
	      "\\xc3\\x0a");
	/* a lead byte swallowing a newline is not allowed to hide it */
	CHECK("\xe2\n\x82", "\\xe2\\x0a\\x82");
}

static void
test_overlong_escaped(void **state)
{
	(void)state;
	CHECK("\xc0\x8a", "\\xc0\\x8a"); /* '\n' in two bytes */
	CHECK("\xc0\xaf", "\\xc0\\xaf"); /* '/' */
	CHECK("\xc1\xbf", "\\xc1\\xbf");
	CHECK("\xe0\x80\x8a", "\\xe0\\x80\\x8a"); /* '\n' in three bytes */
	CHECK("\xe0\x9f\xbf", "\\xe0\\x9f\\xbf"); /* U+07FF in three */
	CHECK("\xf0\x80\x80\x8a", "\\xf0\\x80\\x80\\x8a");
	CHECK("\xf0\x8f\xbf\xbf", "\\xf0\\x8f\\xbf\\xbf"); /* U+FFFF in four */
}

static void
test_surrogates_and_range(void **state)
{
	(void)state;
	CHECK("\xed\xa0\x80", "\\xed\\xa0\\x80"); /* U+D800 */
	CHECK("\xed\xbf\xbf", "\\xed\\xbf\\xbf"); /* U+DFFF */
	/* CESU-8 pair for U+1F600 */
	CHECK("\xed\xa0\xbd\xed\xb8\x80", "\\xed\\xa0\\xbd\\xed\\xb8\\x80");
	CHECK("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"); /* U+110000 */
}

static void
test_output_bounded(void **state)
{
	char out[8];
	size_t n;

	(void)state;
	memset(out, 'Z', sizeof(out));
	n = log_escape(out, sizeof(out), "abcdefghij", 10);
	assert_int_equal(n, 7);
	assert_string_equal(out, "abcdefg");
	/* An escape that does not fit whole is left out, not cut. */
	n = log_escape(out, sizeof(out), "abcd\n", 5);
	assert_string_equal(out, "abcd");
	assert_int_equal(n, 4);
	n = log_escape(out, sizeof(out), "abc\n", 4);
	assert_string_equal(out, "abc\\x0a");
	assert_int_equal(n, 7);
	/* Nor a multi-byte character. */
	n = log_escape(out, sizeof(out), "abcdef\xc3\xa9", 8);
	assert_string_equal(out, "abcdef");
	assert_int_equal(n, 6);
	n = log_escape(out, 1, "abc", 3);
	assert_int_equal(n, 0);
	assert_string_equal(out, "");
}

/* log_msg() to stderr: what the agent writes in the foreground. */
static char *
logged(const char *arg)
{
	char path[] = "/tmp/test_log.XXXXXX";
	char *text;
	long len;
	FILE *fp;
	int fd, saved;

	assert_true((fd = mkstemp(path)) >= 0);
	assert_true((saved = dup(STDERR_FILENO)) >= 0);
	assert_true(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
	log_init("test", 0, LOG_LEVEL_INFO);
	log_msg(LOG_LEVEL_WARN, __func__, "audit: sign refused: identity=%s result=%s", arg,
		"no such identity");
	assert_true(dup2(saved, STDERR_FILENO) == STDERR_FILENO);
	close(saved);
	assert_non_null(fp = fdopen(fd, "r"));
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	assert_true((len = ftell(fp)) > 0);
	rewind(fp);
	assert_non_null(text = calloc(1, (size_t)len + 1));
	assert_int_equal(fread(text, 1, (size_t)len, fp), (size_t)len);
	fclose(fp);
	unlink(path);
	return text;
}

static void
test_log_msg_one_line(void **state)
{
	char *text;

	(void)state;
	text = logged("x\naudit: sign ok: peer pid=1 uid=0 exe=/bin/true identity=y\r\x1b[1A");
	assert_string_equal(text,
			    "test: warning: audit: sign refused: identity=x\\x0aaudit: sign ok: "
			    "peer pid=1 uid=0 exe=/bin/true identity=y\\x0d\\x1b[1A "
			    "result=no such identity\n");
	free(text);
	/* A long message is cut, and still ends its line. */
	{
		char big[3 * LOG_LINE_MAX];

		memset(big, '\n', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		text = logged(big);
		assert_non_null(strchr(text, '\n'));
		assert_true(strchr(text, '\n')[1] == '\0');
		assert_true(strlen(text) < 2 * LOG_LINE_MAX);
		free(text);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_kept),
		cmocka_unit_test(test_controls_escaped),
		cmocka_unit_test(test_utf8_kept),
		cmocka_unit_test(test_c1_controls_escaped),
		cmocka_unit_test(test_invalid_utf8_escaped),
		cmocka_unit_test(test_overlong_escaped),
		cmocka_unit_test(test_surrogates_and_range),
		cmocka_unit_test(test_output_bounded),
		cmocka_unit_test(test_log_msg_one_line),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
