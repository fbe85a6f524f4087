/*
 * provider_module.c - the loadable OpenSSL module "mtls-agent": the
 * provider lives in libmtls-agent; this only gives OpenSSL the entry point
 * it looks for (`openssl ... -provider mtls-agent`).
 */
#include "config.h"

#include <openssl/core.h>

#include "mtls-agent.h"

OSSL_provider_init_fn OSSL_provider_init;

int
OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
		   const OSSL_DISPATCH **out, void **provctx)
{
	return mtls_agent_provider_init(handle, in, out, provctx);
}
