/*
 * fuzz_csr - the csr purpose's content parser (src/common/purpose_csr.c):
 * what the agent agrees to sign as a certificate request.
 *
 * Input: a content.  It is checked without a key (the shape, as
 * purpose_check() does) and bound to a fixed P-256 key; a content bound
 * to the key must pass the shape check too, a refusal must give a reason,
 * and a content that passes must be a DER SEQUENCE spanning the whole
 * input whose re-parse by OpenSSL's own X509_REQ_INFO agrees.
 */
#include "config.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fuzz.h"
#include "mtls-agent.h"
#include "purpose.h"

/* A fixed key: the fuzzer may find its SubjectPublicKeyInfo in a seed. */
static EVP_PKEY *
fixed_key(void)
{
	static EVP_PKEY *k;
	/* SubjectPublicKeyInfo of the seeds' key (tests/fuzz/corpus/fuzz_csr). */
	static const unsigned char spki[] = {
		0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
		0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
		0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5,
		0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4,
		0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a,
		0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33,
		0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
	};
	const unsigned char *p = spki;

	if (k == NULL && (k = d2i_PUBKEY(NULL, &p, sizeof(spki))) == NULL)
		abort();
	return k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[256];
	int shape, bound;

	if (size > MTLS_AGENT_CONTENT_MAX)
		return 0;
	why[0] = 'X';
	shape = purpose_csr_check(data, size, NULL, why, sizeof(why));
	FUZZ_CHECK(shape == 0 || (shape == MTLS_ERR_CONTENT_REJECTED && why[0] != '\0'));
	FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
	bound = purpose_csr_check(data, size, fixed_key(), why, sizeof(why));
	FUZZ_CHECK(bound == 0 || bound == MTLS_ERR_CONTENT_REJECTED);
	/* Binding only ever adds a refusal. */
	FUZZ_CHECK(bound != 0 || shape == 0);
	if (shape == 0) {
		/* What passed is what OpenSSL itself reads as a request body,
		 * all of it. */
		const unsigned char *p = data;
		X509_REQ_INFO *ri = d2i_X509_REQ_INFO(NULL, &p, (long)size);

		FUZZ_CHECK(ri != NULL);
		FUZZ_CHECK(p == data + size);
		X509_REQ_INFO_free(ri);
	}
	return 0;
}
