/*
 * test_safefile.c - unit tests of the trusted-file reader (src/common/safefile.c).
 *
 * Real files in a mkdtemp directory: symbolic links, a FIFO, a directory,
 * files of another owner (chown when run as root, else a rule naming
 * another uid), group- and other-writable modes, sizes around the cap.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mtls-agent.h"
#include "safefile.h"

#define CAP 64

struct fx {
	char dir[64];
	char path[128];
	int dfd;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "%s/safefile.XXXXXX",
		 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(fx->dir) == NULL || (fx->dfd = open(fx->dir, O_RDONLY | O_DIRECTORY)) < 0) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;
	const char *names[] = { "f", "link", "fifo", "d", "big", "empty", "exact" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		(void)unlinkat(fx->dfd, names[i], strcmp(names[i], "d") == 0 ? AT_REMOVEDIR : 0);
	close(fx->dfd);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Writes len bytes of 'x' to dir/name with mode. */
static void
make_file(struct fx *fx, const char *name, size_t len, mode_t mode)
{
	char buf[256];
	int fd;

	assert_true(len <= sizeof(buf));
	memset(buf, 'x', len);
	fd = openat(fx->dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static struct safefile_rules
rules_for_me(unsigned flags)
{
	struct safefile_rules r = {
		.owner = geteuid(), .forbidden = S_IWGRP | S_IWOTH, .max = CAP, .flags = flags
	};

	return r;
}

static void
test_reads_whole_file(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	make_file(fx, "f", 10, 0644);
	assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), 0);
	assert_int_equal(f.fault, SAFEFILE_OK);
	assert_int_equal(f.len, 10);
	assert_memory_equal(f.data, "xxxxxxxxxx", 10);
	assert_int_equal(f.data[10], '\0');
	assert_int_equal(f.uid, geteuid());
	assert_int_equal(f.mode, 0644);
	safefile_free(&f);
	assert_null(f.data);
	safefile_free(&f); /* twice is harmless */
	safefile_free(NULL);
}

static void
test_symlink_refused(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	make_file(fx, "f", 10, 0644);
	assert_int_equal(symlinkat("f", fx->dfd, "link"), 0);
	assert_int_equal(safefile_read(fx->dfd, "link", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_SYMLINK);
	assert_null(f.data);
	safefile_free(&f);
	/* Followed only when the caller asks, and then checked as the target. */
	r.flags = SAFEFILE_FOLLOW;
	assert_int_equal(safefile_read(fx->dfd, "link", &r, &f), 0);
	assert_int_equal(f.len, 10);
	safefile_free(&f);
	/* A link to a directory is refused as one, even when followed. */
	assert_int_equal(unlinkat(fx->dfd, "link", 0), 0);
	assert_int_equal(mkdirat(fx->dfd, "d", 0755), 0);
	assert_int_equal(symlinkat("d", fx->dfd, "link"), 0);
	assert_int_equal(safefile_read(fx->dfd, "link", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_NOT_REGULAR);
	safefile_free(&f);
}

static void
test_fifo_and_dir_refused(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	/* O_NONBLOCK: a FIFO with no writer must not hang the reader. */
	assert_int_equal(mkfifoat(fx->dfd, "fifo", 0644), 0);
	assert_int_equal(safefile_read(fx->dfd, "fifo", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_NOT_REGULAR);
	safefile_free(&f);
	assert_int_equal(mkdirat(fx->dfd, "d", 0755), 0);
	assert_int_equal(safefile_read(fx->dfd, "d", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_NOT_REGULAR);
	safefile_free(&f);
}

static void
test_missing(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	assert_int_equal(safefile_read(fx->dfd, "nothing", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_MISSING);
	assert_int_equal(f.err, ENOENT);
	safefile_free(&f);
}

static void
test_other_owner_refused(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	make_file(fx, "f", 10, 0644);
	if (geteuid() == 0) {
		/* Owned by uid 4242: refused for a reader trusting uid 4243. */
		assert_int_equal(fchownat(fx->dfd, "f", 4242, 4242, 0), 0);
		r.owner = 4243;
		assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), MTLS_ERR_CONFIG);
		assert_int_equal(f.fault, SAFEFILE_OWNER);
		assert_int_equal(f.uid, 4242);
		safefile_free(&f);
		/* Root-owned: accepted, unless only the owner is trusted. */
		assert_int_equal(fchownat(fx->dfd, "f", 0, 0, 0), 0);
		assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), 0);
		safefile_free(&f);
		r.flags = SAFEFILE_OWNER_ONLY;
		assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), MTLS_ERR_CONFIG);
		assert_int_equal(f.fault, SAFEFILE_OWNER);
		safefile_free(&f);
	} else {
		/* Ours, not root's: refused when another uid is the trusted one. */
		r.owner = geteuid() + 1;
		assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), MTLS_ERR_CONFIG);
		assert_int_equal(f.fault, SAFEFILE_OWNER);
		assert_int_equal(f.uid, geteuid());
		safefile_free(&f);
	}
}

