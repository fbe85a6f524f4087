/*
 * p11-stub - a stand-in for mtls-agent-p11 in tests: speaks the internal
 * helper protocol (docs/PROTOCOL.md, "Internal protocol") with the same
 * codecs (src/common/msg_p11.c) on the same channels, but its "token" is
 * two software keys held by OpenSSL.  The agent runs it instead of the
 * real helper when MTLS_P11_HELPER_BIN names it.
 *
 *   p11-stub [--channels K] MODULE       (MODULE is ignored)
 *
 * One slot (id STUB_SLOT) with a token labelled "stub", serial "0001",
 * holding certificate + private key "rsa" (RSA-2048, CKA_ID 01) and "ec"
 * (P-256, CKA_ID 02); the private keys are listed only while logged in.
 *
 * Environment (the agent passes on MTLS_SHIM_* only, helper.c):
 *   MTLS_SHIM_STUB_DIR   required.  rsa.pem and ec.pem (certificate and
 *                        key) are read from it, or generated and written
 *                        there by the first stub that finds them missing,
 *                        so every restart of the stub has the same keys.
 *   MTLS_SHIM_STUB_PIN   the user PIN (default 1234).
 *   MTLS_SHIM_STUB_SIGN  what a SIGN does when DIR/sign-mode is absent.
 * DIR/sign-mode, read at every SIGN (tests change it between requests):
 *   ok                   sign (default)
 *   error CODE [RV]      answer P11_ERROR with MTLS_ERR_* CODE and CK_RV RV
 *   hang                 never answer (the agent must time out and kill us)
 *   hang rsa, hang ec    the same for that key's SIGNs only; the other's work
 *   exit                 exit at once, no answer
 *   garbage              answer a frame of an unknown type
 *   badsig               answer a SIGN reply whose body does not parse
 * DIR/sign-count, rewritten after every SIGN received, before it is acted
 * on: "COUNT HEXDATA\n" (the SIGN requests any stub of DIR received, and
 * the digest or DigestInfo of the last one), so a test can tell that a
 * request the agent refused never reached the token.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "msg_p11.h"
#include "mtls-agent.h"
#include "proto.h"
#include "stubctl.h"
#include "wbuf.h"

#define STUB_SLOT     7
#define CHANNELS_MAX  64
#define FIRST_FD      3
#define H_CERT_RSA    1
#define H_CERT_EC     2
#define H_KEY_RSA     11
#define H_KEY_EC      12
#define STUB_MODE_MAX 128

/* CKA_EC_PARAMS of the EC key: prime256v1's OID, DER. */
static const unsigned char p256_oid[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};

struct stub_key {
	const char *name; /* file DIR/<name>.pem, CKA_LABEL */
	unsigned char id;
	EVP_PKEY *pkey;
	unsigned char *cert_der;
	size_t cert_der_len;
};

static struct stub_key keys[2] = { { "rsa", 0x01, NULL, NULL, 0 }, { "ec", 0x02, NULL, NULL, 0 } };
static const char *dir;
static const char *pin = "1234";
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int logged_in;		 /* under mu */
static unsigned long sign_count; /* under mu */

static void
die(const char *what)
{
	fprintf(stderr, "p11-stub: %s\n", what);
	exit(1);
}

