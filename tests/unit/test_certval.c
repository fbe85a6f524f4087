/*
 * test_certval.c - unit tests of certificate validation (certval.c).
 *
 * The group setup makes a CA, leaf certificates (with tests/fixtures/mkcert,
 * $MKCERT), an intermediate CA and CRLs (with the OpenSSL API: mkcert makes
 * only end-entity certificates) in a mkdtemp directory.
 *
 * OCSP answers come from the real `openssl ocsp` responder code, run once
 * per request (-reqin/-respout) behind a small HTTP front end that this
 * test forks on 127.0.0.1 with a kernel-chosen port.  (`openssl ocsp -port`
 * of OpenSSL 3.0 accepts only a port number and listens on every address;
 * the front end keeps the test on loopback and lets it misbehave on
 * purpose: drop the nonce, replay an old answer, stall.)  Each OCSP test
 * starts its own responder; the teardown kills and reaps it.
 *
 * Every refusal is checked for its exact error code; each has a twin that
 * passes with the same certificate once the check in question is switched
 * off or satisfied, so a removed check makes a test fail.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certval.h"
#include "mtls-agent.h"

#define DAY (24L * 3600)

static char dir[64];
static char why[512];

/* --- helpers ------------------------------------------------------------- */

/* dir/name in one of 64 rotating buffers (single-threaded tests); what
 * must live longer is copied. */
static const char *
F(const char *name)
{
	static char bufs[64][256];
	static int i;
	char *b = bufs[i++ % 64];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

static int
run(const char *const argv[], int quiet)
{
	pid_t pid;
	int st, fd;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		if (quiet && (fd = open("/dev/null", O_WRONLY)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* mkcert issue by `ca` (ca.pem/ca.key style prefix) with extra options. */
static int
issue(const char *ca, const char *name, const char *subj, ...)
{
	char cacert[64], cakey[64], out[64], key[64];
	const char *argv[32];
	const char *a;
	va_list ap;
	int n = 0;

	snprintf(cacert, sizeof(cacert), "%s.pem", ca);
	snprintf(cakey, sizeof(cakey), "%s.key", ca);
	snprintf(out, sizeof(out), "%s.pem", name);
	snprintf(key, sizeof(key), "%s.key", name);
	argv[n++] = getenv("MKCERT");
	argv[n++] = "issue";
	argv[n++] = "--ca-cert";
	argv[n++] = F(cacert);
	argv[n++] = "--ca-key";
	argv[n++] = F(cakey);
	argv[n++] = "--key-out";
	argv[n++] = F(key);
	argv[n++] = "--out";
	argv[n++] = F(out);
	argv[n++] = "--subj";
	argv[n++] = subj;
	va_start(ap, subj);
	while ((a = va_arg(ap, const char *)) != NULL && n < 30)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	return run(argv, 0);
}

static X509 *
load_cert(const char *name)
{
	X509 *x = NULL;
	FILE *f;

	if ((f = fopen(F(name), "r")) != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	return x;
}

static EVP_PKEY *
load_key(const char *name)
{
	EVP_PKEY *k = NULL;
	FILE *f;

	if ((f = fopen(F(name), "r")) != NULL) {
		k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	return k;
}

static int
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *v)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, v);
	int ok = e != NULL && X509_add_ext(x, e, -1);

	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

/*
 * A certificate made with the API, for what mkcert does not make: CA
 * certificates issued by another CA, odd validity, an AIA OCSP URL.
 * `issuer` is a name prefix (issuer.pem/.key); the new pair is name.pem/.key.
 */
static int
api_cert(const char *issuer, const char *name, const char *cn, int is_ca, long nb, long na,
	 long serial, const char *aia)
{
	char b[128];
	X509 *ic = NULL, *x = NULL;
	EVP_PKEY *ik = NULL, *k = NULL;
	X509V3_CTX ctx;
	FILE *f = NULL;
	int r = -1;

	snprintf(b, sizeof(b), "%s.pem", issuer);
	if ((ic = load_cert(b)) == NULL)
		goto out;
	snprintf(b, sizeof(b), "%s.key", issuer);
	if ((ik = load_key(b)) == NULL || (k = EVP_EC_gen("P-256")) == NULL ||
	    (x = X509_new()) == NULL)
		goto out;
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), serial) ||
	    !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ic)) || !X509_set_pubkey(x, k) ||
	    X509_gmtime_adj(X509_getm_notBefore(x), nb) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), na) == NULL)
		goto out;
	X509V3_set_ctx(&ctx, ic, x, NULL, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints,
		    is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE") != 0 ||
	    add_ext(x, &ctx, NID_key_usage,
		    is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") != 0 ||
	    (!is_ca && add_ext(x, &ctx, NID_ext_key_usage, "clientAuth") != 0) ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") != 0 ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") != 0)
		goto out;
	if (aia != NULL) {
		snprintf(b, sizeof(b), "OCSP;URI:%s", aia);
		if (add_ext(x, &ctx, NID_info_access, b) != 0)
			goto out;
	}
	if (X509_sign(x, ik, EVP_sha256()) <= 0)
		goto out;
	snprintf(b, sizeof(b), "%s.pem", name);
	if ((f = fopen(F(b), "w")) == NULL || !PEM_write_X509(f, x))
		goto out;
	fclose(f);
	snprintf(b, sizeof(b), "%s.key", name);
	if ((f = fopen(F(b), "w")) == NULL ||
	    !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL))
		goto out;
	r = 0;
