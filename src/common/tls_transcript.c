/*
 * tls_transcript.c - TLS 1.2 handshake transcript parser (RFC 5246 7.4,
 * RFC 8422 5.4, RFC 6066 3).  See tls_transcript.h.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "mtls-agent.h"
#include "tls_transcript.h"
#include "wbuf.h"

enum {
	HS_CLIENT_HELLO = 1,
	HS_SERVER_HELLO = 2,
	HS_ENCRYPTED_EXTENSIONS = 8,
	HS_CERTIFICATE_VERIFY = 15,
	HS_FINISHED = 20,
	HS_CERTIFICATE = 11,
	HS_SERVER_KEY_EXCHANGE = 12,
	HS_CERTIFICATE_REQUEST = 13,
	HS_SERVER_HELLO_DONE = 14,
	HS_CLIENT_KEY_EXCHANGE = 16,
	HS_CERTIFICATE_STATUS = 22,
};

#define EXT_SERVER_NAME 0

static int
bad(char *why, size_t why_len, const char *what)
{
	if (why != NULL && why_len > 0)
		snprintf(why, why_len, "TLS 1.2 transcript: %s", what);
	return MTLS_ERR_CONTENT_REJECTED;
}

static int
bad13(char *why, size_t why_len, const char *what)
{
	if (why != NULL && why_len > 0)
		snprintf(why, why_len, "TLS 1.3 transcript: %s", what);
	return MTLS_ERR_CONTENT_REJECTED;
}

int
tls12_suite_is_ecdhe(uint16_t suite)
{
	static const uint16_t ecdhe[] = {
		0xc009, 0xc00a, 0xc013, 0xc014, /* ECDHE CBC SHA-1 */
		0xc023, 0xc024, 0xc027, 0xc028, /* ECDHE CBC SHA-2 */
		0xc02b, 0xc02c, 0xc02f, 0xc030, /* ECDHE AES-GCM */
		0xcca8, 0xcca9,			/* ECDHE ChaCha20-Poly1305 */
		0xc0ac, 0xc0ad, 0xc0ae, 0xc0af, /* ECDHE_ECDSA AES-CCM */
	};
	size_t i;

	for (i = 0; i < sizeof(ecdhe) / sizeof(ecdhe[0]); i++)
		if (ecdhe[i] == suite)
			return 1;
	return 0;
}

/* The next handshake message: *type and a view of its body. */
static int
next_msg(struct wbuf_view *t, uint8_t *type, struct wbuf_view *body)
{
	if (wbuf_view_u8(t, type) != 0 || wbuf_view_vec(t, 3, 0, 0xffffff, body) != 0)
		return MTLS_ERR_CONTENT_REJECTED;
	return 0;
}

/* server_name (RFC 6066 3): the host_name entry, a DNS name. */
static int
parse_sni(struct wbuf_view *ext, struct tls12_hs *hs, char *why, size_t why_len)
{
	struct wbuf_view list, name;
	const unsigned char *d;
	uint8_t type;
	size_t i, n;

	if (wbuf_view_vec(ext, 2, 1, 0xffff, &list) != 0 || !wbuf_view_empty(ext))
		return bad(why, why_len, "malformed server_name extension");
	while (!wbuf_view_empty(&list)) {
		if (wbuf_view_u8(&list, &type) != 0 ||
		    wbuf_view_vec(&list, 2, 1, 0xffff, &name) != 0)
			return bad(why, why_len, "malformed server_name extension");
		if (type != 0)
			continue;
		if (hs->sni[0] != '\0')
			return bad(why, why_len, "two host names in server_name");
		n = name.len;
		if (n > TLS_HS_SNI_MAX || wbuf_view_bytes(&name, n, &d) != 0)
			return bad(why, why_len, "server_name host name too long");
		for (i = 0; i < n; i++) {
			if (d[i] < 0x21 || d[i] > 0x7e)
				return bad(why, why_len, "server_name host name not printable");
			hs->sni[i] = (char)d[i];
		}
		hs->sni[i] = '\0';
	}
	return 0;
}

