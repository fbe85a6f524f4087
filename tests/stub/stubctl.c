/*
 * stubctl.c - the stub helper's files, for it and its tests (stubctl.h).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "stubctl.h"

/* Hex of a SIGN's data: a DigestInfo of SHA-512 at most (83 bytes). */
#define LAST_HEX_MAX 1024

unsigned long
stub_sign_count(const char *dir, char *last, size_t last_len)
{
	char path[4096], hex[LAST_HEX_MAX + 1] = "";
	unsigned long n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/sign-count", dir);
	if ((f = fopen(path, "r")) != NULL) {
		if (fscanf(f, "%lu %1024s", &n, hex) < 1)
			n = 0;
		fclose(f);
	}
	if (last != NULL && last_len > 0)
		snprintf(last, last_len, "%s", hex);
	return n;
}

int
stub_set_mode(const char *dir, const char *mode)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/sign-mode", dir);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	if (fputs(mode, f) < 0) {
		fclose(f);
		return -1;
	}
	return fclose(f) == 0 ? 0 : -1;
}