out:
	if (f != NULL)
		fclose(f);
	X509_free(x);
	X509_free(ic);
	EVP_PKEY_free(k);
	EVP_PKEY_free(ik);
	return r;
}

/*
 * A CRL by `ca` (prefix), signed with `signer`'s key (normally the same),
 * valid from now+last to now+next, revoking the given serials.
 */
static int
make_crl(const char *out, const char *ca, const char *signer, long last, long next,
	 const long *serials, int n)
{
	char b[128];
	X509 *cac = NULL;
	EVP_PKEY *key = NULL;
	X509_CRL *crl = NULL;
	X509_REVOKED *rev = NULL;
	ASN1_TIME *t = NULL;
	ASN1_INTEGER *num = NULL;
	X509V3_CTX ctx;
	X509_EXTENSION *e = NULL;
	FILE *f = NULL;
	int r = -1, i;

	snprintf(b, sizeof(b), "%s.pem", ca);
	if ((cac = load_cert(b)) == NULL)
		goto out;
	snprintf(b, sizeof(b), "%s.key", signer);
	if ((key = load_key(b)) == NULL || (crl = X509_CRL_new()) == NULL ||
	    (t = ASN1_TIME_new()) == NULL || (num = ASN1_INTEGER_new()) == NULL)
		goto out;
	if (!X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(cac)) ||
	    X509_gmtime_adj(t, last) == NULL || !X509_CRL_set1_lastUpdate(crl, t) ||
	    X509_gmtime_adj(t, next) == NULL || !X509_CRL_set1_nextUpdate(crl, t))
		goto out;
	for (i = 0; i < n; i++) {
		if ((rev = X509_REVOKED_new()) == NULL || !ASN1_INTEGER_set(num, serials[i]) ||
		    !X509_REVOKED_set_serialNumber(rev, num) || X509_gmtime_adj(t, -DAY) == NULL ||
		    !X509_REVOKED_set_revocationDate(rev, t) || !X509_CRL_add0_revoked(crl, rev))
			goto out;
		rev = NULL;
	}
	X509V3_set_ctx(&ctx, cac, NULL, NULL, crl, 0);
	if ((e = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always")) ==
		NULL ||
	    !X509_CRL_add_ext(crl, e, -1) || !ASN1_INTEGER_set(num, 1) ||
	    !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0))
		goto out;
	if (!X509_CRL_sort(crl) || X509_CRL_sign(crl, key, EVP_sha256()) <= 0)
		goto out;
	if ((f = fopen(F(out), "w")) == NULL || !PEM_write_X509_CRL(f, crl))
		goto out;
	r = 0;
out:
	if (f != NULL)
		fclose(f);
	X509_EXTENSION_free(e);
	X509_REVOKED_free(rev);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	EVP_PKEY_free(key);
	X509_free(cac);
	return r;
}

static int
write_file(const char *name, const char *text)
{
	FILE *f = fopen(F(name), "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static int
concat(const char *out, const char *a, const char *b)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "cat '%s' '%s' > '%s'", F(a), F(b), F(out));
	return system(cmd) == 0 ? 0 : -1;
}

static STACK_OF(X509) * chain_of(const char *name)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	X509 *x = load_cert(name);

	if (sk == NULL || x == NULL || !sk_X509_push(sk, x)) {
		X509_free(x);
		sk_X509_free(sk);
		return NULL;
	}
	return sk;
}

/* Validates dir/name with `o`; the result code. */
static int
check(const char *name, STACK_OF(X509) * chain, const struct certval_opts *o)
{
	X509 *x = load_cert(name);
	int r;

	assert_non_null(x);
	r = certval_verify(x, chain, o, why, sizeof(why));
	X509_free(x);
	return r;
}