static int
parse_client_hello(struct wbuf_view *m, struct tls12_hs *hs, char *why, size_t why_len)
{
	struct wbuf_view sid, suites, comp, exts, ext;
	const unsigned char *rnd;
	uint16_t version, type;
	int r;

	if (wbuf_view_u16(m, &version) != 0 || wbuf_view_bytes(m, TLS_HS_RANDOM_LEN, &rnd) != 0 ||
	    wbuf_view_vec(m, 1, 0, 32, &sid) != 0 || wbuf_view_vec(m, 2, 2, 0xfffe, &suites) != 0 ||
	    wbuf_view_vec(m, 1, 1, 0xff, &comp) != 0)
		return bad(why, why_len, "malformed ClientHello");
	memcpy(hs->client_random, rnd, TLS_HS_RANDOM_LEN);
	if (wbuf_view_empty(m))
		return 0;
	if (wbuf_view_vec(m, 2, 0, 0xffff, &exts) != 0 || !wbuf_view_empty(m))
		return bad(why, why_len, "malformed ClientHello extensions");
	while (!wbuf_view_empty(&exts)) {
		if (wbuf_view_u16(&exts, &type) != 0 ||
		    wbuf_view_vec(&exts, 2, 0, 0xffff, &ext) != 0)
			return bad(why, why_len, "malformed ClientHello extension");
		if (type == EXT_SERVER_NAME && (r = parse_sni(&ext, hs, why, why_len)) != 0)
			return r;
	}
	return 0;
}

static int
parse_server_hello(struct wbuf_view *m, struct tls12_hs *hs, char *why, size_t why_len)
{
	struct wbuf_view sid, exts;
	const unsigned char *rnd;
	uint8_t comp;

	if (wbuf_view_u16(m, &hs->server_version) != 0 ||
	    wbuf_view_bytes(m, TLS_HS_RANDOM_LEN, &rnd) != 0 ||
	    wbuf_view_vec(m, 1, 0, 32, &sid) != 0 || wbuf_view_u16(m, &hs->suite) != 0 ||
	    wbuf_view_u8(m, &comp) != 0)
		return bad(why, why_len, "malformed ServerHello");
	memcpy(hs->server_random, rnd, TLS_HS_RANDOM_LEN);
	if (!wbuf_view_empty(m) &&
	    (wbuf_view_vec(m, 2, 0, 0xffff, &exts) != 0 || !wbuf_view_empty(m)))
		return bad(why, why_len, "malformed ServerHello extensions");
	if (hs->server_version != 0x0303)
		return bad(why, why_len, "ServerHello is not TLS 1.2");
	return 0;
}

/* Certificate: certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>. */
static int
parse_certificates(struct wbuf_view *m, const unsigned char **certs, size_t *lens, size_t max,
		   size_t *n, char *why, size_t why_len)
{
	struct wbuf_view list, cert;

	*n = 0;
	if (wbuf_view_vec(m, 3, 0, 0xffffff, &list) != 0 || !wbuf_view_empty(m))
		return bad(why, why_len, "malformed Certificate");
	while (!wbuf_view_empty(&list)) {
		if (wbuf_view_vec(&list, 3, 1, TLS_HS_CERT_MAX, &cert) != 0)
			return bad(why, why_len, "malformed certificate in Certificate");
		if (*n < max) {
			certs[*n] = cert.p;
			lens[*n] = cert.len;
			(*n)++;
		} else if (max > 1) {
			return bad(why, why_len, "more than 10 certificates in a chain");
		}
	}
	return 0;
}

/* ECDHE ServerKeyExchange: ECParameters (named_curve only), the point,
 * then the digitally-signed struct. */
static int
parse_ske(struct wbuf_view *m, struct tls12_hs *hs, char *why, size_t why_len)
{
	struct wbuf_view point, sig, params = *m;
	const unsigned char *d;
	uint16_t curve;
	uint8_t curve_type;

	if (wbuf_view_u8(m, &curve_type) != 0 || curve_type != 3 || wbuf_view_u16(m, &curve) != 0 ||
	    wbuf_view_vec(m, 1, 1, 0xff, &point) != 0)
		return bad(why, why_len,
			   "ServerKeyExchange is not ECDHE over a named curve (only ECDHE "
			   "key exchanges can be bound to a server)");
	/* The signed params are what was read so far. */
	hs->ske_params_len = params.len - m->len;
	if (wbuf_view_bytes(&params, hs->ske_params_len, &d) != 0)
		return bad(why, why_len, "malformed ServerKeyExchange");
	hs->ske_params = d;
	if (wbuf_view_u16(m, &hs->ske_sigalg) != 0 || wbuf_view_vec(m, 2, 1, 0xffff, &sig) != 0 ||
	    !wbuf_view_empty(m))
		return bad(why, why_len, "malformed ServerKeyExchange signature");
	hs->ske_sig = sig.p;
	hs->ske_sig_len = sig.len;
	return 0;
}

