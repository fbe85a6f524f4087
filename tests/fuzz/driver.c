/*
 * driver.c - runs a fuzz target without libFuzzer.
 *
 *   fuzz_X              every file of the seed corpus
 *                       $top_srcdir/tests/fuzz/corpus/fuzz_X/
 *   fuzz_X PATH...      each file, or each file of each directory
 *   fuzz_X -            standard input
 *
 * This is how `make check` (and `make memcheck`, under valgrind) replays
 * the committed corpora with the ordinary compiler, and how a crash found
 * by libFuzzer is replayed in a debugger.  Exit status: 0, or 1 if an
 * input could not be read (a failed invariant aborts).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the target (its corpus directory)"
#endif
#ifndef FUZZ_SRCDIR
#define FUZZ_SRCDIR "."
#endif

/* Inputs bigger than this are not seeds; libFuzzer's default is 4096. */
#define DRIVER_INPUT_MAX (4U * 1024 * 1024)

static int
run_stream(FILE *f, const char *name)
{
	unsigned char *buf = NULL, *nb;
	size_t len = 0, cap = 0, n;
	int r = 1;

	for (;;) {
		if (len == cap) {
			if (cap >= DRIVER_INPUT_MAX) {
				fprintf(stderr, "%s: larger than %u bytes\n", name,
					DRIVER_INPUT_MAX);
				goto out;
			}
			cap = cap == 0 ? 4096 : cap * 2;
			if ((nb = realloc(buf, cap)) == NULL) {
				fprintf(stderr, "%s: out of memory\n", name);
				goto out;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "%s: read error\n", name);
		goto out;
	}
	/* The exact size, so that an overread is an overread for ASan and
	 * valgrind too (malloc(0) may be NULL: give it one byte). */
	if ((nb = malloc(len > 0 ? len : 1)) == NULL)
		goto out;
	if (len > 0)
		memcpy(nb, buf, len);
	LLVMFuzzerTestOneInput(nb, len);
	free(nb);
	r = 0;
out:
	free(buf);
	return r;
}

static int
run_file(const char *path)
{
	FILE *f;
	int r;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	r = run_stream(f, path);
	fclose(f);
	return r;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir, in name order; *count += how many. */
static int
run_dir(const char *dir, size_t *count)
{
	struct dirent *de;
	struct stat st;
	char **names = NULL, **nn, path[4096];
	size_t n = 0, i;
	DIR *d;
	int r = 0;

	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if ((nn = realloc(names, (n + 1) * sizeof(*names))) == NULL ||
		    (nn[n] = strdup(de->d_name)) == NULL) {
			if (nn != NULL)
				names = nn;
			r = 1;
			break;
		}
		names = nn;
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n && r == 0; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		r = run_file(path);
		(*count)++;
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

static int
run_path(const char *path, size_t *count)
{
	struct stat st;

	if (strcmp(path, "-") == 0) {
		(*count)++;
		return run_stream(stdin, "(stdin)");
	}
	if (stat(path, &st) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	if (S_ISDIR(st.st_mode))
		return run_dir(path, count);
	(*count)++;
	return run_file(path);
}

int
main(int argc, char **argv)
{
	const char *top = getenv("top_srcdir");
	char corpus[4096];
	size_t count = 0;
	int i, r = 0;

	if (argc < 2) {
		/* `make check` exports top_srcdir; by hand, the build's. */
		snprintf(corpus, sizeof(corpus), "%s/tests/fuzz/corpus/%s",
			 top != NULL && top[0] != '\0' ? top : FUZZ_SRCDIR, FUZZ_TARGET);
		r = run_path(corpus, &count);
		if (r == 0 && count == 0) {
			fprintf(stderr, "%s: no seed inputs in %s\n", FUZZ_TARGET, corpus);
			r = 1;
		}
	}
	for (i = 1; i < argc && r == 0; i++)
		r = run_path(argv[i], &count);
	if (r == 0)
		printf("%s: %zu inputs ok\n", FUZZ_TARGET, count);
	return r;
}