static void
opts(struct certval_opts *o)
{
	static char ca[256];

	certval_opts_init(o);
	snprintf(ca, sizeof(ca), "%s", F("ca.pem"));
	o->ca_file = ca;
}

/* --- OCSP responder front end --------------------------------------------- */

enum shim_mode { SHIM_NORMAL, SHIM_NO_NONCE, SHIM_REPLAY, SHIM_WRONG_SIGNER, SHIM_STALL };

static pid_t shim_pid = -1;
static int shim_port;
static int refused_fd = -1;

static ssize_t
read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, buf + got, len - got);
		if (n <= 0)
			return n < 0 ? -1 : (ssize_t)got;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Removes the nonce from the request so the answer goes without one. */
static void
strip_nonce(const char *path)
{
	OCSP_REQUEST *req = NULL;
	BIO *bio;
	int i;

	if ((bio = BIO_new_file(path, "rb")) == NULL)
		return;
	req = d2i_OCSP_REQUEST_bio(bio, NULL);
	BIO_free(bio);
	if (req == NULL)
		return;
	if ((i = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1)) >= 0)
		X509_EXTENSION_free(OCSP_REQUEST_delete_ext(req, i));
	if ((bio = BIO_new_file(path, "wb")) != NULL) {
		i2d_OCSP_REQUEST_bio(bio, req);
		BIO_free(bio);
	}
	OCSP_REQUEST_free(req);
}

/* The child: one HTTP/1.0 POST per connection, answered by openssl ocsp. */
static void
shim_serve(int s, enum shim_mode mode)
{
	char hdr[4096], req[64], resp[64], *p, *body = NULL, out[256];
	const char *signer = mode == SHIM_WRONG_SIGNER ? "other" : "ca";
	char rsigner[128], rkey[128];
	size_t hl, blen;
	ssize_t n;
	long clen;
	int c, k, served = 0;
	FILE *f;

	alarm(60); /* never outlive a test that forgot us */
	snprintf(req, sizeof(req), "%s", F("ocsp-req.der"));
	snprintf(resp, sizeof(resp), "%s", F("ocsp-resp.der"));
	snprintf(rsigner, sizeof(rsigner), "%s.pem", F(signer));
	snprintf(rkey, sizeof(rkey), "%s.key", F(signer));
	for (;;) {
		if ((c = accept(s, NULL, NULL)) < 0)
			_exit(1);
		if (mode == SHIM_STALL) {
			sleep(30);
			_exit(0);
		}
		/* Headers, byte by byte up to the blank line. */
		for (hl = 0; hl < sizeof(hdr) - 1; hl++) {
			if (read(c, hdr + hl, 1) != 1)
				_exit(1);
			if (hl >= 3 && memcmp(hdr + hl - 3, "\r\n\r\n", 4) == 0) {
				hl++;
				break;
			}
		}
		hdr[hl] = '\0';
		if ((p = strcasestr(hdr, "Content-Length:")) == NULL)
			_exit(1);
		clen = strtol(p + 15, NULL, 10);
		if (clen <= 0 || clen > 65536 || (body = malloc((size_t)clen)) == NULL ||
		    read_full(c, body, (size_t)clen) != clen)
			_exit(1);
		if (!(mode == SHIM_REPLAY && served > 0)) {
			if ((f = fopen(req, "wb")) == NULL)
				_exit(1);
			fwrite(body, 1, (size_t)clen, f);
			fclose(f);
			if (mode == SHIM_NO_NONCE)
				strip_nonce(req);
			{
				const char *argv[] = {
					"openssl",  "ocsp",	 "-index",   F("index.txt"),
					"-CA",	    F("ca.pem"), "-rsigner", rsigner,
					"-rkey",    rkey,	 "-reqin",   req,
					"-respout", resp,	 "-ndays",   "1",
					NULL
				};
				if (run(argv, 1) != 0)
					_exit(1);
			}
		}
		free(body);
		body = NULL;
		if ((f = fopen(resp, "rb")) == NULL)
			_exit(1);
		fseek(f, 0, SEEK_END);
		blen = (size_t)ftell(f);
		rewind(f);
		if ((body = malloc(blen)) == NULL || fread(body, 1, blen, f) != blen)
			_exit(1);
		fclose(f);
		k = snprintf(out, sizeof(out),
			     "HTTP/1.0 200 OK\r\nContent-Type: "
			     "application/ocsp-response\r\nContent-Length: %zu"
			     "\r\n\r\n",
			     blen);
		if (write(c, out, (size_t)k) != k || (n = write(c, body, blen)) < 0 ||
		    (size_t)n != blen)
			_exit(1);
		free(body);
		body = NULL;
		close(c);
		served++;
	}
}