int
tls12_transcript_parse(const unsigned char *t, size_t len, struct tls12_hs *hs, char *why,
		       size_t why_len)
{
	struct wbuf_view all, m;
	uint8_t type;
	size_t n;
	int r;

	memset(hs, 0, sizeof(*hs));
	wbuf_view_init(&all, t, len);
	if (next_msg(&all, &type, &m) != 0 || type != HS_CLIENT_HELLO)
		return bad(why, why_len, "does not start with a ClientHello");
	if ((r = parse_client_hello(&m, hs, why, why_len)) != 0)
		return r;
	if (next_msg(&all, &type, &m) != 0 || type != HS_SERVER_HELLO)
		return bad(why, why_len, "no ServerHello after the ClientHello");
	if ((r = parse_server_hello(&m, hs, why, why_len)) != 0)
		return r;
	if (next_msg(&all, &type, &m) != 0 || type != HS_CERTIFICATE)
		return bad(why, why_len, "no server Certificate after the ServerHello");
	if ((r = parse_certificates(&m, hs->srv_cert, hs->srv_cert_len, TLS_HS_MAX_CERTS,
				    &hs->n_srv_certs, why, why_len)) != 0)
		return r;
	if (hs->n_srv_certs == 0)
		return bad(why, why_len, "the server sent no certificate");
	if (next_msg(&all, &type, &m) != 0)
		return bad(why, why_len, "ends after the server Certificate");
	if (type == HS_CERTIFICATE_STATUS && next_msg(&all, &type, &m) != 0)
		return bad(why, why_len, "ends after CertificateStatus");
	if (type == HS_SERVER_KEY_EXCHANGE) {
		if ((r = parse_ske(&m, hs, why, why_len)) != 0)
			return r;
		if (next_msg(&all, &type, &m) != 0)
			return bad(why, why_len, "ends after the ServerKeyExchange");
	}
	if (type != HS_CERTIFICATE_REQUEST)
		return bad(why, why_len, "no CertificateRequest");
	if (next_msg(&all, &type, &m) != 0 || type != HS_SERVER_HELLO_DONE || !wbuf_view_empty(&m))
		return bad(why, why_len, "no empty ServerHelloDone after the CertificateRequest");
	if (next_msg(&all, &type, &m) != 0 || type != HS_CERTIFICATE)
		return bad(why, why_len, "no client Certificate after the ServerHelloDone");
	if ((r = parse_certificates(&m, &hs->client_cert, &hs->client_cert_len, 1, &n, why,
				    why_len)) != 0)
		return r;
	if (next_msg(&all, &type, &m) != 0 || type != HS_CLIENT_KEY_EXCHANGE)
		return bad(why, why_len, "no ClientKeyExchange after the client Certificate");
	if (!wbuf_view_empty(&all))
		return bad(why, why_len, "messages after the ClientKeyExchange");
	return 0;
}

/* HelloRetryRequest's ServerHello.random (RFC 8446 4.1.3). */
static const unsigned char hrr_random[TLS_HS_RANDOM_LEN] = {
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c,
	0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb,
	0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
};

/* TLS 1.3 Certificate: context<0..255>, list<u24> of {cert<u24>, exts<u16>}. */
static int
parse_certificates13(struct wbuf_view *m, const unsigned char **certs, size_t *lens, size_t max,
		     size_t *n, char *why, size_t why_len)
{
	struct wbuf_view ctx, list, cert, exts;

	*n = 0;
	if (wbuf_view_vec(m, 1, 0, 255, &ctx) != 0 ||
	    wbuf_view_vec(m, 3, 0, 0xffffff, &list) != 0 || !wbuf_view_empty(m))
		return bad13(why, why_len, "malformed Certificate");
	while (!wbuf_view_empty(&list)) {
		if (wbuf_view_vec(&list, 3, 1, TLS_HS_CERT_MAX, &cert) != 0 ||
		    wbuf_view_vec(&list, 2, 0, 0xffff, &exts) != 0)
			return bad13(why, why_len, "malformed certificate entry in Certificate");
		if (*n < max) {
			certs[*n] = cert.p;
			lens[*n] = cert.len;
			(*n)++;
		} else if (max > 1) {
			return bad13(why, why_len, "more than 10 certificates in a chain");
		}
	}
	return 0;
}

