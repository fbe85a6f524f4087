/*
 * test_ssh_policy.c - unit tests of the SSH decisions of the sign pipeline
 * (src/agent/ssh_policy.c): this identity's key (plain or in an OpenSSH
 * certificate), the session bindings, ssh-destinations with fingerprints
 * and known-hosts files (patterns, hashed names, @revoked, unsafe files),
 * forwarding, SSHSIG namespaces, and what the audit line says.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "conf.h"
#include "msg_ssh.h"
#include "msg_ssh_key.h"
#include "mtls-agent.h"
#include "ssh_policy.h"
#include "wbuf.h"

#define P256 MTLS_AGENT_ECDSA_SECP256R1_SHA256

struct fx {
	X509 *cert, *other_cert;
	struct wbuf *key, *other_key; /* their SSH blobs */
	struct wbuf *host, *host2;    /* Ed25519 host key blobs */
	char host_b64[128], fp[64], fp2[64];
	unsigned char sid[32];
	struct ssh_binds bs;
	char dir[64];
};

static X509 *
self_signed(EVP_PKEY *pk)
{
	X509 *x = X509_new();

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	assert_int_equal(X509_set_pubkey(x, pk), 1);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	return x;
}

static struct wbuf *
blob_of(X509 *x)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(ssh_key_blob_put(b, X509_get0_pubkey(x)), 0);
	return b;
}

static struct wbuf *
ed25519_blob(void)
{
	unsigned char raw[32];
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(RAND_bytes(raw, sizeof(raw)), 1);
	assert_int_equal(wbuf_put_cstring(b, "ssh-ed25519"), 0);
	assert_int_equal(wbuf_put_string(b, raw, sizeof(raw)), 0);
	return b;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	EVP_PKEY *pk, *pk2;

	assert_non_null(f);
	pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	pk2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(pk);
	assert_non_null(pk2);
	f->cert = self_signed(pk);
	f->other_cert = self_signed(pk2);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(pk2);
	f->key = blob_of(f->cert);
	f->other_key = blob_of(f->other_cert);
	f->host = ed25519_blob();
	f->host2 = ed25519_blob();
	EVP_EncodeBlock((unsigned char *)f->host_b64, wbuf_ptr(f->host), (int)wbuf_len(f->host));
	assert_int_equal(ssh_fingerprint(wbuf_ptr(f->host), wbuf_len(f->host), f->fp, 64), 0);
	assert_int_equal(ssh_fingerprint(wbuf_ptr(f->host2), wbuf_len(f->host2), f->fp2, 64), 0);
	assert_int_equal(RAND_bytes(f->sid, sizeof(f->sid)), 1);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ssh_policy.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	X509_free(f->cert);
	X509_free(f->other_cert);
	wbuf_free(f->key);
	wbuf_free(f->other_key);
	wbuf_free(f->host);
	wbuf_free(f->host2);
	ssh_binds_clear(&f->bs);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", f->dir);
	free(f);
	return 0;
}

/* Binds the connection to host (forwarding or not), as ssh.c records it. */
static void
bind_to(struct fx *f, const struct wbuf *host, int fwd)
{
	struct ssh_binding *b = &f->bs.b[f->bs.n++];

	memset(b, 0, sizeof(*b));
	b->hostkey = malloc(wbuf_len(host));
	assert_non_null(b->hostkey);
	memcpy(b->hostkey, wbuf_ptr(host), wbuf_len(host));
	b->hostkey_len = wbuf_len(host);
	memcpy(b->session_id, f->sid, sizeof(f->sid));
	b->session_id_len = sizeof(f->sid);
	b->forwarding = fwd;
	assert_int_equal(ssh_fingerprint(wbuf_ptr(host), wbuf_len(host), b->fp, sizeof(b->fp)), 0);
}