static int
loopback_socket(int *port)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int s;

	if ((s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(s, (struct sockaddr *)&a, &al) != 0) {
		close(s);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return s;
}

static void
shim_start(enum shim_mode mode)
{
	int s = loopback_socket(&shim_port);

	assert_true(s >= 0);
	assert_int_equal(listen(s, 8), 0);
	shim_pid = fork();
	assert_true(shim_pid >= 0);
	if (shim_pid == 0) {
		shim_serve(s, mode);
		_exit(0);
	}
	close(s);
}

static const char *
shim_url(void)
{
	static char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ocsp", shim_port);
	return url;
}

static int
shim_teardown(void **state)
{
	(void)state;
	if (shim_pid > 0) {
		kill(shim_pid, SIGKILL);
		waitpid(shim_pid, NULL, 0);
	}
	shim_pid = -1;
	if (refused_fd >= 0)
		close(refused_fd);
	refused_fd = -1;
	return 0;
}

/* --- group setup ------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
group_teardown(void **state)
{
	(void)state;
	if (dir[0] != '\0')
		(void)nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static int
group_setup(void **state)
{
	char *mk = getenv("MKCERT");
	char ca_dir[128], line[512];
	long revoked[] = { 0x1002 }, inter_revoked[] = { 0x2001 };

	(void)state;
	if (mk == NULL) {
		fprintf(stderr, "MKCERT not set (run through make check)\n");
		return -1;
	}
	snprintf(dir, sizeof(dir), "/tmp/test_certval.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	{
		const char *ca[] = { mk,	   "ca",
				     "--key-out",  F("ca.key"),
				     "--cert-out", F("ca.pem"),
				     "--subj",	   "/O=mtls-agent tests/CN=Test Root CA",
				     NULL };
		const char *other[] = { mk,	      "ca",
					"--key-out",  F("other.key"),
					"--cert-out", F("other.pem"),
					"--subj",     "/O=mtls-agent tests/CN=Other CA",
					NULL };
		if (run(ca, 0) != 0 || run(other, 0) != 0)
			goto fail;
	}
	if (issue("ca", "good", "/O=mtls-agent tests/CN=good", "--serial", "4097", NULL) != 0 ||
	    issue("ca", "revoked", "/O=mtls-agent tests/CN=revoked", "--serial", "4098", NULL) !=
		0 ||
	    issue("ca", "unknown", "/O=mtls-agent tests/CN=unknown-to-ocsp", "--serial", "4100",
		  NULL) != 0 ||
	    issue("ca", "expired", "/O=mtls-agent tests/CN=expired", "--not-before", "-3000",
		  "--not-after", "-600", NULL) != 0 ||
	    issue("ca", "notyet", "/O=mtls-agent tests/CN=notyet", "--not-before", "3600",
		  "--not-after", "7200", NULL) != 0 ||
	    issue("other", "stranger", "/O=mtls-agent tests/CN=stranger", NULL) != 0 ||
	    issue("ca", "server", "/O=mtls-agent tests/CN=server", "--eku", "serverAuth", NULL) !=
		0 ||
	    issue("ca", "noeku", "/O=mtls-agent tests/CN=noeku", "--eku", "none", NULL) != 0 ||
	    issue("ca", "nods", "/O=mtls-agent tests/CN=nods", "--no-digital-signature", NULL) != 0)
		goto fail;
	/* Intermediate CAs: good, expired, revoked by the root's CRL. */
	if (api_cert("ca", "inter", "Test Intermediate", 1, -3600, 30 * DAY, 0x2000, NULL) != 0 ||
	    api_cert("ca", "inter-old", "Old Intermediate", 1, -10 * DAY, -DAY, 0x2002, NULL) !=
		0 ||
	    api_cert("ca", "inter-bad", "Revoked Intermediate", 1, -3600, 30 * DAY, 0x2001, NULL) !=
		0 ||
	    issue("inter", "leaf2", "/O=mtls-agent tests/CN=leaf2", NULL) != 0 ||
	    issue("inter-old", "leaf-old", "/O=mtls-agent tests/CN=leaf-old", NULL) != 0 ||
	    issue("inter-bad", "leaf-bad", "/O=mtls-agent tests/CN=leaf-bad", NULL) != 0)
		goto fail;
	/* CRLs. */
	if (make_crl("crl.pem", "ca", "ca", -3600, DAY, revoked, 1) != 0 ||
	    make_crl("crl-old.pem", "ca", "ca", -3 * DAY, -DAY, revoked, 1) != 0 ||
	    make_crl("crl-forged.pem", "ca", "other", -3600, DAY, NULL, 0) != 0 ||
	    make_crl("crl-other.pem", "other", "other", -3600, DAY, NULL, 0) != 0 ||
	    make_crl("crl-inter-revoked.pem", "ca", "ca", -3600, DAY, inter_revoked, 1) != 0 ||
	    make_crl("crl-inter.pem", "inter", "inter", -3600, DAY, NULL, 0) != 0 ||
	    concat("crl-both.pem", "crl-inter-revoked.pem", "crl-inter.pem") != 0)
		goto fail;
	snprintf(ca_dir, sizeof(ca_dir), "%s", F("crldir"));
	if (mkdir(ca_dir, 0755) != 0 || write_file("crldir/README", "notes\n") ||
	    concat("crldir/root.crl", "crl.pem", "crldir/README") != 0)
		goto fail;
	/* A hashed CA directory. */
	snprintf(ca_dir, sizeof(ca_dir), "%s", F("cadir"));
	if (mkdir(ca_dir, 0755) != 0 || concat("cadir/root.pem", "ca.pem", "crldir/README") != 0)
		goto fail;
	{
		const char *rehash[] = { "openssl", "rehash", ca_dir, NULL };
		if (run(rehash, 1) != 0)
			goto fail;
	}
	/* The OCSP responder's database: good, revoked, and the AIA leaf. */
	snprintf(line, sizeof(line),
		 "V\t491231235959Z\t\t1001\tunknown\t/CN=good\n"
		 "R\t491231235959Z\t240101000000Z,keyCompromise\t1002\tunknown\t"
		 "/CN=revoked\n"
		 "V\t491231235959Z\t\t1003\tunknown\t/CN=aia\n");
	if (write_file("index.txt", line) != 0)
		goto fail;
	return 0;
fail:
	group_teardown(state);
	return -1;
}

