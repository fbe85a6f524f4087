/*
 * fuzz_tls_transcript - the TLS handshake transcript parsers
 * (src/common/tls_transcript.c) and the destination decision on what they
 * find (src/agent/dest.c).
 *
 * Input: one byte that picks TLS 1.2 (even) or TLS 1.3 (odd), then a
 * transcript.  Every field a successful parse returns must lie inside the
 * input; the SNI must be a printable, terminated string.  Then dest_check()
 * runs on it for an identity pinned to a server (no files needed), for TLS
 * 1.3 with the content built from the transcript's own hash so that the
 * check goes past the hash comparison into certificates and signatures;
 * it must refuse (no input carries a server signature made with the
 * pinned key, whose private half nobody has) without crashing.
 */
#include "config.h"

#include <string.h>

#include <openssl/evp.h>

#include "conf.h"
#include "dest.h"
#include "fuzz.h"
#include "mtls-agent.h"
#include "purpose.h"
#include "tls_transcript.h"

#define WHY_LEN 256

static int
inside(const uint8_t *base, size_t size, const unsigned char *p, size_t len)
{
	if (p == NULL)
		return len == 0;
	return p >= base && len <= size && (size_t)(p - base) <= size - len;
}

static void
check_sni(const char *sni)
{
	size_t i;

	FUZZ_CHECK(memchr(sni, '\0', TLS_HS_SNI_MAX + 1) != NULL);
	for (i = 0; sni[i] != '\0'; i++)
		FUZZ_CHECK(sni[i] > 0x20 && sni[i] < 0x7f);
}

static struct config *
bound_config(void)
{
	static struct config *cfg;
	char err[256];

	if (cfg == NULL && config_parse("[identity f]\nkey = pkcs11:token=t;id=%01;type=private\n"
					"servers = *.example.com pin=sha256:"
					"pjHZrgrYDkp2z/CAcGVB49daw1647htPPZlk5sYkOno=\n",
					"fuzz", &cfg, err, sizeof(err)) != 0)
		abort();
	return cfg;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;
	unsigned char content[TLS13_CV_PAD_LEN + sizeof(ctx) + 48];
	const struct config_identity *id = &bound_config()->identities[0];
	struct tls12_hs h12;
	struct tls13_hs h13;
	char why[WHY_LEN];
	unsigned int md_len = 0;
	size_t i;
	int r;

	if (size < 1)
		return 0;
	data++;
	size--;
	if ((data[-1] & 1) == 0) {
		r = tls12_transcript_parse(data, size, &h12, why, sizeof(why));
		FUZZ_CHECK(r == 0 || r == MTLS_ERR_CONTENT_REJECTED);
		if (r == 0) {
			check_sni(h12.sni);
			FUZZ_CHECK(h12.n_srv_certs >= 1 && h12.n_srv_certs <= TLS_HS_MAX_CERTS);
			for (i = 0; i < h12.n_srv_certs; i++)
				FUZZ_CHECK(
				    inside(data, size, h12.srv_cert[i], h12.srv_cert_len[i]));
			FUZZ_CHECK(inside(data, size, h12.ske_params, h12.ske_params_len));
			FUZZ_CHECK(inside(data, size, h12.ske_sig, h12.ske_sig_len));
			FUZZ_CHECK(inside(data, size, h12.client_cert, h12.client_cert_len));
		}
		/* The transcript's own client certificate, to get past that check. */
		r = dest_check(id, r == 0 && h12.client_cert ? h12.client_cert : data,
			       r == 0 && h12.client_cert ? h12.client_cert_len : 1,
			       MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, data, size, NULL, 0, why,
			       sizeof(why));
		FUZZ_CHECK(r < 0 && why[0] != '\0');
		return 0;
	}
	r = tls13_transcript_parse(data, size, &h13, why, sizeof(why));
	FUZZ_CHECK(r == 0 || r == MTLS_ERR_CONTENT_REJECTED);
	if (r == 0) {
		check_sni(h13.sni);
		FUZZ_CHECK(h13.n_srv_certs >= 1 && h13.n_srv_certs <= TLS_HS_MAX_CERTS);
		for (i = 0; i < h13.n_srv_certs; i++)
			FUZZ_CHECK(inside(data, size, h13.srv_cert[i], h13.srv_cert_len[i]));
		FUZZ_CHECK(inside(data, size, h13.srv_cv_sig, h13.srv_cv_sig_len));
		FUZZ_CHECK(inside(data, size, h13.client_cert, h13.client_cert_len));
		FUZZ_CHECK(h13.srv_cv_covers <= size);
	}
	memset(content, 0x20, TLS13_CV_PAD_LEN);
	memcpy(content + TLS13_CV_PAD_LEN, ctx, sizeof(ctx));
	if (EVP_Digest(data, size, content + TLS13_CV_PAD_LEN + sizeof(ctx), &md_len,
		       r == 0 && h13.suite == 0x1302 ? EVP_sha384() : EVP_sha256(), NULL) != 1)
		abort();
	r = dest_check(id, r == 0 && h13.client_cert ? h13.client_cert : data,
		       r == 0 && h13.client_cert ? h13.client_cert_len : 0,
		       MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content,
		       TLS13_CV_PAD_LEN + sizeof(ctx) + md_len, data, size, why, sizeof(why));
	FUZZ_CHECK(r < 0 && why[0] != '\0');
	return 0;
}
