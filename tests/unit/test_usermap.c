/*
 * test_usermap.c - unit tests of certificate-to-user mapping (usermap.c).
 *
 * Certificates are made by tests/fixtures/mkcert ($MKCERT) in a mkdtemp
 * directory in the group setup.  Every method gets a positive case and a
 * negative one where the certificate maps to somebody else; every file
 * check gets a case that must be refused with the file otherwise valid, so
 * a removed check turns into a passing login and a failing test.
 *
 * Ownership cases need root (chown); they are skipped otherwise.  The map
 * file must be root-owned, so its positive cases need root too.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mtls-agent.h"
#include "usermap.h"

#define UPN_OID "1.3.6.1.4.1.311.20.2.3"

static char dir[64];
static char why[512];
static char me[256];	       /* the user running the test */
static char auth_pattern[512]; /* dir/auth/%u */
static char auth_dir[128];
static char auth_file[512];

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
run(const char *const argv[])
{
	pid_t pid;
	int st;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int
issue(const char *name, const char *subj, const char *san)
{
	char out[256], key[256];
	const char *argv[16];
	int n = 0;

	snprintf(out, sizeof(out), "%s/%s.pem", dir, name);
	snprintf(key, sizeof(key), "%s/%s.key", dir, name);
	argv[n++] = getenv("MKCERT");
	argv[n++] = "issue";
	argv[n++] = "--ca-cert";
	argv[n++] = F("ca.pem");
	argv[n++] = "--ca-key";
	argv[n++] = F("ca.key");
	argv[n++] = "--key-out";
	argv[n++] = key;
	argv[n++] = "--out";
	argv[n++] = out;
	argv[n++] = "--subj";
	argv[n++] = subj;
	if (san != NULL) {
		argv[n++] = "--san";
		argv[n++] = san;
	}
	argv[n] = NULL;
	return run(argv);
}

static X509 *
load_cert(const char *name)
{
	char b[128];
	X509 *x = NULL;
	FILE *f;

	snprintf(b, sizeof(b), "%s.pem", name);
	if ((f = fopen(F(b), "r")) != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	return x;
}

static int
map(const char *cert, const char *user, const struct usermap_opts *o)
{
	X509 *x = load_cert(cert);
	int r;

	assert_non_null(x);
	r = usermap_check(x, user, o, why, sizeof(why));
	X509_free(x);
	return r;
}

static int
by(enum usermap_method m, const char *cert, const char *user)
{
	struct usermap_opts o = { .method = m };

	return map(cert, user, &o);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f;

	(void)unlink(path);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* Appends the PEM of dir/name.pem to `path`. */
static void
append_pem(const char *path, const char *name)
{
	X509 *x = load_cert(name);
	FILE *f;

	assert_non_null(x);
	assert_non_null(f = fopen(path, "a"));
	assert_true(PEM_write_X509(f, x));
	assert_int_equal(fclose(f), 0);
	X509_free(x);
}

static void
hex(const unsigned char *md, size_t n, int colons, int upper, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		out += sprintf(out, upper ? "%s%02X" : "%s%02x", colons && i > 0 ? ":" : "", md[i]);
}

/* sha256 of the certificate DER (fp) or of its SubjectPublicKeyInfo. */
static void
sha256_of(const char *name, int spki, int colons, int upper, char *out)
{
	unsigned char md[32], *der = NULL;
	unsigned int mdlen = 0;
	X509 *x = load_cert(name);
	int n;

	assert_non_null(x);
	if (spki)
		n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	else
		n = i2d_X509(x, &der);
	assert_true(n > 0);
	assert_true(EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL));
	hex(md, 32, colons, upper, out);
	OPENSSL_free(der);
	X509_free(x);
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
	struct passwd *pw;
	const char *mk = getenv("MKCERT");

	(void)state;
	if (mk == NULL) {
		fprintf(stderr, "MKCERT not set (run through make check)\n");
		return -1;
	}
	if ((pw = getpwuid(geteuid())) == NULL)
		return -1;
	snprintf(me, sizeof(me), "%s", pw->pw_name);
	snprintf(dir, sizeof(dir), "/tmp/test_usermap.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	{
		const char *ca[] = { mk,	   "ca",
				     "--key-out",  F("ca.key"),
				     "--cert-out", F("ca.pem"),
				     "--subj",	   "/O=mtls-agent tests/CN=Test Root CA",
				     NULL };
		if (run(ca) != 0)
			goto fail;
	}
	if (issue("alice", "/O=mtls-agent tests/CN=alice", NULL) != 0 ||
	    issue("bob", "/O=mtls-agent tests/CN=bob", NULL) != 0 ||
	    issue("twocn", "/O=mtls-agent tests/CN=alice/CN=bob", NULL) != 0 ||
	    issue("uid", "/O=mtls-agent tests/UID=alice/CN=Alice Example", NULL) != 0 ||
	    issue("twouid", "/UID=alice/UID=bob/CN=x", NULL) != 0 ||
	    issue("email", "/CN=Alice Example",
		  "email:alice@example.com,"
		  "DNS:host.example.com") != 0 ||
	    issue("email-subj", "/CN=Carol/emailAddress=carol@example.com", NULL) != 0 ||
	    issue("email-subj-san", "/CN=Carol/emailAddress=carol@example.com",
		  "DNS:host.example.com") != 0 ||
	    issue("upn", "/CN=Dave Example",
		  "otherName:" UPN_OID ";UTF8:dave@EXAMPLE.COM,"
		  "email:someone@example.com") != 0 ||
	    issue("upn-ia5", "/CN=Dave Example",
		  "otherName:" UPN_OID ";IA5STRING:dave@EXAMPLE.COM") != 0 ||
	    issue("twoupn", "/CN=Dave Example",
		  "otherName:" UPN_OID ";UTF8:dave@EXAMPLE.COM,"
		  "otherName:" UPN_OID ";UTF8:erin@EXAMPLE.COM") != 0 ||
	    issue("wrongoid", "/CN=Dave Example",
		  "otherName:1.3.6.1.4.1.311.20.2.4;UTF8:dave@EXAMPLE.COM") != 0)
		goto fail;
	snprintf(auth_dir, sizeof(auth_dir), "%s/auth", dir);
	snprintf(auth_pattern, sizeof(auth_pattern), "%s/%%u", auth_dir);
	snprintf(auth_file, sizeof(auth_file), "%s/%s", auth_dir, me);
	if (mkdir(auth_dir, 0755) != 0)
		goto fail;
	return 0;
fail:
	group_teardown(state);
	return -1;
}

/* Each authorized-file test starts from a clean, valid directory. */
static int
auth_setup(void **state)
{
	(void)state;
	(void)unlink(auth_file);
	if (chmod(auth_dir, 0755) != 0 || chown(auth_dir, geteuid(), getegid()))
		return -1;
	return 0;
}

/* --- subject attributes ---------------------------------------------------- */

static void
test_cn(void **state)
{
	(void)state;
	assert_int_equal(by(USERMAP_CN, "alice", "alice"), 0);
	assert_int_equal(by(USERMAP_CN, "alice", "bob"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_CN, "bob", "alice"), MTLS_ERR_USER_MISMATCH);
	/* Exact: no prefix, no case folding. */
	assert_int_equal(by(USERMAP_CN, "alice", "alic"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_CN, "alice", "Alice"), MTLS_ERR_USER_MISMATCH);
	/* The CN is not the UID. */
	assert_int_equal(by(USERMAP_UID, "alice", "alice"), MTLS_ERR_USER_MISMATCH);
}

static void
test_two_cns(void **state)
{
	(void)state;
	assert_int_equal(by(USERMAP_CN, "twocn", "alice"), MTLS_ERR_USER_MISMATCH);
	assert_non_null(strstr(why, "more than one"));
	assert_int_equal(by(USERMAP_CN, "twocn", "bob"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_UID, "twouid", "alice"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_UID, "twouid", "bob"), MTLS_ERR_USER_MISMATCH);
}

static void
test_uid(void **state)
{
	(void)state;
	assert_int_equal(by(USERMAP_UID, "uid", "alice"), 0);
	assert_int_equal(by(USERMAP_UID, "uid", "bob"), MTLS_ERR_USER_MISMATCH);
	/* Its CN is "Alice Example", not alice. */
	assert_int_equal(by(USERMAP_CN, "uid", "alice"), MTLS_ERR_USER_MISMATCH);
}

static void
test_email(void **state)
{
	(void)state;
	assert_int_equal(by(USERMAP_EMAIL, "email", "alice"), 0);
	assert_int_equal(by(USERMAP_EMAIL, "email", "alice@example.com"), 0);
	assert_int_equal(by(USERMAP_EMAIL, "email", "bob"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_EMAIL, "email", "alice@example.org"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_EMAIL, "email", "example.com"), MTLS_ERR_USER_MISMATCH);
	/* No SAN at all: the subject emailAddress counts. */
	assert_int_equal(by(USERMAP_EMAIL, "email-subj", "carol"), 0);
	assert_int_equal(by(USERMAP_EMAIL, "email-subj", "dave"), MTLS_ERR_USER_MISMATCH);
	/* A SAN without an email: the subject is not consulted. */
	assert_int_equal(by(USERMAP_EMAIL, "email-subj-san", "carol"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_EMAIL, "alice", "alice"), MTLS_ERR_USER_MISMATCH);
}

static void
test_upn(void **state)
{
	(void)state;
	assert_int_equal(by(USERMAP_UPN, "upn", "dave"), 0);
	assert_int_equal(by(USERMAP_UPN, "upn", "erin"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_UPN, "upn", "dave@EXAMPLE.COM"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_UPN, "upn", "someone"), MTLS_ERR_USER_MISMATCH);
	/* Not a UTF8String; another OID; two UPNs; no SAN. */
	assert_int_equal(by(USERMAP_UPN, "upn-ia5", "dave"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_UPN, "wrongoid", "dave"), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(by(USERMAP_UPN, "twoupn", "dave"), MTLS_ERR_USER_MISMATCH);
	assert_non_null(strstr(why, "more than one"));
	assert_int_equal(by(USERMAP_UPN, "alice", "alice"), MTLS_ERR_USER_MISMATCH);
}

static void
test_bad_arguments(void **state)
{
	struct usermap_opts o = { .method = USERMAP_CN };
	X509 *x = load_cert("alice");

	(void)state;
	assert_non_null(x);
	assert_int_equal(usermap_check(NULL, "alice", &o, why, sizeof(why)),
			 MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(usermap_check(x, NULL, &o, why, sizeof(why)), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(usermap_check(x, "", &o, why, sizeof(why)), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(usermap_check(x, "../alice", &o, why, sizeof(why)),
			 MTLS_ERR_USER_MISMATCH);
	o.method = 99;
	assert_int_equal(usermap_check(x, "alice", &o, why, sizeof(why)), MTLS_ERR_CONFIG);
	X509_free(x);
	assert_int_equal(usermap_method_from_name("cn"), USERMAP_CN);
	assert_int_equal(usermap_method_from_name("uid"), USERMAP_UID);
	assert_int_equal(usermap_method_from_name("email"), USERMAP_EMAIL);
	assert_int_equal(usermap_method_from_name("upn"), USERMAP_UPN);
	assert_int_equal(usermap_method_from_name("mapfile"), USERMAP_MAPFILE);
	assert_int_equal(usermap_method_from_name("authorized"), USERMAP_AUTHORIZED);
	assert_int_equal(usermap_method_from_name("CN"), 0);
	assert_int_equal(usermap_method_from_name(NULL), 0);
}

/* --- map file ------------------------------------------------------------- */

static void
test_mapfile(void **state)
{
	struct usermap_opts o = { .method = USERMAP_MAPFILE };
	char fp[128], fpu[128], text[1024];
	const char *path = F("map");

	(void)state;
	o.map_file = path;
	if (geteuid() != 0)
		skip(); /* the map file must be owned by root */
	sha256_of("bob", 0, 1, 0, fp);
	sha256_of("uid", 0, 0, 1, fpu);
	snprintf(text, sizeof(text),
		 "# subject or fingerprint, then the user\n"
		 "\n"
		 "CN=alice,O=mtls-agent tests alice\n"
		 "  CN=alice,O=mtls-agent tests\tadmin  \n"
		 "sha256:%s robert\n"
		 "SHA256:%s\tal\n",
		 fp, fpu);
	write_file(path, text, 0644);
	assert_int_equal(map("alice", "alice", &o), 0);
	assert_int_equal(map("alice", "admin", &o), 0);
	assert_int_equal(map("alice", "bob", &o), MTLS_ERR_USER_MISMATCH);
	/* By fingerprint, lower case with colons and upper case without. */
	assert_int_equal(map("bob", "robert", &o), 0);
	assert_int_equal(map("bob", "bob", &o), MTLS_ERR_USER_MISMATCH);
	assert_int_equal(map("uid", "al", &o), 0);
	assert_int_equal(map("uid", "alice", &o), MTLS_ERR_USER_MISMATCH);
	/* Not listed at all. */
	assert_int_equal(map("email", "alice", &o), MTLS_ERR_USER_MISMATCH);
	assert_non_null(strstr(why, "not listed"));
	/* A CN in the file is matched as a whole subject, not a substring. */
	write_file(path, "CN=alice alice\n", 0644);
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_USER_MISMATCH);
}

static void
test_mapfile_unsafe(void **state)
{
	struct usermap_opts o = { .method = USERMAP_MAPFILE };
	const char *path = F("map2");
	char link[256];

	(void)state;
	o.map_file = path;
	if (geteuid() != 0)
		skip();
	write_file(path, "CN=alice,O=mtls-agent tests alice\n", 0644);
	assert_int_equal(map("alice", "alice", &o), 0);
	/* Group- or other-writable. */
	assert_int_equal(chmod(path, 0664), 0);
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "writable"));
	assert_int_equal(chmod(path, 0646), 0);
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	/* Not owned by root. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(chown(path, 65534, 65534), 0);
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "owned"));
	assert_int_equal(chown(path, 0, 0), 0);
	/* A symlink to it; a missing file; a malformed line. */
	snprintf(link, sizeof(link), "%s", F("map-link"));
	assert_int_equal(symlink(path, link), 0);
	o.map_file = link;
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	o.map_file = F("no-such-map");
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	o.map_file = path;
	write_file(path, "CN=alice,O=mtls-agent tests alice\nsha256:abcd x\n", 0644);
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, ":2:"));
	write_file(path, "lonelyword\n", 0644);
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	o.map_file = "relative/map";
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
	o.map_file = NULL;
	assert_int_equal(map("alice", "alice", &o), MTLS_ERR_CONFIG);
}

/* --- authorized certificates file ------------------------------------------ */

static void
auth_opts(struct usermap_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->method = USERMAP_AUTHORIZED;
	o->authorized_file = auth_pattern;
}

static void
test_authorized_pem(void **state)
{
	struct usermap_opts o;

	(void)state;
	auth_opts(&o);
	write_file(auth_file, "# my certificates\n", 0644);
	append_pem(auth_file, "bob");
	append_pem(auth_file, "alice");
	assert_int_equal(map("alice", me, &o), 0);
	assert_int_equal(map("bob", me, &o), 0);
	/* A certificate that is not in the file (same CA, same kind). */
	assert_int_equal(map("uid", me, &o), MTLS_ERR_USER_MISMATCH);
	/* Another user's file (the pattern has %u) does not exist.  (As
	 * root only: for anyone else, a directory they own is not root's.) */
	if (geteuid() == 0 && getpwnam("nobody") != NULL)
		assert_int_equal(map("alice", "nobody", &o), MTLS_ERR_USER_MISMATCH);
}

static void
test_authorized_pubkey(void **state)
{
	struct usermap_opts o;
	char spki[128], line[256];

	(void)state;
	auth_opts(&o);
	sha256_of("alice", 1, 0, 0, spki);
	snprintf(line, sizeof(line), "# by key\n  sha256:%s\n", spki);
	write_file(auth_file, line, 0600);
	assert_int_equal(map("alice", me, &o), 0);
	/* The certificate's own fingerprint is not its key's. */
	assert_int_equal(map("bob", me, &o), MTLS_ERR_USER_MISMATCH);
	sha256_of("alice", 0, 0, 0, spki);
	snprintf(line, sizeof(line), "sha256:%s\n", spki);
	write_file(auth_file, line, 0600);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_USER_MISMATCH);
	/* Colons and upper case are fine; a short hash is an error. */
	sha256_of("alice", 1, 1, 1, spki);
	snprintf(line, sizeof(line), "sha256:%s\n", spki);
	write_file(auth_file, line, 0600);
	assert_int_equal(map("alice", me, &o), 0);
	write_file(auth_file, "sha256:0123\n", 0600);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
}