static void
test_writable_refused(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;
	const mode_t bad[] = { 0664, 0646, 0666, 0620 };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_file(fx, "f", 10, bad[i]);
		assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), MTLS_ERR_CONFIG);
		assert_int_equal(f.fault, SAFEFILE_MODE);
		assert_int_equal(f.mode, bad[i]);
		assert_null(f.data);
		safefile_free(&f);
	}
	/* Readable by others is the caller's choice: a PIN file forbids it. */
	make_file(fx, "f", 10, 0644);
	r.forbidden = S_IRWXG | S_IRWXO;
	assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_MODE);
	safefile_free(&f);
	make_file(fx, "f", 10, 0600);
	assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), 0);
	safefile_free(&f);
}

static void
test_size_cap(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	make_file(fx, "big", CAP + 1, 0600);
	assert_int_equal(safefile_read(fx->dfd, "big", &r, &f), MTLS_ERR_CONFIG);
	assert_int_equal(f.fault, SAFEFILE_TOO_BIG);
	assert_null(f.data);
	safefile_free(&f);

	make_file(fx, "exact", CAP, 0600);
	assert_int_equal(safefile_read(fx->dfd, "exact", &r, &f), 0);
	assert_int_equal(f.len, CAP);
	assert_int_equal(f.data[CAP], '\0');
	safefile_free(&f);

	make_file(fx, "empty", 0, 0600);
	assert_int_equal(safefile_read(fx->dfd, "empty", &r, &f), 0);
	assert_int_equal(f.len, 0);
	assert_non_null(f.data);
	assert_int_equal(f.data[0], '\0');
	safefile_free(&f);
}

static void
test_secret_and_absolute_path(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(SAFEFILE_SECRET | SAFEFILE_OWNER_ONLY);
	struct safefile f;

	r.forbidden = S_IRWXG | S_IRWXO;
	make_file(fx, "f", 6, 0600);
	snprintf(fx->path, sizeof(fx->path), "%s/f", fx->dir);
	assert_int_equal(safefile_read(AT_FDCWD, fx->path, &r, &f), 0);
	assert_true(f.secret);
	assert_int_equal(f.len, 6);
	assert_memory_equal(f.data, "xxxxxx", 6);
	safefile_free(&f);
	assert_null(f.data);
}

static void
test_bad_arguments(void **state)
{
	struct fx *fx = *state;
	struct safefile_rules r = rules_for_me(0);
	struct safefile f;

	assert_int_equal(safefile_read(fx->dfd, "f", &r, NULL), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(safefile_read(fx->dfd, NULL, &r, &f), MTLS_ERR_INVALID_ARGUMENT);
	assert_null(f.data);
	assert_int_equal(safefile_read(fx->dfd, "f", NULL, &f), MTLS_ERR_INVALID_ARGUMENT);
	r.max = SIZE_MAX;
	assert_int_equal(safefile_read(fx->dfd, "f", &r, &f), MTLS_ERR_INVALID_ARGUMENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reads_whole_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fifo_and_dir_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writable_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret_and_absolute_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