/* --- chain and validity --------------------------------------------------- */

static void
test_good_chain(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_string_equal(why, "");
}

static void
test_no_ca(void **state)
{
	struct certval_opts o;

	(void)state;
	certval_opts_init(&o);
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "no CA configured"));
	o.ca_file = F("missing.pem");
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CONFIG);
	o.ca_file = NULL;
	o.ca_dir = F("missing-dir");
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CONFIG);
}

static void
test_ca_dir(void **state)
{
	struct certval_opts o;

	(void)state;
	certval_opts_init(&o);
	o.ca_dir = F("cadir");
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_int_equal(check("stranger.pem", NULL, &o), MTLS_ERR_CERT_UNTRUSTED);
}

static void
test_expired(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("expired.pem", NULL, &o), MTLS_ERR_CERT_EXPIRED);
	assert_non_null(strstr(why, "CN=expired"));
	/* Valid two hours ago: `at` is honoured, so the refusal above is the
	 * validity check and nothing else. */
	o.at = time(NULL) - 1800;
	assert_int_equal(check("expired.pem", NULL, &o), 0);
}

/* A CA made the usual way, `openssl req -x509` without keyUsage: accepted
 * by default (as nginx and Apache accept it), refused with x509_strict. */
static void
test_ca_without_key_usage(void **state)
{
	const char *req[] = { "openssl",
			      "req",
			      "-x509",
			      "-newkey",
			      "ec",
			      "-pkeyopt",
			      "ec_paramgen_curve:P-256",
			      "-nodes",
			      "-keyout",
			      F("plain-ca.key"),
			      "-out",
			      F("plain-ca.pem"),
			      "-subj",
			      "/CN=Plain CA",
			      "-days",
			      "30",
			      NULL };
	struct certval_opts o;
	X509 *ca;

	(void)state;
	assert_int_equal(run(req, 1), 0);
	assert_non_null(ca = load_cert("plain-ca.pem"));
	/* The point of the test: the CA really has no keyUsage. */
	assert_int_equal(X509_get_extension_flags(ca) & EXFLAG_KUSAGE, 0);
	X509_free(ca);
	assert_int_equal(issue("plain-ca", "plain-leaf", "/O=mtls-agent tests/CN=plain-leaf", NULL),
			 0);
	certval_opts_init(&o);
	o.ca_file = F("plain-ca.pem");
	assert_int_equal(check("plain-leaf.pem", NULL, &o), 0);
	assert_string_equal(why, "");

	o.x509_strict = 1;
	assert_int_equal(check("plain-leaf.pem", NULL, &o), MTLS_ERR_CERT_UNTRUSTED);
	assert_non_null(strstr(why, "key usage"));
	assert_non_null(strstr(why, "CN=Plain CA"));

	/* The leaf's own rules still apply without strictness. */
	o.x509_strict = 0;
	assert_int_equal(issue("plain-ca", "plain-server", "/O=mtls-agent tests/CN=plain-server",
			       "--eku", "serverAuth", NULL),
			 0);
	assert_int_equal(check("plain-server.pem", NULL, &o), MTLS_ERR_CERT_USAGE);
}

