/*
 * fuzz_usermap - a client certificate, as the PAM module meets it.
 *
 * Input: DER bytes.  certval_parse_der() must take exactly one whole
 * certificate or nothing, and what it takes must encode to bytes that
 * parse and encode to themselves.  Then usermap_check() with every method:
 *   CN, UID     a certificate with exactly one clean such attribute maps to
 *               that name (when it is a usable user name) and to nothing
 *               else;
 *   EMAIL, UPN  any verdict, no crash;
 *   MAPFILE     a root-owned map file listing the certificate by its
 *               RFC 2253 subject for "alice" and by fingerprint for "bob"
 *               maps to both and to no one else;
 *   AUTHORIZED  the user's file holding the certificate as PEM, or its key
 *               as a sha256: line, grants; an empty file does not.
 * The files live in a private temporary directory made once per process;
 * under libFuzzer the file methods run for one input in eight (below).
 */
#include "config.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certval.h"
#include "fuzz.h"
#include "mtls-agent.h"
#include "usermap.h"

static char dir[256];
static char me[64];

static void
remove_dir(void)
{
	char path[512];
	static const char *const names[] = { "map", "pem", "spki", "empty" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s.%s", dir, me, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void
setup(void)
{
	const char *tmp = getenv("TMPDIR");
	struct passwd *pw;

	if (dir[0] != '\0')
		return;
	FUZZ_CHECK((pw = getpwuid(geteuid())) != NULL);
	FUZZ_CHECK(strlen(pw->pw_name) < sizeof(me));
	snprintf(me, sizeof(me), "%s", pw->pw_name);
	snprintf(dir, sizeof(dir), "%s/fuzz-usermap.XXXXXX",
		 tmp != NULL && tmp[0] == '/' ? tmp : "/tmp");
	FUZZ_CHECK(mkdtemp(dir) != NULL);
	atexit(remove_dir);
}

static void
write_file(const char *name, const void *p, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.%s", dir, me, name);
	FUZZ_CHECK((f = fopen(path, "w")) != NULL);
	FUZZ_CHECK(len == 0 || fwrite(p, 1, len, f) == len);
	FUZZ_CHECK(fclose(f) == 0);
	FUZZ_CHECK(chmod(path, 0600) == 0);
}

static int
check(X509 *x, const char *user, enum usermap_method m, const char *file)
{
	struct usermap_opts o = { .method = m };
	char why[256], path[512];
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, file != NULL ? file : "");
	if (m == USERMAP_MAPFILE)
		o.map_file = path;
	if (m == USERMAP_AUTHORIZED)
		o.authorized_file = path;
	memset(why, 'x', sizeof(why));
	r = usermap_check(x, user, &o, why, sizeof(why));
	FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
	FUZZ_CHECK(r == 0 || r == MTLS_ERR_USER_MISMATCH || r == MTLS_ERR_CONFIG ||
		   r == MTLS_ERR_ALLOC);
	/* A refusal always says why (the PAM module logs it). */
	FUZZ_CHECK(r == 0 || why[0] != '\0');
	return r;
}

/* What usermap_check() accepts as a user name at all. */
static int
usable_user(const char *u)
{
	size_t i, n = strlen(u);

	if (n == 0 || n > 256 || u[0] == '.' || u[0] == '-' || strchr(u, '/') != NULL)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f)
			return 0;
	return 1;
}

static void
check_attr(X509 *x, int nid, enum usermap_method m)
{
	X509_NAME *name = X509_get_subject_name(x);
	unsigned char *u = NULL;
	char *longer;
	int i, n;

	FUZZ_CHECK(check(x, "alice", m, NULL) != MTLS_ERR_CONFIG);
	if ((i = X509_NAME_get_index_by_NID(name, nid, -1)) < 0 ||
	    X509_NAME_get_index_by_NID(name, nid, i) >= 0)
		return;
	n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
	if (n < 0)
		return;
	if (memchr(u, '\0', (size_t)n) == NULL && usable_user((char *)u)) {
		FUZZ_CHECK(check(x, (char *)u, m, NULL) == 0);
		FUZZ_CHECK((longer = malloc((size_t)n + 2)) != NULL);
		memcpy(longer, u, (size_t)n);
		memcpy(longer + n, "x", 2);
		FUZZ_CHECK(check(x, longer, m, NULL) == MTLS_ERR_USER_MISMATCH);
		free(longer);
	} else if (memchr(u, '\0', (size_t)n) != NULL && u[0] != '\0' && usable_user((char *)u)) {
		/* "alice\0evil" is not alice. */
		FUZZ_CHECK(check(x, (char *)u, m, NULL) == MTLS_ERR_USER_MISMATCH);
	}
	OPENSSL_free(u);
}

