/*
 * safefile.c - the one reader of files the agent and the PAM module trust
 * (see safefile.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mtls-agent.h"
#include "safefile.h"
#include "secmem.h"

enum safefile_fault
safefile_check_owner(const struct stat *st, const struct safefile_rules *rules)
{
	int root_ok = (rules->flags & SAFEFILE_OWNER_ONLY) == 0;

	if (st->st_uid != rules->owner && !(root_ok && st->st_uid == 0))
		return SAFEFILE_OWNER;
	if ((st->st_mode & rules->forbidden) != 0)
		return SAFEFILE_MODE;
	return SAFEFILE_OK;
}

/* Reads until end of file or until more than max bytes came. */
static int
read_whole(int fd, struct safefile *f, size_t max)
{
	ssize_t n;

	for (;;) {
		n = read(fd, f->data + f->len, max + 1 - f->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			f->err = errno;
			f->fault = SAFEFILE_READ;
			return MTLS_ERR_CONFIG;
		}
		if (n == 0)
			return 0;
		f->len += (size_t)n;
		/* One byte more than the limit tells a file that grew. */
		if (f->len > max) {
			f->fault = SAFEFILE_TOO_BIG;
			return MTLS_ERR_CONFIG;
		}
	}
}

static void
release(struct safefile *f)
{
	if (f->data == NULL)
		return;
	if (f->secret)
		mtls_secure_free(f->data);
	else
		free(f->data);
	f->data = NULL;
	f->len = 0;
	f->size = 0;
}

int
safefile_read(int dirfd, const char *path, const struct safefile_rules *rules, struct safefile *f)
{
	struct stat st;
	int fd = -1, r = MTLS_ERR_CONFIG, oflags;

	if (f == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	memset(f, 0, sizeof(*f));
	if (path == NULL || rules == NULL || rules->max >= SIZE_MAX - 2)
		return MTLS_ERR_INVALID_ARGUMENT;
	f->secret = (rules->flags & SAFEFILE_SECRET) != 0;

	oflags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	if ((rules->flags & SAFEFILE_FOLLOW) == 0)
		oflags |= O_NOFOLLOW;
	if ((fd = openat(dirfd, path, oflags)) < 0) {
		f->err = errno;
		if (errno == ENOENT)
			f->fault = SAFEFILE_MISSING;
		else if (errno == ELOOP && (oflags & O_NOFOLLOW) != 0)
			f->fault = SAFEFILE_SYMLINK;
		else
			f->fault = SAFEFILE_OPEN;
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		f->err = errno;
		f->fault = SAFEFILE_STAT;
		goto out;
	}
	f->uid = st.st_uid;
	f->mode = st.st_mode & 07777;
	if (!S_ISREG(st.st_mode)) {
		f->fault = SAFEFILE_NOT_REGULAR;
		goto out;
	}
	if ((f->fault = safefile_check_owner(&st, rules)) != SAFEFILE_OK)
		goto out;
	if (st.st_size < 0 || (unsigned long long)st.st_size > rules->max) {
		f->fault = SAFEFILE_TOO_BIG;
		goto out;
	}
	/* Room for one byte more than the limit, and a NUL. */
	f->size = rules->max + 2;
	f->data = f->secret ? mtls_secure_alloc(f->size) : malloc(f->size);
	if (f->data == NULL) {
		f->size = 0;
		f->fault = SAFEFILE_ALLOC;
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = read_whole(fd, f, rules->max)) != 0)
		goto out;
	f->data[f->len] = '\0';
	r = 0;
out:
	if (r != 0)
		release(f);
	if (fd >= 0)
		close(fd);
	return r;
}

void
safefile_free(struct safefile *f)
{
	if (f != NULL)
		release(f);
}
