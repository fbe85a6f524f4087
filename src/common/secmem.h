/*
 * secmem - the one wipe helper and the one secure allocator.
 *
 * PINs and passphrases live only in memory from mtls_secure_alloc(): locked
 * (never swapped), excluded from core dumps, wiped on free.
 */
#ifndef MTLS_SECMEM_H
#define MTLS_SECMEM_H

#include <stddef.h>

/* Zeroes memory in a way the compiler may not remove. */
void mtls_wipe(void *p, size_t len);
/* Wipes then free()s; accepts NULL. */
void mtls_freezero(void *p, size_t len);
/* Wipes a C string then free()s it; accepts NULL. */
void mtls_free_string(char *s);

/* Zeroed, mlocked, MADV_DONTDUMP memory; NULL on failure. */
void *mtls_secure_alloc(size_t len);
/* Wipes, unlocks and frees memory from mtls_secure_alloc; accepts NULL. */
void mtls_secure_free(void *p);
/* Secure copy of a C string; NULL on failure. */
char *mtls_secure_strdup(const char *s);

/* Constant-time comparison: 0 if equal. */
int mtls_memcmp_ct(const void *a, const void *b, size_t len);

#endif