/* A self-signed certificate for pkey, CN=stub-<name>. */
static X509 *
self_signed(EVP_PKEY *pkey, const char *name)
{
	X509 *x = X509_new();
	X509_NAME *n;
	char cn[64];

	snprintf(cn, sizeof(cn), "stub-%s", name);
	if (x == NULL || X509_set_version(x, 2) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400) == NULL ||
	    X509_set_pubkey(x, pkey) != 1 || (n = X509_get_subject_name(x)) == NULL ||
	    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
				       0) != 1 ||
	    X509_set_issuer_name(x, n) != 1 || X509_sign(x, pkey, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* DIR/<name>.pem: read it, or make the key and certificate and write it
 * (through a temporary file, so a reader never sees half of it). */
static void
load_key(struct stub_key *k)
{
	char path[4096], tmp[4200];
	unsigned char *der = NULL;
	X509 *x = NULL;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "%s/%s.pem", dir, k->name);
	if ((f = fopen(path, "r")) != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		rewind(f);
		k->pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	} else {
		k->pkey = k->id == 0x01 ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
		if (k->pkey == NULL || (x = self_signed(k->pkey, k->name)) == NULL)
			die("cannot make a key and certificate");
		snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
		if ((f = fopen(tmp, "w")) == NULL || PEM_write_X509(f, x) != 1 ||
		    PEM_write_PrivateKey(f, k->pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
		    fclose(f) != 0 || rename(tmp, path) != 0)
			die("cannot write a key file");
	}
	if (x == NULL || k->pkey == NULL || (n = i2d_X509(x, &der)) <= 0)
		die("cannot read a key file");
	k->cert_der = der;
	k->cert_der_len = (size_t)n;
	X509_free(x);
}

static void
put_error(struct wbuf *out, int code, uint32_t rv, const char *message)
{
	struct msg_p11_error e = {
		.code = code, .retries = -1, .rv = rv, .message = (char *)message
	};

	wbuf_reset(out);
	if (msg_p11_error_put(out, &e) != 0)
		die("cannot encode an error");
}

static void
do_tokens(struct wbuf *out)
{
	struct p11_token t = { .slot = STUB_SLOT,
			       .label = (char *)"stub",
			       .manufacturer = (char *)"mtls-agent tests",
			       .model = (char *)"p11-stub",
			       .serial = (char *)"0001",
			       .flags = CKF_TOKEN_INITIALIZED | CKF_LOGIN_REQUIRED |
					CKF_USER_PIN_INITIALIZED };
	struct msg_p11_tokens_resp resp = { &t, 1 };

	pthread_mutex_lock(&mu);
	t.logged_in = (uint8_t)logged_in;
	pthread_mutex_unlock(&mu);
	if (msg_p11_tokens_resp_put(out, &resp) != 0)
		die("cannot encode TOKENS");
}

/* The public numbers of a private-key object, as the real helper gives
 * them: RSA modulus and exponent; EC parameters and the DER OCTET STRING
 * of the point.  *a and *b are OPENSSL_malloc'd. */
static int
key_attrs(EVP_PKEY *pkey, unsigned char **a, size_t *a_len, unsigned char **b, size_t *b_len)
{
	unsigned char pt[256], *p;
	BIGNUM *n = NULL, *e = NULL;
	ASN1_OCTET_STRING *os = NULL;
	int len, ok = 0;
	size_t pt_len;

	if (EVP_PKEY_is_a(pkey, "RSA")) {
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
			goto out;
		*a_len = (size_t)BN_num_bytes(n);
		*b_len = (size_t)BN_num_bytes(e);
		if ((*a = OPENSSL_malloc(*a_len)) == NULL || (*b = OPENSSL_malloc(*b_len)) == NULL)
			goto out;
		BN_bn2bin(n, *a);
		BN_bn2bin(e, *b);
		ok = 1;
		goto out;
	}
	if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt,
					     sizeof(pt), &pt_len) ||
	    (*a = OPENSSL_memdup(p256_oid, sizeof(p256_oid))) == NULL)
		goto out;
	*a_len = sizeof(p256_oid);
	if ((os = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(os, pt, (int)pt_len) != 1 ||
	    (len = i2d_ASN1_OCTET_STRING(os, NULL)) <= 0 || (*b = OPENSSL_malloc(len)) == NULL)
		goto out;
	p = *b;
	*b_len = (size_t)i2d_ASN1_OCTET_STRING(os, &p);
	ok = 1;
out:
	BN_free(n);
	BN_free(e);
	ASN1_OCTET_STRING_free(os);
	return ok ? 0 : -1;
}