static void
test_authorized_missing(void **state)
{
	struct usermap_opts o;

	(void)state;
	auth_opts(&o);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_USER_MISMATCH);
	assert_non_null(strstr(why, "no authorized certificates file"));
	/* Missing directory; unknown user; nobody's default file. */
	o.authorized_file = F("no-such-dir/%u");
	assert_int_equal(map("alice", me, &o), MTLS_ERR_USER_MISMATCH);
	assert_non_null(strstr(why, "no authorized certificates file"));
	assert_int_equal(map("alice", "no-such-user-mtls", &o), MTLS_ERR_USER_MISMATCH);
	o.authorized_file = NULL;
	if (getpwnam("nobody") != NULL)
		assert_int_equal(map("alice", "nobody", &o), MTLS_ERR_USER_MISMATCH);
	/* Bad patterns are configuration errors. */
	o.authorized_file = "%x/file";
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	o.authorized_file = "relative/%u";
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
}

static void
test_authorized_writable_by_others(void **state)
{
	struct usermap_opts o;

	(void)state;
	auth_opts(&o);
	write_file(auth_file, "", 0644);
	append_pem(auth_file, "alice");
	assert_int_equal(map("alice", me, &o), 0);
	assert_int_equal(chmod(auth_file, 0666), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "writable"));
	assert_int_equal(chmod(auth_file, 0620), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_int_equal(chmod(auth_file, 0602), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
}

static void
test_authorized_dir_writable_by_others(void **state)
{
	struct usermap_opts o;

	(void)state;
	auth_opts(&o);
	write_file(auth_file, "", 0644);
	append_pem(auth_file, "alice");
	assert_int_equal(map("alice", me, &o), 0);
	assert_int_equal(chmod(auth_dir, 0777), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "directory"));
	assert_int_equal(chmod(auth_dir, 0775), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	/* Sticky like /tmp is still writable by others. */
	assert_int_equal(chmod(auth_dir, 01777), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
}

static void
test_authorized_symlink(void **state)
{
	struct usermap_opts o;
	const char *target = F("real-authorized");

	(void)state;
	auth_opts(&o);
	write_file(target, "", 0644);
	append_pem(target, "alice");
	assert_int_equal(symlink(target, auth_file), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "symbolic link"));
	/* Not a regular file: a FIFO must not block the login either. */
	assert_int_equal(unlink(auth_file), 0);
	assert_int_equal(mkfifo(auth_file, 0644), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_int_equal(unlink(auth_file), 0);
	assert_int_equal(mkdir(auth_file, 0755), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_int_equal(rmdir(auth_file), 0);
}

static void
test_authorized_too_large(void **state)
{
	struct usermap_opts o;
	FILE *f;
	int i;

	(void)state;
	auth_opts(&o);
	write_file(auth_file, "", 0644);
	append_pem(auth_file, "alice");
	assert_non_null(f = fopen(auth_file, "a"));
	for (i = 0; i < 20000; i++)
		fputs("# padding padding padding padding padding padding pad\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "larger"));
}

/* Needs root: files owned by other users. */
static void
test_authorized_owner(void **state)
{
	struct usermap_opts o;
	char file[512];

	(void)state;
	if (geteuid() != 0 || getpwnam("nobody") == NULL || getpwnam("daemon") == NULL)
		skip();
	auth_opts(&o);
	/* nobody's own file in a root-owned directory: fine. */
	snprintf(file, sizeof(file), "%s/nobody", auth_dir);
	write_file(file, "", 0644);
	append_pem(file, "alice");
	assert_int_equal(chown(file, getpwnam("nobody")->pw_uid, 0), 0);
	assert_int_equal(map("alice", "nobody", &o), 0);
	/* Owned by somebody else (daemon): refused for nobody... */
	assert_int_equal(chown(file, getpwnam("daemon")->pw_uid, 0), 0);
	assert_int_equal(map("alice", "nobody", &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "owned"));
	/* ... and root's file owned by nobody is refused for root. */
	write_file(auth_file, "", 0644);
	append_pem(auth_file, "alice");
	assert_int_equal(map("alice", me, &o), 0);
	assert_int_equal(chown(auth_file, getpwnam("nobody")->pw_uid, 0), 0);
	assert_int_equal(map("alice", me, &o), MTLS_ERR_CONFIG);
	/* The directory owned by another user. */
	assert_int_equal(chown(file, getpwnam("nobody")->pw_uid, 0), 0);
	assert_int_equal(map("alice", "nobody", &o), 0);
	assert_int_equal(chown(auth_dir, getpwnam("daemon")->pw_uid, 0), 0);
	assert_int_equal(map("alice", "nobody", &o), MTLS_ERR_CONFIG);
	assert_non_null(strstr(why, "directory"));
	assert_int_equal(unlink(file), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cn),
		cmocka_unit_test(test_two_cns),
		cmocka_unit_test(test_uid),
		cmocka_unit_test(test_email),
		cmocka_unit_test(test_upn),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_mapfile),
		cmocka_unit_test(test_mapfile_unsafe),
		cmocka_unit_test_setup(test_authorized_pem, auth_setup),
		cmocka_unit_test_setup(test_authorized_pubkey, auth_setup),
		cmocka_unit_test_setup(test_authorized_missing, auth_setup),
		cmocka_unit_test_setup(test_authorized_writable_by_others, auth_setup),
		cmocka_unit_test_setup(test_authorized_dir_writable_by_others, auth_setup),
		cmocka_unit_test_setup(test_authorized_symlink, auth_setup),
		cmocka_unit_test_setup(test_authorized_too_large, auth_setup),
		cmocka_unit_test_setup(test_authorized_owner, auth_setup),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