static struct wbuf *
userauth(const struct fx *f, const struct wbuf *key, const char *alg)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(wbuf_put_string(b, f->sid, sizeof(f->sid)), 0);
	assert_int_equal(wbuf_put_u8(b, 50), 0);
	assert_int_equal(wbuf_put_cstring(b, "alice"), 0);
	assert_int_equal(wbuf_put_cstring(b, "ssh-connection"), 0);
	assert_int_equal(wbuf_put_cstring(b, "publickey"), 0);
	assert_int_equal(wbuf_put_u8(b, 1), 0);
	assert_int_equal(wbuf_put_cstring(b, alg), 0);
	assert_int_equal(wbuf_put_string(b, wbuf_ptr(key), wbuf_len(key)), 0);
	return b;
}

/* The verdict for a userauth request with `key`; a refusal has a reason. */
static int
check(struct fx *f, const struct config_identity *ci, const struct wbuf *key, const char *alg,
      char *why, size_t why_len)
{
	struct wbuf *c = userauth(f, key, alg);
	int r;

	why[0] = '\0';
	r = ssh_policy_check(f->cert, ci, f->bs.n ? &f->bs : NULL, P256, MTLS_AGENT_PURPOSE_SSH,
			     wbuf_ptr(c), wbuf_len(c), why, why_len);
	if (r != 0)
		assert_true(why[0] != '\0');
	wbuf_free(c);
	return r;
}