static void
hex(char *out, const unsigned char *md, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static int
clean_subject(const char *s)
{
	size_t i;

	if (s[0] == '\0' || s[0] == '#' || s[0] == ' ')
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return 0;
	return s[i - 1] != ' ';
}

static void
check_mapfile(X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char fp[2 * EVP_MAX_MD_SIZE + 1], *subject = NULL, *text;
	BIO *bio;
	long n;
	int with_subject;

	FUZZ_CHECK(X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32);
	hex(fp, md, mdlen);
	FUZZ_CHECK((bio = BIO_new(BIO_s_mem())) != NULL);
	if (X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_get_mem_data(bio, &subject)) >= 0) {
		FUZZ_CHECK((subject = strndup(subject, (size_t)n)) != NULL);
	} else {
		subject = NULL;
	}
	BIO_free(bio);
	with_subject = subject != NULL && clean_subject(subject);
	FUZZ_CHECK((text = malloc((subject != NULL ? strlen(subject) : 0) + 200)) != NULL);
	sprintf(text, "# fuzz\n%s%s\nSHA256:%s\tbob\n", with_subject ? subject : "",
		with_subject ? " alice" : "", fp);
	write_file("map", text, strlen(text));
	snprintf(fp, sizeof(fp), "%s.map", me);
	FUZZ_CHECK(check(x, "bob", USERMAP_MAPFILE, fp) == 0);
	if (with_subject)
		FUZZ_CHECK(check(x, "alice", USERMAP_MAPFILE, fp) == 0);
	FUZZ_CHECK(check(x, "carol", USERMAP_MAPFILE, fp) == MTLS_ERR_USER_MISMATCH);
	free(text);
	free(subject);
}

static void
check_authorized(X509 *x)
{
	unsigned char *spki = NULL, md[32];
	unsigned int mdlen = 0;
	char line[80], *pem;
	BIO *bio;
	long n;
	int len;

	FUZZ_CHECK((bio = BIO_new(BIO_s_mem())) != NULL);
	FUZZ_CHECK(PEM_write_bio_X509(bio, x) == 1);
	FUZZ_CHECK((n = BIO_get_mem_data(bio, &pem)) > 0);
	write_file("pem", pem, (size_t)n);
	BIO_free(bio);
	FUZZ_CHECK(check(x, me, USERMAP_AUTHORIZED, "%u.pem") == 0);

	FUZZ_CHECK((len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki)) > 0);
	FUZZ_CHECK(EVP_Digest(spki, (size_t)len, md, &mdlen, EVP_sha256(), NULL) == 1);
	OPENSSL_free(spki);
	memcpy(line, "  sha256:", 9);
	hex(line + 9, md, sizeof(md));
	strcat(line, "\n");
	write_file("spki", line, strlen(line));
	FUZZ_CHECK(check(x, me, USERMAP_AUTHORIZED, "%u.spki") == 0);

	write_file("empty", "", 0);
	FUZZ_CHECK(check(x, me, USERMAP_AUTHORIZED, "%u.empty") == MTLS_ERR_USER_MISMATCH);
	FUZZ_CHECK(check(x, me, USERMAP_AUTHORIZED, "%u.missing") == MTLS_ERR_USER_MISMATCH);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *der = NULL, *der2 = NULL;
	X509 *x, *y;
	int n, m;

	if (size > 64 * 1024)
		return 0;
	setup();
	if ((x = certval_parse_der(data, size)) == NULL)
		return 0;
	/* Only DER is taken: what parses re-encodes to the input itself. */
	FUZZ_CHECK((n = i2d_X509(x, &der)) > 0 && (size_t)n == size &&
		   memcmp(der, data, size) == 0);
	FUZZ_CHECK((y = certval_parse_der(der, (size_t)n)) != NULL);
	FUZZ_CHECK((m = i2d_X509(y, &der2)) == n && memcmp(der, der2, (size_t)n) == 0);
	X509_free(y);
	OPENSSL_free(der2);
	OPENSSL_free(der);

	check_attr(x, NID_commonName, USERMAP_CN);
	check_attr(x, NID_userId, USERMAP_UID);
	FUZZ_CHECK(check(x, "alice", USERMAP_EMAIL, NULL) != MTLS_ERR_CONFIG);
	FUZZ_CHECK(check(x, "alice", USERMAP_UPN, NULL) != MTLS_ERR_CONFIG);
	/* The file methods cost a file write and two 1 MiB read buffers per
	 * check: under libFuzzer they run for one input in eight, chosen by
	 * the input's bytes so that a crash replays; the seed replay (make
	 * check, built with the driver) runs them on every input. */
#ifndef FUZZ_TARGET
	if ((data[size / 2] & 7) == 0)
#endif
	{
		/* The map file must be root's: only root can make one here. */
		if (geteuid() == 0)
			check_mapfile(x);
		check_authorized(x);
	}
	/* Users the module must refuse before looking at anything. */
	FUZZ_CHECK(check(x, "../root", USERMAP_CN, NULL) == MTLS_ERR_USER_MISMATCH);
	FUZZ_CHECK(check(x, "", USERMAP_CN, NULL) == MTLS_ERR_USER_MISMATCH);
	X509_free(x);
	return 0;
}
