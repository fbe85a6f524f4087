/*
 * secmem.c - wiping and secure allocation.  See secmem.h.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "secmem.h"

void
mtls_wipe(void *p, size_t len)
{
	if (p == NULL || len == 0)
		return;
#if defined(HAVE_EXPLICIT_BZERO)
	explicit_bzero(p, len);
#else
	{
		volatile unsigned char *vp = p;

		while (len-- > 0)
			*vp++ = 0;
	}
#endif
}

void
mtls_freezero(void *p, size_t len)
{
	if (p == NULL)
		return;
	mtls_wipe(p, len);
	free(p);
}

void
mtls_free_string(char *s)
{
	if (s == NULL)
		return;
	mtls_freezero(s, strlen(s));
}

/*
 * Each secure block is its own mapping: a header page-aligned region with
 * the mapping size in front of the user pointer.  PINs are few and small,
 * so a page per secret is cheap and keeps the code obviously correct.
 */
struct secure_hdr {
	size_t map_len;
	size_t user_len;
};

void *
mtls_secure_alloc(size_t len)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t map_len, hdr = sizeof(struct secure_hdr);
	struct secure_hdr *h;
	void *m;

	if (page <= 0)
		page = 4096;
	if (len > SIZE_MAX - hdr - (size_t)page)
		return NULL;
	map_len = ((hdr + len + (size_t)page - 1) / (size_t)page) * (size_t)page;
	m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	/* Best effort: an unprivileged user may have a small RLIMIT_MEMLOCK. */
	(void)mlock(m, map_len);
#ifdef MADV_DONTDUMP
	(void)madvise(m, map_len, MADV_DONTDUMP);
#endif
	h = m;
	h->map_len = map_len;
	h->user_len = len;
	return (unsigned char *)m + hdr;
}

void
mtls_secure_free(void *p)
{
	struct secure_hdr *h;
	size_t map_len;

	if (p == NULL)
		return;
	h = (struct secure_hdr *)((unsigned char *)p - sizeof(*h));
	map_len = h->map_len;
	mtls_wipe(h, map_len);
	(void)munlock(h, map_len);
	(void)munmap(h, map_len);
}

char *
mtls_secure_strdup(const char *s)
{
	size_t len = strlen(s);
	char *d;

	if ((d = mtls_secure_alloc(len + 1)) == NULL)
		return NULL;
	memcpy(d, s, len + 1);
	return d;
}

int
mtls_memcmp_ct(const void *a, const void *b, size_t len)
{
	const volatile unsigned char *pa = a, *pb = b;
	unsigned char acc = 0;
	size_t i;

	for (i = 0; i < len; i++)
		acc |= pa[i] ^ pb[i];
	return acc != 0;
}