static void
do_objects(struct wbuf *in, struct wbuf *out)
{
	struct msg_p11_slot_req req;
	struct p11_object o[4];
	struct msg_p11_objects_resp resp = { o, 0 };
	size_t i;
	int in_now;

	memset(o, 0, sizeof(o));
	if (msg_p11_slot_req_get(in, &req) != 0) {
		put_error(out, MTLS_ERR_BAD_REQUEST, 0, "malformed OBJECTS");
		return;
	}
	if (req.slot != STUB_SLOT) {
		put_error(out, MTLS_ERR_TOKEN, CKR_SLOT_ID_INVALID, "no such slot");
		return;
	}
	pthread_mutex_lock(&mu);
	in_now = logged_in;
	pthread_mutex_unlock(&mu);
	for (i = 0; i < 2; i++) {
		o[resp.n] = (struct p11_object){ .kind = P11_OBJ_CERT,
						 .handle = i == 0 ? H_CERT_RSA : H_CERT_EC,
						 .id = &keys[i].id,
						 .id_len = 1,
						 .label = (char *)keys[i].name,
						 .a = keys[i].cert_der,
						 .a_len = keys[i].cert_der_len };
		resp.n++;
		if (!in_now)
			continue;
		o[resp.n] = (struct p11_object){ .kind = i == 0 ? P11_OBJ_RSA : P11_OBJ_EC,
						 .handle = i == 0 ? H_KEY_RSA : H_KEY_EC,
						 .id = &keys[i].id,
						 .id_len = 1,
						 .label = (char *)keys[i].name };
		if (key_attrs(keys[i].pkey, &o[resp.n].a, &o[resp.n].a_len, &o[resp.n].b,
			      &o[resp.n].b_len) != 0)
			die("cannot read a public key");
		resp.n++;
	}
	if (msg_p11_objects_resp_put(out, &resp) != 0)
		die("cannot encode OBJECTS");
	for (i = 0; i < resp.n; i++)
		if (o[i].kind != P11_OBJ_CERT) {
			OPENSSL_free(o[i].a);
			OPENSSL_free(o[i].b);
		}
}

static void
do_login(struct wbuf *in, struct wbuf *out)
{
	struct msg_p11_login_req req;

	if (msg_p11_login_req_get(in, &req) != 0) {
		put_error(out, MTLS_ERR_BAD_REQUEST, 0, "malformed LOGIN");
		return;
	}
	if (req.slot != STUB_SLOT)
		put_error(out, MTLS_ERR_TOKEN, CKR_SLOT_ID_INVALID, "no such slot");
	else if (strcmp(req.pin, pin) != 0)
		put_error(out, MTLS_ERR_PIN_INCORRECT, CKR_PIN_INCORRECT, "C_Login");
	else {
		pthread_mutex_lock(&mu);
		logged_in = 1;
		pthread_mutex_unlock(&mu);
		if (wbuf_put_u8(out, P11_LOGIN | MSG_REPLY) != 0)
			die("cannot encode LOGIN");
	}
	msg_p11_login_req_clear(&req);
}

static void
do_logout(struct wbuf *in, struct wbuf *out)
{
	struct msg_p11_slot_req req;

	if (msg_p11_slot_req_get(in, &req) != 0) {
		put_error(out, MTLS_ERR_BAD_REQUEST, 0, "malformed LOGOUT");
		return;
	}
	pthread_mutex_lock(&mu);
	logged_in = 0;
	pthread_mutex_unlock(&mu);
	if (wbuf_put_u8(out, P11_LOGOUT | MSG_REPLY) != 0)
		die("cannot encode LOGOUT");
}

/* The mode of this SIGN: DIR/sign-mode, else $MTLS_SHIM_STUB_SIGN. */
static void
sign_mode(char *mode, size_t len)
{
	char path[4096];
	const char *env = getenv("MTLS_SHIM_STUB_SIGN");
	FILE *f;

	snprintf(mode, len, "%s", env != NULL ? env : "ok");
	snprintf(path, sizeof(path), "%s/sign-mode", dir);
	if ((f = fopen(path, "r")) == NULL)
		return;
	if (fgets(mode, (int)len, f) == NULL)
		snprintf(mode, len, "ok");
	fclose(f);
	mode[strcspn(mode, "\n")] = '\0';
}

/* Counts one SIGN in DIR/sign-count (with its data); under mu. */
static void
count_sign(const unsigned char *data, size_t len)
{
	char path[4096], tmp[4200];
	FILE *f;
	size_t i;

	sign_count++;
	snprintf(path, sizeof(path), "%s/sign-count", dir);
	snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	if ((f = fopen(tmp, "w")) == NULL)
		die("cannot write sign-count");
	fprintf(f, "%lu ", sign_count);
	for (i = 0; i < len; i++)
		fprintf(f, "%02x", data[i]);
	fprintf(f, "\n");
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		die("cannot write sign-count");
}