static void
test_not_yet_valid(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("notyet.pem", NULL, &o), MTLS_ERR_CERT_NOT_YET_VALID);
	assert_non_null(strstr(why, "CN=notyet"));
	o.at = time(NULL) + 5400;
	assert_int_equal(check("notyet.pem", NULL, &o), 0);
}

static void
test_unknown_ca(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("stranger.pem", NULL, &o), MTLS_ERR_CERT_UNTRUSTED);
	assert_non_null(strstr(why, "CN=stranger"));
	/* A self-signed certificate that is not a configured CA. */
	assert_int_equal(check("other.pem", NULL, &o), MTLS_ERR_CERT_UNTRUSTED);
	/* Passing the foreign CA as an "intermediate" does not make it trusted. */
	{
		STACK_OF(X509) *sk = chain_of("other.pem");

		assert_non_null(sk);
		assert_int_equal(check("stranger.pem", sk, &o), MTLS_ERR_CERT_UNTRUSTED);
		sk_X509_pop_free(sk, X509_free);
	}
	o.ca_file = F("other.pem");
	assert_int_equal(check("stranger.pem", NULL, &o), 0);
}

static void
test_intermediate(void **state)
{
	struct certval_opts o;
	STACK_OF(X509) * sk;

	(void)state;
	opts(&o);
	assert_non_null(sk = chain_of("inter.pem"));
	assert_int_equal(check("leaf2.pem", sk, &o), 0);
	sk_X509_pop_free(sk, X509_free);
	/* Without the intermediate there is no path. */
	assert_int_equal(check("leaf2.pem", NULL, &o), MTLS_ERR_CERT_UNTRUSTED);
	/* An intermediate alone is not a trust anchor: the chain must end at
	 * a self-signed CA of the configured set (no partial chains). */
	{
		static char inter[256];

		snprintf(inter, sizeof(inter), "%s", F("inter.pem"));
		o.ca_file = inter;
		assert_int_equal(check("leaf2.pem", NULL, &o), MTLS_ERR_CERT_UNTRUSTED);
		opts(&o);
	}
	/* An expired CA in the chain: expired, naming the CA. */
	assert_non_null(sk = chain_of("inter-old.pem"));
	assert_int_equal(check("leaf-old.pem", sk, &o), MTLS_ERR_CERT_EXPIRED);
	assert_non_null(strstr(why, "Old Intermediate"));
	o.at = time(NULL) - 3 * DAY;
	/* (the leaf itself is younger than that: not yet valid then) */
	assert_int_equal(check("leaf-old.pem", sk, &o), MTLS_ERR_CERT_NOT_YET_VALID);
	sk_X509_pop_free(sk, X509_free);
}

/* --- key usage ------------------------------------------------------------ */

static void
test_wrong_eku(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("server.pem", NULL, &o), MTLS_ERR_CERT_USAGE);
	assert_non_null(strstr(why, "clientAuth"));
	o.require_client_eku = 0;
	assert_int_equal(check("server.pem", NULL, &o), 0);
}

static void
test_no_eku(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("noeku.pem", NULL, &o), 0);
	o.require_client_eku = 2;
	assert_int_equal(check("noeku.pem", NULL, &o), MTLS_ERR_CERT_USAGE);
	assert_int_equal(check("good.pem", NULL, &o), 0);
}

static void
test_no_digital_signature(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("nods.pem", NULL, &o), MTLS_ERR_CERT_USAGE);
	assert_non_null(strstr(why, "digitalSignature"));
	o.require_digital_signature = 0;
	assert_int_equal(check("nods.pem", NULL, &o), 0);
}

/* --- CRL ------------------------------------------------------------------ */

static void
test_crl_revoked(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	assert_int_equal(check("revoked.pem", NULL, &o), 0); /* no CRL given */
	o.crl_file = F("crl.pem");
	assert_int_equal(check("revoked.pem", NULL, &o), MTLS_ERR_CERT_REVOKED);
	assert_non_null(strstr(why, "CN=revoked"));
	o.crl_required = 1;
	assert_int_equal(check("revoked.pem", NULL, &o), MTLS_ERR_CERT_REVOKED);
	/* The same CRL found in a directory (with a non-CRL file beside it). */
	o.crl_file = NULL;
	o.crl_dir = F("crldir");
	assert_int_equal(check("revoked.pem", NULL, &o), MTLS_ERR_CERT_REVOKED);
}