int
tls13_transcript_parse(const unsigned char *t, size_t len, struct tls13_hs *hs, char *why,
		       size_t why_len)
{
	struct tls12_hs ch;
	struct wbuf_view all, m, sid, exts, sig;
	const unsigned char *rnd;
	uint16_t version;
	uint8_t type, comp;
	size_t n;
	int r;

	memset(hs, 0, sizeof(*hs));
	memset(&ch, 0, sizeof(ch));
	wbuf_view_init(&all, t, len);
	if (next_msg(&all, &type, &m) != 0 || type != HS_CLIENT_HELLO)
		return bad13(why, why_len, "does not start with a ClientHello");
	if ((r = parse_client_hello(&m, &ch, why, why_len)) != 0)
		return r;
	memcpy(hs->sni, ch.sni, sizeof(hs->sni));
	if (next_msg(&all, &type, &m) != 0 || type != HS_SERVER_HELLO ||
	    wbuf_view_u16(&m, &version) != 0 || wbuf_view_bytes(&m, TLS_HS_RANDOM_LEN, &rnd) != 0 ||
	    wbuf_view_vec(&m, 1, 0, 32, &sid) != 0 || wbuf_view_u16(&m, &hs->suite) != 0 ||
	    wbuf_view_u8(&m, &comp) != 0 || wbuf_view_vec(&m, 2, 0, 0xffff, &exts) != 0 ||
	    !wbuf_view_empty(&m))
		return bad13(why, why_len, "no well-formed ServerHello after the ClientHello");
	if (memcmp(rnd, hrr_random, TLS_HS_RANDOM_LEN) == 0)
		return bad13(why, why_len, "a HelloRetryRequest handshake cannot be bound");
	if (next_msg(&all, &type, &m) != 0 || type != HS_ENCRYPTED_EXTENSIONS)
		return bad13(why, why_len, "no EncryptedExtensions after the ServerHello");
	if (next_msg(&all, &type, &m) != 0 || type != HS_CERTIFICATE_REQUEST)
		return bad13(why, why_len, "no CertificateRequest after the EncryptedExtensions");
	if (next_msg(&all, &type, &m) != 0 || type != HS_CERTIFICATE)
		return bad13(why, why_len,
			     "no server Certificate after the CertificateRequest (a resumed "
			     "handshake cannot be bound)");
	if ((r = parse_certificates13(&m, hs->srv_cert, hs->srv_cert_len, TLS_HS_MAX_CERTS,
				      &hs->n_srv_certs, why, why_len)) != 0)
		return r;
	if (hs->n_srv_certs == 0)
		return bad13(why, why_len, "the server sent no certificate");
	hs->srv_cv_covers = len - all.len;
	if (next_msg(&all, &type, &m) != 0 || type != HS_CERTIFICATE_VERIFY ||
	    wbuf_view_u16(&m, &hs->srv_cv_alg) != 0 || wbuf_view_vec(&m, 2, 1, 0xffff, &sig) != 0 ||
	    !wbuf_view_empty(&m))
		return bad13(why, why_len, "no well-formed server CertificateVerify");
	hs->srv_cv_sig = sig.p;
	hs->srv_cv_sig_len = sig.len;
	if (next_msg(&all, &type, &m) != 0 || type != HS_FINISHED)
		return bad13(why, why_len, "no server Finished after its CertificateVerify");
	if (next_msg(&all, &type, &m) != 0 || type != HS_CERTIFICATE)
		return bad13(why, why_len, "no client Certificate after the server Finished");
	if ((r = parse_certificates13(&m, &hs->client_cert, &hs->client_cert_len, 1, &n, why,
				      why_len)) != 0)
		return r;
	if (!wbuf_view_empty(&all))
		return bad13(why, why_len, "messages after the client Certificate");
	return 0;
}
