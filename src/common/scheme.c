/*
 * scheme.c - the SignatureScheme table.
 */
#include "config.h"

#include <string.h>

#include "mtls-agent.h"
#include "scheme.h"

static const struct scheme_info schemes[] = {
	{ MTLS_AGENT_RSA_PSS_RSAE_SHA256, "rsa_pss_rsae_sha256", MTLS_AGENT_KEY_RSA, "SHA256", 32,
	  1, 0 },
	{ MTLS_AGENT_RSA_PSS_RSAE_SHA384, "rsa_pss_rsae_sha384", MTLS_AGENT_KEY_RSA, "SHA384", 48,
	  1, 0 },
	{ MTLS_AGENT_RSA_PSS_RSAE_SHA512, "rsa_pss_rsae_sha512", MTLS_AGENT_KEY_RSA, "SHA512", 64,
	  1, 0 },
	{ MTLS_AGENT_RSA_PKCS1_SHA256, "rsa_pkcs1_sha256", MTLS_AGENT_KEY_RSA, "SHA256", 32, 0, 0 },
	{ MTLS_AGENT_RSA_PKCS1_SHA384, "rsa_pkcs1_sha384", MTLS_AGENT_KEY_RSA, "SHA384", 48, 0, 0 },
	{ MTLS_AGENT_RSA_PKCS1_SHA512, "rsa_pkcs1_sha512", MTLS_AGENT_KEY_RSA, "SHA512", 64, 0, 0 },
	{ MTLS_AGENT_ECDSA_SECP256R1_SHA256, "ecdsa_secp256r1_sha256", MTLS_AGENT_KEY_EC, "SHA256",
	  32, 0, 256 },
	{ MTLS_AGENT_ECDSA_SECP384R1_SHA384, "ecdsa_secp384r1_sha384", MTLS_AGENT_KEY_EC, "SHA384",
	  48, 0, 384 },
};

const struct scheme_info *
scheme_at(size_t i)
{
	return i < sizeof(schemes) / sizeof(schemes[0]) ? &schemes[i] : NULL;
}

const struct scheme_info *
scheme_lookup(uint16_t code)
{
	const struct scheme_info *s;
	size_t i;

	for (i = 0; (s = scheme_at(i)) != NULL; i++)
		if (s->code == code)
			return s;
	return NULL;
}

const struct scheme_info *
scheme_by_name(const char *name)
{
	const struct scheme_info *s;
	size_t i;

	if (name == NULL)
		return NULL;
	for (i = 0; (s = scheme_at(i)) != NULL; i++)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

const char *
mtls_agent_scheme_name(uint16_t code)
{
	const struct scheme_info *s = scheme_lookup(code);

	return s == NULL ? NULL : s->name;
}

uint16_t
mtls_agent_scheme_from_name(const char *name)
{
	const struct scheme_info *s = scheme_by_name(name);

	return s == NULL ? 0 : s->code;
}