static void
test_crl_not_listed(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	o.crl_file = F("crl.pem");
	assert_int_equal(check("good.pem", NULL, &o), 0);
	o.crl_required = 1;
	assert_int_equal(check("good.pem", NULL, &o), 0);
	o.crl_file = NULL;
	o.crl_dir = F("crldir");
	assert_int_equal(check("good.pem", NULL, &o), 0);
}

static void
test_crl_expired(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	o.crl_file = F("crl-old.pem");
	o.crl_required = 1;
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	/* A stale CRL is refused even where CRLs are optional. */
	o.crl_required = 0;
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	/* The same certificate with a current CRL passes. */
	o.crl_file = F("crl.pem");
	assert_int_equal(check("good.pem", NULL, &o), 0);
}

static void
test_crl_bad_signature(void **state)
{
	struct certval_opts o;

	(void)state;
	opts(&o);
	o.crl_file = F("crl-forged.pem");
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	o.crl_required = 1;
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
}

static void
test_crl_missing(void **state)
{
	struct certval_opts o;
	STACK_OF(X509) * sk;

	(void)state;
	opts(&o);
	/* Only another CA's CRL: none for ours. */
	o.crl_file = F("crl-other.pem");
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_non_null(strstr(why, "no CRL"));
	o.crl_required = 1;
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	/* crl_required without any CRL source is a configuration error. */
	o.crl_file = NULL;
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CONFIG);
	/* Chain: the root's CRL alone does not cover the intermediate's leaf. */
	assert_non_null(sk = chain_of("inter.pem"));
	o.crl_file = F("crl.pem");
	assert_int_equal(check("leaf2.pem", sk, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	o.crl_file = F("crl-both.pem");
	assert_int_equal(check("leaf2.pem", sk, &o), 0);
	sk_X509_pop_free(sk, X509_free);
	/* A CRL file with no CRL in it. */
	o.crl_file = F("ca.pem");
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CONFIG);
}

static void
test_crl_revoked_intermediate(void **state)
{
	struct certval_opts o;
	STACK_OF(X509) * sk;

	(void)state;
	opts(&o);
	assert_non_null(sk = chain_of("inter-bad.pem"));
	assert_int_equal(check("leaf-bad.pem", sk, &o), 0);
	/* The root's CRL revokes the intermediate: every level is checked,
	 * not only the leaf, even with CRLs optional. */
	o.crl_file = F("crl-inter-revoked.pem");
	assert_int_equal(check("leaf-bad.pem", sk, &o), MTLS_ERR_CERT_REVOKED);
	assert_non_null(strstr(why, "Revoked Intermediate"));
	sk_X509_pop_free(sk, X509_free);
}

/* --- OCSP ----------------------------------------------------------------- */

static void
ocsp_opts(struct certval_opts *o, enum certval_ocsp mode)
{
	opts(o);
	o->ocsp = mode;
	o->ocsp_url = shim_url();
	o->ocsp_timeout = 5;
}

static void
test_ocsp_good(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_NORMAL);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_string_equal(why, "");
	ocsp_opts(&o, CERTVAL_OCSP_SOFT);
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_string_equal(why, "");
}

static void
test_ocsp_aia(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_NORMAL);
	assert_int_equal(api_cert("ca", "aia", "aia", 0, -3600, DAY, 0x1003, shim_url()), 0);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	o.ocsp_url = NULL;
	assert_int_equal(check("aia.pem", NULL, &o), 0);
	/* No URL anywhere: unknown. */
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_non_null(strstr(why, "no OCSP responder"));
}

static void
test_ocsp_revoked(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_NORMAL);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	assert_int_equal(check("revoked.pem", NULL, &o), MTLS_ERR_CERT_REVOKED);
	assert_non_null(strstr(why, "CN=revoked"));
	assert_non_null(strstr(why, "keyCompromise"));
	ocsp_opts(&o, CERTVAL_OCSP_SOFT);
	assert_int_equal(check("revoked.pem", NULL, &o), MTLS_ERR_CERT_REVOKED);
}