static const EVP_MD *
pss_md(uint8_t hash)
{
	return hash == P11_HASH_SHA256	 ? EVP_sha256()
	       : hash == P11_HASH_SHA384 ? EVP_sha384()
	       : hash == P11_HASH_SHA512 ? EVP_sha512()
					 : NULL;
}

/* Signs as a PKCS#11 token does: ECDSA answers r || s, not DER. */
static int
sign_data(const struct msg_p11_sign_req *req, unsigned char *sig, size_t *sig_len)
{
	EVP_PKEY *pkey = req->key == H_KEY_RSA ? keys[0].pkey : keys[1].pkey;
	unsigned char der[256];
	size_t der_len = sizeof(der);
	const unsigned char *p = der;
	ECDSA_SIG *es = NULL;
	EVP_PKEY_CTX *ctx;
	int ok = 0;

	if ((ctx = EVP_PKEY_CTX_new(pkey, NULL)) == NULL || EVP_PKEY_sign_init(ctx) != 1)
		goto out;
	if (req->mech == P11_MECH_RSA_PKCS) {
		if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
		    EVP_PKEY_sign(ctx, sig, sig_len, req->data, req->data_len) != 1)
			goto out;
	} else if (req->mech == P11_MECH_RSA_PSS) {
		if (pss_md(req->hash) == NULL ||
		    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_signature_md(ctx, pss_md(req->hash)) != 1 ||
		    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, pss_md(req->hash)) != 1 ||
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
		    EVP_PKEY_sign(ctx, sig, sig_len, req->data, req->data_len) != 1)
			goto out;
	} else {
		if (EVP_PKEY_sign(ctx, der, &der_len, req->data, req->data_len) != 1 ||
		    (es = d2i_ECDSA_SIG(NULL, &p, (long)der_len)) == NULL || *sig_len < 64 ||
		    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
		    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
			goto out;
		*sig_len = 64;
	}
	ok = 1;
out:
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : -1;
}

/* The reply goes into out; hang and exit send none. */
static void
do_sign(struct wbuf *in, struct wbuf *out)
{
	struct msg_p11_sign_req req;
	unsigned char sig[MTLS_SIG_MAX];
	struct msg_sign_resp resp = { sig, sizeof(sig) };
	char mode[STUB_MODE_MAX];
	unsigned long rv = 0;
	int code = 0, in_now, rsa_mech;

	if (msg_p11_sign_req_get(in, &req) != 0) {
		put_error(out, MTLS_ERR_BAD_REQUEST, 0, "malformed SIGN");
		return;
	}
	pthread_mutex_lock(&mu);
	count_sign(req.data, req.data_len);
	in_now = logged_in;
	pthread_mutex_unlock(&mu);
	sign_mode(mode, sizeof(mode));
	rsa_mech = req.mech == P11_MECH_RSA_PKCS || req.mech == P11_MECH_RSA_PSS;
	if (strcmp(mode, "hang") == 0 || (strcmp(mode, "hang rsa") == 0 && req.key == H_KEY_RSA) ||
	    (strcmp(mode, "hang ec") == 0 && req.key == H_KEY_EC)) {
		for (;;)
			pause();
	} else if (strcmp(mode, "exit") == 0) {
		_exit(3);
	} else if (strcmp(mode, "garbage") == 0) {
		if (wbuf_put_u8(out, 0x55) != 0 || wbuf_put_cstring(out, "garbage") != 0)
			die("cannot encode garbage");
	} else if (strcmp(mode, "badsig") == 0) {
		/* A string that says 4000 bytes and has 3. */
		if (wbuf_put_u8(out, P11_SIGN | MSG_REPLY) != 0 || wbuf_put_u32(out, 4000) != 0 ||
		    wbuf_put(out, "abc", 3) != 0)
			die("cannot encode badsig");
	} else if (sscanf(mode, "error %d %lx", &code, &rv) >= 1) {
		put_error(out, code, (uint32_t)rv, "stub error");
	} else if (req.slot != STUB_SLOT) {
		put_error(out, MTLS_ERR_TOKEN, CKR_SLOT_ID_INVALID, "no such slot");
	} else if (!in_now) {
		put_error(out, MTLS_ERR_LOGIN_REQUIRED, CKR_USER_NOT_LOGGED_IN, "C_SignInit");
	} else if (!rsa_mech && req.mech != P11_MECH_ECDSA) {
		put_error(out, MTLS_ERR_TOKEN, CKR_MECHANISM_INVALID, "C_SignInit");
	} else if ((req.key != H_KEY_RSA && req.key != H_KEY_EC) ||
		   rsa_mech != (req.key == H_KEY_RSA)) {
		put_error(out, MTLS_ERR_TOKEN, CKR_KEY_HANDLE_INVALID, "C_SignInit");
	} else if (sign_data(&req, sig, &resp.sig_len) != 0) {
		put_error(out, MTLS_ERR_TOKEN, CKR_FUNCTION_FAILED, "C_Sign");
	} else if (msg_p11_sign_resp_put(out, &resp) != 0) {
		die("cannot encode SIGN");
	}
	msg_p11_sign_req_clear(&req);
}

