/*
 * safefile - the one reader of files the agent and the PAM module trust.
 *
 * A configuration, a PIN file, a user map or an authorized-certificates
 * file decides what the program does, so whoever can write it must be
 * someone the program trusts.  safefile_read() opens the file (by default
 * refusing a final symbolic link), makes every check on the descriptor it
 * opened (regular file, owner, mode, size) and reads it whole; the caller
 * words the refusal from the fault it reports.
 */
#ifndef MTLS_SAFEFILE_H
#define MTLS_SAFEFILE_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define SAFEFILE_RESULT __attribute__((warn_unused_result))

enum safefile_flag {
	/* Follow a final symbolic link (the checks are on what was opened). */
	SAFEFILE_FOLLOW = 1 << 0,
	/* Only rules.owner may own the file, not root as well. */
	SAFEFILE_OWNER_ONLY = 1 << 1,
	/* It holds a secret: read into mtls_secure_alloc() memory, wiped on
	 * free, and nothing of it is left anywhere else. */
	SAFEFILE_SECRET = 1 << 2,
};

struct safefile_rules {
	uid_t owner;	  /* who may own it (root too, unless SAFEFILE_OWNER_ONLY) */
	mode_t forbidden; /* mode bits that refuse it, e.g. S_IWGRP | S_IWOTH */
	size_t max;	  /* largest size accepted, in bytes */
	unsigned flags;	  /* enum safefile_flag */
};

/* Why a file was refused. */
enum safefile_fault {
	SAFEFILE_OK = 0,
	SAFEFILE_MISSING,     /* it does not exist (ENOENT) */
	SAFEFILE_SYMLINK,     /* a final symbolic link, not followed */
	SAFEFILE_OPEN,	      /* open failed otherwise (err) */
	SAFEFILE_STAT,	      /* fstat failed (err) */
	SAFEFILE_NOT_REGULAR, /* a directory, FIFO, device or socket */
	SAFEFILE_OWNER,	      /* owned by someone else (uid) */
	SAFEFILE_MODE,	      /* a forbidden mode bit is set (mode) */
	SAFEFILE_TOO_BIG,     /* larger than rules.max, now or while read */
	SAFEFILE_READ,	      /* read failed (err) */
	SAFEFILE_ALLOC,	      /* out of memory */
};

struct safefile {
	char *data; /* len bytes and a NUL; NULL unless read */
	size_t len;
	size_t size; /* bytes allocated at data */
	int secret;  /* data is from mtls_secure_alloc() */
	enum safefile_fault fault;
	int err;     /* errno of OPEN, STAT and READ */
	uid_t uid;   /* the file's owner (OWNER, and after a read) */
	mode_t mode; /* the file's mode bits (MODE, and after a read) */
};

/*
 * Reads `path` (relative to dirfd, or as open(2) does when dirfd is
 * AT_FDCWD) under `rules` into *f (initialised here).  O_NONBLOCK: a FIFO
 * in its place cannot hang the reader.  Returns 0, MTLS_ERR_ALLOC, or
 * MTLS_ERR_CONFIG with f->fault saying why.  Release with safefile_free()
 * whatever it returned.
 */
int safefile_read(int dirfd, const char *path, const struct safefile_rules *rules,
		  struct safefile *f) SAFEFILE_RESULT;

/*
 * The owner and mode checks alone, for a file or directory the caller
 * opened (the directory holding a user's authorized file).  Returns
 * SAFEFILE_OK, SAFEFILE_OWNER or SAFEFILE_MODE.
 */
enum safefile_fault safefile_check_owner(const struct stat *st, const struct safefile_rules *rules);

/* Frees f->data (wiped first when secret); f stays usable; accepts NULL. */
void safefile_free(struct safefile *f);

#endif