static void
test_ocsp_unknown_status(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_NORMAL);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	assert_int_equal(check("unknown.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_non_null(strstr(why, "does not know"));
	ocsp_opts(&o, CERTVAL_OCSP_SOFT);
	assert_int_equal(check("unknown.pem", NULL, &o), 0);
	assert_non_null(strstr(why, "soft-fail"));
}

static void
test_ocsp_unreachable(void **state)
{
	struct certval_opts o;

	(void)state;
	/* Bound, not listening: connection refused, and the port is ours. */
	refused_fd = loopback_socket(&shim_port);
	assert_true(refused_fd >= 0);
	/* (OpenSSL retries a refused connection until the timeout) */
	ocsp_opts(&o, CERTVAL_OCSP_SOFT);
	o.ocsp_timeout = 1;
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_non_null(strstr(why, "OCSP soft-fail"));
	assert_non_null(strstr(why, "unreachable"));
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	o.ocsp_timeout = 1;
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	/* https is refused before any connection, and says so. */
	o.ocsp_url = "https://127.0.0.1:1/";
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_non_null(strstr(why, "http://"));
}

static void
test_ocsp_timeout(void **state)
{
	struct certval_opts o;
	time_t t0;

	(void)state;
	shim_start(SHIM_STALL);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	o.ocsp_timeout = 1;
	t0 = time(NULL);
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_true(time(NULL) - t0 <= 3);
}

static void
test_ocsp_wrong_signer(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_WRONG_SIGNER);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_non_null(strstr(why, "signature"));
	/* A forged "revoked" is not believed either; soft mode lets it by
	 * as unknown. */
	ocsp_opts(&o, CERTVAL_OCSP_SOFT);
	assert_int_equal(check("revoked.pem", NULL, &o), 0);
	assert_non_null(strstr(why, "soft-fail"));
}

static void
test_ocsp_no_nonce(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_NO_NONCE);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_non_null(strstr(why, "nonce"));
	ocsp_opts(&o, CERTVAL_OCSP_SOFT);
	assert_int_equal(check("good.pem", NULL, &o), 0);
	assert_non_null(strstr(why, "no nonce"));
}

static void
test_ocsp_replay(void **state)
{
	struct certval_opts o;

	(void)state;
	shim_start(SHIM_REPLAY);
	ocsp_opts(&o, CERTVAL_OCSP_HARD);
	assert_int_equal(check("good.pem", NULL, &o), 0);
	/* The same (good, correctly signed) answer again: wrong nonce. */
	assert_int_equal(check("good.pem", NULL, &o), MTLS_ERR_CERT_REVOCATION_UNKNOWN);
	assert_non_null(strstr(why, "nonce"));
}

/* --- parsing -------------------------------------------------------------- */

static void
test_parse_der(void **state)
{
	unsigned char *der = NULL, *buf;
	X509 *x = load_cert("good.pem"), *y;
	int n;

	(void)state;
	assert_non_null(x);
	n = i2d_X509(x, &der);
	assert_true(n > 0);
	assert_non_null(y = certval_parse_der(der, (size_t)n));
	X509_free(y);
	/* Trailing byte, truncation, garbage, nothing. */
	assert_non_null(buf = malloc((size_t)n + 1));
	memcpy(buf, der, (size_t)n);
	buf[n] = 0;
	assert_null(certval_parse_der(buf, (size_t)n + 1));
	assert_null(certval_parse_der(buf, (size_t)n - 1));
	memset(buf, 0x41, (size_t)n);
	assert_null(certval_parse_der(buf, (size_t)n));
	assert_null(certval_parse_der(NULL, 0));
	free(buf);
	OPENSSL_free(der);
	X509_free(x);
	/* Verify with no certificate is an argument error, not a crash. */
	{
		struct certval_opts o;

		opts(&o);
		assert_int_equal(certval_verify(NULL, NULL, &o, why, sizeof(why)),
				 MTLS_ERR_INVALID_ARGUMENT);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_chain),
		cmocka_unit_test(test_no_ca),
		cmocka_unit_test(test_ca_dir),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_not_yet_valid),
		cmocka_unit_test(test_ca_without_key_usage),
		cmocka_unit_test(test_unknown_ca),
		cmocka_unit_test(test_intermediate),
		cmocka_unit_test(test_wrong_eku),
		cmocka_unit_test(test_no_eku),
		cmocka_unit_test(test_no_digital_signature),
		cmocka_unit_test(test_crl_revoked),
		cmocka_unit_test(test_crl_not_listed),
		cmocka_unit_test(test_crl_expired),
		cmocka_unit_test(test_crl_bad_signature),
		cmocka_unit_test(test_crl_missing),
		cmocka_unit_test(test_crl_revoked_intermediate),
		cmocka_unit_test_teardown(test_ocsp_good, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_aia, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_revoked, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_unknown_status, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_unreachable, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_timeout, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_wrong_signer, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_no_nonce, shim_teardown),
		cmocka_unit_test_teardown(test_ocsp_replay, shim_teardown),
		cmocka_unit_test(test_parse_der),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