static void
test_key_and_alg(void **state)
{
	struct fx *f = *state;
	char why[512];

	assert_int_equal(check(f, NULL, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	assert_int_equal(check(f, NULL, f->other_key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_non_null(strstr(why, "carries another key"));
	assert_int_equal(check(f, NULL, f->key, "rsa-sha2-256", why, sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_non_null(strstr(why, "another signature algorithm"));
}

/* An OpenSSH certificate blob of `plain`'s key (PROTOCOL.certkeys head). */
static struct wbuf *
cert_blob(const struct wbuf *plain)
{
	struct wbuf *p = wbuf_from(wbuf_ptr(plain), wbuf_len(plain)), *c = wbuf_new();
	const unsigned char *type;
	size_t tl;
	char ctype[128];

	assert_non_null(p);
	assert_non_null(c);
	assert_int_equal(wbuf_get_string_direct(p, &type, &tl, 64), 0);
	snprintf(ctype, sizeof(ctype), "%.*s-cert-v01@openssh.com", (int)tl, (const char *)type);
	assert_int_equal(wbuf_put_cstring(c, ctype), 0);
	assert_int_equal(wbuf_put_cstring(c, "0123456789abcdef0123456789abcdef"), 0);
	assert_int_equal(wbuf_put(c, wbuf_ptr(p), wbuf_len(p)), 0);
	/* serial, type, key id, ... : not read by the agent */
	assert_int_equal(wbuf_put_u32(c, 0), 0);
	assert_int_equal(wbuf_put_u32(c, 1), 0);
	wbuf_free(p);
	return c;
}

static void
test_certificate(void **state)
{
	struct fx *f = *state;
	struct wbuf *mine = cert_blob(f->key), *theirs = cert_blob(f->other_key);
	char why[512];

	assert_true(ssh_cert_is_of(f->cert, wbuf_ptr(mine), wbuf_len(mine)));
	assert_false(ssh_cert_is_of(f->cert, wbuf_ptr(theirs), wbuf_len(theirs)));
	assert_false(ssh_cert_is_of(f->cert, wbuf_ptr(f->key), wbuf_len(f->key)));
	assert_int_equal(
	    check(f, NULL, mine, "ecdsa-sha2-nistp256-cert-v01@openssh.com", why, sizeof(why)), 0);
	assert_int_equal(
	    check(f, NULL, theirs, "ecdsa-sha2-nistp256-cert-v01@openssh.com", why, sizeof(why)),
	    MTLS_ERR_CONTENT_REJECTED);
	wbuf_free(mine);
	wbuf_free(theirs);
}

static void
test_fingerprint_destinations(void **state)
{
	struct fx *f = *state;
	struct config_identity ci = { 0 };
	char why[512], dests[200];

	ci.ssh_destinations = dests;
	snprintf(dests, sizeof(dests), "%s", f->fp);
	/* unbound: refused when destinations are set */
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	assert_non_null(strstr(why, "not bound to a host"));
	bind_to(f, f->host, 0);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	snprintf(dests, sizeof(dests), "%s", f->fp2);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	assert_non_null(strstr(why, f->fp));
	assert_non_null(strstr(why, "alice"));
	snprintf(dests, sizeof(dests), "%s,%s", f->fp2, f->fp);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_true(fputs(text, fp) >= 0);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void
test_known_hosts(void **state)
{
	struct fx *f = *state;
	struct config_identity ci = { 0 };
	char why[512], dests[300], kh[128], text[1024], host[256];

	ci.ssh_destinations = dests;
	bind_to(f, f->host, 0);
	snprintf(kh, sizeof(kh), "%s/known_hosts", f->dir);
	snprintf(text, sizeof(text),
		 "# comment\n\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==\n"
		 "[build.example.com]:2222,10.0.0.1 ssh-ed25519 %s a comment\n",
		 f->host_b64);
	write_file(kh, text, 0600);
	snprintf(dests, sizeof(dests), "known-hosts=%s", kh);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	assert_true(ssh_destination_allowed(dests, wbuf_ptr(f->host), wbuf_len(f->host), host,
					    sizeof(host)));
	assert_string_equal(host, "build.example.com");
	snprintf(dests, sizeof(dests), "known-hosts=%s:*.example.com", kh);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	snprintf(dests, sizeof(dests), "known-hosts=%s:*.example.org", kh);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	/* a key the file does not have */
	ssh_binds_clear(&f->bs);
	bind_to(f, f->host2, 0);
	snprintf(dests, sizeof(dests), "known-hosts=%s", kh);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	ssh_binds_clear(&f->bs);
	bind_to(f, f->host, 0);
	/* hashed names match no pattern, but the file without one */
	snprintf(text, sizeof(text), "|1|c2FsdA==|aGFzaA== ssh-ed25519 %s\n", f->host_b64);
	write_file(kh, text, 0600);
	snprintf(dests, sizeof(dests), "known-hosts=%s:*", kh);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	snprintf(dests, sizeof(dests), "known-hosts=%s", kh);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	/* @revoked wins over a line that lists the key */
	snprintf(text, sizeof(text),
		 "build.example.com ssh-ed25519 %s\n@revoked * ssh-ed25519 %s\n"
		 "@cert-authority * ssh-ed25519 %s\n",
		 f->host_b64, f->host_b64, f->host_b64);
	write_file(kh, text, 0600);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	/* a @cert-authority line alone is not a host key */
	snprintf(text, sizeof(text), "@cert-authority * ssh-ed25519 %s\n", f->host_b64);
	write_file(kh, text, 0600);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	/* a file others may write is not trusted */
	snprintf(text, sizeof(text), "build.example.com ssh-ed25519 %s\n", f->host_b64);
	write_file(kh, text, 0620);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	write_file(kh, text, 0600);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	/* a missing file allows nothing */
	snprintf(dests, sizeof(dests), "known-hosts=%s/nosuch", f->dir);
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
}

static void
test_forwarding(void **state)
{
	struct fx *f = *state;
	struct config_identity ci = { 0 };
	char why[512];

	bind_to(f, f->host2, 1);
	bind_to(f, f->host, 0);
	assert_int_equal(check(f, NULL, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	assert_non_null(strstr(why, "forwarded through host key"));
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_DESTINATION_DENIED);
	ci.ssh_forwarding = 1;
	assert_int_equal(check(f, &ci, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
}

static struct wbuf *
sshsig(const char *ns)
{
	unsigned char h[64] = { 1 };
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(wbuf_put(b, "SSHSIG", 6), 0);
	assert_int_equal(wbuf_put_cstring(b, ns), 0);
	assert_int_equal(wbuf_put_cstring(b, ""), 0);
	assert_int_equal(wbuf_put_cstring(b, "sha512"), 0);
	assert_int_equal(wbuf_put_string(b, h, sizeof(h)), 0);
	return b;
}

static int
check_sig(struct fx *f, const struct config_identity *ci, const char *ns)
{
	struct wbuf *c = sshsig(ns);
	char why[512] = "";
	int r =
	    ssh_policy_check(f->cert, ci, f->bs.n ? &f->bs : NULL, P256, MTLS_AGENT_PURPOSE_SSH_SIG,
			     wbuf_ptr(c), wbuf_len(c), why, sizeof(why));

	if (r != 0)
		assert_true(why[0] != '\0');
	wbuf_free(c);
	return r;
}

static void
test_sshsig_namespaces(void **state)
{
	struct fx *f = *state;
	struct config_identity ci = { 0 };
	char list[] = "backup@example.com,gi";

	assert_int_equal(check_sig(f, NULL, "git"), 0);
	assert_int_equal(check_sig(f, NULL, "file"), 0);
	assert_int_equal(check_sig(f, NULL, "gitx"), MTLS_ERR_POLICY_DENIED);
	assert_int_equal(check_sig(f, NULL, "gi"), MTLS_ERR_POLICY_DENIED);
	ci.ssh_sig_namespaces = list;
	assert_int_equal(check_sig(f, &ci, "git"), MTLS_ERR_POLICY_DENIED);
	assert_int_equal(check_sig(f, &ci, "gi"), 0);
	assert_int_equal(check_sig(f, &ci, "backup@example.com"), 0);
	/* never through a forwarded agent unless allowed */
	bind_to(f, f->host, 1);
	assert_int_equal(check_sig(f, &ci, "gi"), MTLS_ERR_DESTINATION_DENIED);
	ci.ssh_forwarding = 1;
	assert_int_equal(check_sig(f, &ci, "gi"), 0);
}

/* The key the request named must still be the identity's (a reload may
 * have given the name another certificate): ssh.c sets want_key. */
static void
test_requested_key(void **state)
{
	struct fx *f = *state;
	char why[512];

	bind_to(f, f->host, 0);
	f->bs.want_key = wbuf_ptr(f->key);
	f->bs.want_key_len = wbuf_len(f->key);
	assert_int_equal(check_sig(f, NULL, "git"), 0);
	assert_int_equal(check(f, NULL, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)), 0);
	f->bs.want_key = wbuf_ptr(f->other_key);
	f->bs.want_key_len = wbuf_len(f->other_key);
	assert_int_equal(check_sig(f, NULL, "git"), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check(f, NULL, f->key, "ecdsa-sha2-nistp256", why, sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_non_null(strstr(why, "names a key the identity does not have"));
	f->bs.want_key = NULL;
}

static void
test_describe(void **state)
{
	struct fx *f = *state;
	struct wbuf *c = userauth(f, f->key, "ecdsa-sha2-nistp256"), *s = sshsig("git");
	char out[512], want[256];

	ssh_describe(NULL, NULL, MTLS_AGENT_PURPOSE_SSH, wbuf_ptr(c), wbuf_len(c), out,
		     sizeof(out));
	assert_string_equal(out, "ssh-user=alice host=? host-key=unbound");
	bind_to(f, f->host, 0);
	ssh_describe(&f->bs, NULL, MTLS_AGENT_PURPOSE_SSH, wbuf_ptr(c), wbuf_len(c), out,
		     sizeof(out));
	snprintf(want, sizeof(want), "ssh-user=alice host=? host-key=%s", f->fp);
	assert_string_equal(out, want);
	ssh_describe(&f->bs, NULL, MTLS_AGENT_PURPOSE_SSH_SIG, wbuf_ptr(s), wbuf_len(s), out,
		     sizeof(out));
	assert_string_equal(out, "sshsig-namespace=git");
	ssh_describe(&f->bs, NULL, MTLS_AGENT_PURPOSE_SSH_SIG, wbuf_ptr(c), wbuf_len(c), out,
		     sizeof(out));
	assert_string_equal(out, "");
	wbuf_free(c);
	wbuf_free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key_and_alg, setup, teardown),
		cmocka_unit_test_setup_teardown(test_certificate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fingerprint_destinations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_known_hosts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forwarding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sshsig_namespaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requested_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_describe, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
