/*
 * scheme - TLS SignatureScheme code points and what they imply.
 */
#ifndef MTLS_SCHEME_H
#define MTLS_SCHEME_H

#include <stddef.h>
#include <stdint.h>

struct scheme_info {
	uint16_t code;
	const char *name;     /* RFC 8446 name */
	int key_type;	      /* MTLS_AGENT_KEY_* */
	const char *digest;   /* OpenSSL digest name */
	size_t hash_len;      /* digest output length */
	int pss;	      /* RSASSA-PSS, salt length = hash length */
	unsigned int ec_bits; /* curve size an ECDSA scheme requires */
};

/* NULL if the code point is not one we sign with. */
const struct scheme_info *scheme_lookup(uint16_t code);
const struct scheme_info *scheme_by_name(const char *name);
/* Table access for listing: i from 0; NULL past the end. */
const struct scheme_info *scheme_at(size_t i);

#endif