static void
dispatch(struct wbuf *in, struct wbuf *out)
{
	uint8_t type;

	if (wbuf_get_u8(in, &type) != 0) {
		put_error(out, MTLS_ERR_BAD_REQUEST, 0, "empty request");
		return;
	}
	switch (type) {
	case P11_TOKENS:
		if (wbuf_expect_end(in) != 0)
			put_error(out, MTLS_ERR_TRAILING_DATA, 0, "TOKENS");
		else
			do_tokens(out);
		return;
	case P11_OBJECTS: do_objects(in, out); return;
	case P11_LOGIN: do_login(in, out); return;
	case P11_LOGOUT: do_logout(in, out); return;
	case P11_SIGN: do_sign(in, out); return;
	case P11_REINIT:
		pthread_mutex_lock(&mu);
		logged_in = 0;
		pthread_mutex_unlock(&mu);
		if (wbuf_put_u8(out, P11_REINIT | MSG_REPLY) != 0)
			die("cannot encode REINIT");
		return;
	default:
		/* SET_PIN and whatever comes later: not a stub's business. */
		put_error(out, MTLS_ERR_UNSUPPORTED_MESSAGE, CKR_FUNCTION_NOT_SUPPORTED,
			  "not in the stub");
	}
}

static void *
serve(void *arg)
{
	int fd = (int)(long)arg;
	struct wbuf *in = wbuf_new(), *out = wbuf_new();
	struct frame_rx rx;

	frame_rx_reset(&rx);
	while (in != NULL && out != NULL) {
		if (frame_read(fd, &rx, in, MTLS_FRAME_MAX, -1, -1) != 0)
			break;
		wbuf_reset(out);
		dispatch(in, out);
		wbuf_reset(in);
		if (frame_write(fd, out, -1) != 0)
			break;
	}
	wbuf_free(in);
	wbuf_free(out);
	close(fd);
	return NULL;
}

int
main(int argc, char **argv)
{
	pthread_t th[CHANNELS_MAX];
	unsigned long k = 1;
	const char *env;
	int i, argi = 1;

	signal(SIGPIPE, SIG_IGN);
	if (argc - argi >= 2 && strcmp(argv[argi], "--channels") == 0) {
		k = strtoul(argv[argi + 1], NULL, 10);
		argi += 2;
	}
	if (argc - argi != 1 || k == 0 || k > CHANNELS_MAX)
		die("usage: p11-stub [--channels K] MODULE");
	if ((dir = getenv("MTLS_SHIM_STUB_DIR")) == NULL || dir[0] == '\0')
		die("MTLS_SHIM_STUB_DIR is not set");
	if ((env = getenv("MTLS_SHIM_STUB_PIN")) != NULL)
		pin = env;
	load_key(&keys[0]);
	load_key(&keys[1]);
	/* A restarted stub counts on from what the last one wrote. */
	sign_count = stub_sign_count(dir, NULL, 0);
	for (i = 0; i < (int)k; i++)
		if (pthread_create(&th[i], NULL, serve, (void *)(long)(FIRST_FD + i)) != 0)
			die("cannot start a channel thread");
	for (i = 0; i < (int)k; i++)
		(void)pthread_join(th[i], NULL);
	for (i = 0; i < 2; i++) {
		EVP_PKEY_free(keys[i].pkey);
		OPENSSL_free(keys[i].cert_der);
	}
	return 0;
}
