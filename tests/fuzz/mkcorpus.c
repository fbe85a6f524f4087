/*
 * mkcorpus - writes the seed inputs of the codec fuzz targets, encoded by
 * the real codecs, so the seeds stay valid as the protocol evolves.
 *
 *   mkcorpus DIR      writes DIR/fuzz_msg/, DIR/fuzz_frame/, DIR/fuzz_purpose/,
 *                     DIR/fuzz_msg_p11/, DIR/fuzz_dispatch/
 *
 * Run by tests/fuzz/mkcorpus.sh (make fuzz-corpus), which adds the
 * configuration and certificate seeds.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mtls-agent.h"
#include "msg_p11.h"
#include "proto.h"
#include "purpose.h"

/* The codecs take char *, the seeds are literals. */
#define S(s) ((char *)(s))

static const char *top;

static void
die(const char *what, int r)
{
	fprintf(stderr, "mkcorpus: %s: %s\n", what,
		r < 0 ? mtls_agent_strerror(r) : strerror(errno));
	exit(1);
}

static void
mkdir_p(const char *sub)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", top, sub);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		die(path, 0);
}

static void
write_bytes(const char *sub, const char *name, const void *p, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", top, sub, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0)
		die(path, 0);
}

static void
write_buf(const char *sub, const char *name, struct wbuf *b, int r)
{
	if (r != 0)
		die(name, r);
	write_bytes(sub, name, wbuf_ptr(b), wbuf_len(b));
	wbuf_reset(b);
}

/* Frame stream for fuzz_frame: limit selector byte, then frames. */
static void
write_frames(const char *name, uint8_t limit, struct wbuf **bodies, size_t n, int cut)
{
	struct wbuf *s = wbuf_new();
	size_t i;
	int r;

	if (s == NULL || (r = wbuf_put_u8(s, limit)) != 0)
		die(name, MTLS_ERR_ALLOC);
	for (i = 0; i < n; i++)
		if ((r = wbuf_put_string(s, wbuf_ptr(bodies[i]), wbuf_len(bodies[i]))) != 0)
			die(name, r);
	write_bytes("fuzz_frame", name, wbuf_ptr(s), wbuf_len(s) - (size_t)cut);
	wbuf_free(s);
}

static size_t
tls13_content(unsigned char *buf, size_t hash_len)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;
	size_t i;

	memset(buf, 0x20, TLS13_CV_PAD_LEN);
	memcpy(buf + TLS13_CV_PAD_LEN, ctx, sizeof(ctx));
	for (i = 0; i < hash_len; i++)
		buf[TLS13_CV_PAD_LEN + sizeof(ctx) + i] = (unsigned char)(0xa0 + i);
	return TLS13_CV_PAD_LEN + sizeof(ctx) + hash_len;
}

/* ClientHello, Certificate, ClientKeyExchange: what a TLS 1.2 client
 * signs in its CertificateVerify (bodies abbreviated). */
static size_t
tls12_transcript(unsigned char *buf)
{
	static const unsigned char t[] = {
		1,  0, 0, 6, 3, 3, 0xde, 0xad, 0xbe, 0xef, /* ClientHello */
		2,  0, 0, 2, 3, 3,			   /* ServerHello */
		11, 0, 0, 3, 0, 0, 0,			   /* Certificate */
		14, 0, 0, 0,				   /* ServerHelloDone */
		11, 0, 0, 3, 0, 0, 0,			   /* client Certificate */
		16, 0, 0, 5, 4, 1, 2,	 3,    4,	   /* ClientKeyExchange */
	};

	memcpy(buf, t, sizeof(t));
	return sizeof(t);
}

/* Seeds of fuzz_msg_p11: one of each agent <-> helper message. */
static void
write_p11_seeds(void)
{
	unsigned char id[] = { 3 }, der[] = { 0x30, 0x03, 2, 1, 1 }, digest[32], sig[64];
	struct p11_token tok = { .slot = 1,
				 .label = S("mtls-test"),
				 .manufacturer = S("SoftHSM"),
				 .model = S("v2"),
				 .serial = S("0123"),
				 .flags = 0x40d };
	struct p11_object obj[2] = {
		{ .kind = P11_OBJ_CERT,
		  .handle = 2,
		  .id = id,
		  .id_len = 1,
		  .label = S("p256"),
		  .a = der,
		  .a_len = sizeof(der) },
		{ .kind = P11_OBJ_RSA,
		  .handle = 3,
		  .id = id,
		  .id_len = 1,
		  .label = S("rsa"),
		  .a = der,
		  .a_len = sizeof(der),
		  .b = id,
		  .b_len = 1 },
	};
	struct msg_p11_tokens_resp toks = { &tok, 1 };
	struct msg_p11_objects_resp objs = { obj, 2 };
	struct msg_p11_slot_req slot = { .slot = 1 };
	struct msg_p11_login_req login = { .slot = 1, .flags = P11_LOGIN_VERIFY, .pin = S("1234") };
	struct msg_p11_set_pin_req sp = {
		.slot = 1, .mode = SET_PIN_CHANGE, .old_pin = S("1234"), .new_pin = S("5678")
	};
	struct msg_p11_sign_req sign = { .slot = 1,
					 .key = 3,
					 .mech = P11_MECH_ECDSA,
					 .data = digest,
					 .data_len = sizeof(digest) };
	struct msg_sign_resp sresp = { sig, sizeof(sig) };
	struct msg_p11_error err = { .code = MTLS_ERR_PIN_INCORRECT,
				     .retries = 2,
				     .rv = 0xa0,
				     .message = S("C_Login: PKCS#11 error 0xa0") };
	struct wbuf *b = wbuf_new();
	const char *d = "fuzz_msg_p11";

	if (b == NULL)
		die("p11 seeds", MTLS_ERR_ALLOC);
	memset(digest, 0x5a, sizeof(digest));
	memset(sig, 0x3c, sizeof(sig));
	mkdir_p(d);
	write_buf(d, "tokens_resp", b, msg_p11_tokens_resp_put(b, &toks));
	write_buf(d, "objects_req", b, msg_p11_slot_req_put(b, P11_OBJECTS, &slot));
	write_buf(d, "objects_resp", b, msg_p11_objects_resp_put(b, &objs));
	write_buf(d, "logout_req", b, msg_p11_slot_req_put(b, P11_LOGOUT, &slot));
	write_buf(d, "login_req", b, msg_p11_login_req_put(b, &login));
	write_buf(d, "set_pin_req", b, msg_p11_set_pin_req_put(b, &sp));
	write_buf(d, "sign_req_ecdsa", b, msg_p11_sign_req_put(b, &sign));
	sign.mech = P11_MECH_RSA_PSS;
	sign.hash = P11_HASH_SHA256;
	write_buf(d, "sign_req_pss", b, msg_p11_sign_req_put(b, &sign));
	write_buf(d, "sign_resp", b, msg_p11_sign_resp_put(b, &sresp));
	write_buf(d, "error", b, msg_p11_error_put(b, &err));
	wbuf_free(b);
}

/* A fuzz_dispatch seed: the flags byte (bit 0: HELLO first), then each
 * body as a wbuf string.  The bodies are reset. */
static void
write_session(const char *name, uint8_t flags, struct wbuf **bodies, size_t n)
{
	struct wbuf *s = wbuf_new();
	size_t i;

	if (s == NULL || wbuf_put_u8(s, flags) != 0)
		die(name, MTLS_ERR_ALLOC);
	for (i = 0; i < n; i++) {
		if (wbuf_put_string(s, wbuf_ptr(bodies[i]), wbuf_len(bodies[i])) != 0)
			die(name, MTLS_ERR_ALLOC);
		wbuf_reset(bodies[i]);
	}
	write_bytes("fuzz_dispatch", name, wbuf_ptr(s), wbuf_len(s));
	wbuf_free(s);
}

/* Seeds of fuzz_dispatch: sessions with the identities of its
 * configuration (fuzz_dispatch.c: rsa, ec, ec-tls13, ec-confirm,
 * ec-other) on the stub's token, PIN 1234. */
static void
write_dispatch_seeds(void)
{
	unsigned char content[256], digest[64];
	struct msg_hello_req hello = { MTLS_PROTO_MIN, MTLS_PROTO_MAX, S("mkcorpus") };
	struct msg_hello_req hello_bad = { 9, 12, S("mkcorpus") };
	struct msg_sign_req ec = { S("ec"), MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, 0 };
	struct msg_sign_req pss = { S("rsa"), MTLS_AGENT_RSA_PSS_RSAE_SHA256,
				    MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, 0 };
	struct msg_sign_req pkcs1 = { S("rsa"), MTLS_AGENT_RSA_PKCS1_SHA384,
				      MTLS_AGENT_PURPOSE_RAW_DIGEST, digest, 48 };
	struct msg_sign_req confirm = { S("ec-confirm"), MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, 0 };
	struct msg_sign_req other = { S("ec-other"), MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				      MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, 0 };
	struct msg_sign_req raw_tls13 = { S("ec-tls13"), MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					  MTLS_AGENT_PURPOSE_RAW_DIGEST, digest, 32 };
	struct msg_login_req login = { S(""), S("1234"), 0 };
	struct msg_login_req login_bad = { S("ec"), S("0000"), LOGIN_VERIFY };
	struct msg_logout_req logout = { S("") };
	struct msg_set_pin_req setpin = { S(""), SET_PIN_CHANGE, S("1234"), S("5678") };
	struct msg_lock_req unlock = { S("secret") };
	struct wbuf *f[4];
	size_t i;

	for (i = 0; i < 4; i++)
		if ((f[i] = wbuf_new()) == NULL)
			die("dispatch seeds", MTLS_ERR_ALLOC);
	mkdir_p("fuzz_dispatch");
	for (i = 0; i < sizeof(digest); i++)
		digest[i] = (unsigned char)(0x11 * i);
	ec.content_len = pss.content_len = confirm.content_len = other.content_len =
	    tls13_content(content, 32);
	if (msg_list_req_put(f[0]) != 0 || msg_sign_req_put(f[1], &ec) != 0 ||
	    msg_status_req_put(f[2]) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("session_ec", 1, f, 3);
	if (msg_sign_req_put(f[0], &ec) != 0 || msg_list_req_put(f[1]) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("no_hello", 0, f, 2);
	if (msg_hello_req_put(f[0], &hello) != 0 || msg_sign_req_put(f[1], &pss) != 0 ||
	    msg_sign_req_put(f[2], &pkcs1) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("hello_rsa", 0, f, 3);
	if (msg_hello_req_put(f[0], &hello_bad) != 0 || msg_list_req_put(f[1]) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("hello_bad_version", 0, f, 2);
	if (msg_sign_req_put(f[0], &confirm) != 0 || msg_sign_req_put(f[1], &other) != 0 ||
	    msg_sign_req_put(f[2], &raw_tls13) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("refusals", 1, f, 3);
	if (msg_logout_req_put(f[0], &logout) != 0 || msg_sign_req_put(f[1], &ec) != 0 ||
	    msg_login_req_put(f[2], &login) != 0 || msg_sign_req_put(f[3], &ec) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("logout_login", 1, f, 4);
	if (msg_login_req_put(f[0], &login_bad) != 0 || msg_set_pin_req_put(f[1], &setpin) != 0 ||
	    msg_lock_req_put(f[2], MSG_UNLOCK, &unlock) != 0 || wbuf_put_u8(f[3], 0x42) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("pin_unlock_unknown", 1, f, 4);
	/* An empty body, then a SIGN cut short. */
	if (msg_sign_req_put(f[1], &ec) != 0 || wbuf_unreserve(f[1], 5) != 0)
		die("dispatch seeds", MTLS_ERR_ALLOC);
	write_session("empty_and_truncated", 1, f, 2);
	for (i = 0; i < 4; i++)
		wbuf_free(f[i]);
}

int
main(int argc, char **argv)
{
	static const unsigned char nonce[32] = "0123456789abcdef0123456789abcdef";
	static const unsigned char cert[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
	unsigned char content[256], key_id[] = { 0x03 }, digest[64], sig[72];
	unsigned char *chain[1] = { (unsigned char *)cert };
	size_t chain_len[1] = { sizeof(cert) };
	uint16_t schemes[] = { MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_RSA_PSS_RSAE_SHA256 };
	struct mtls_agent_identity ids[2];
	struct mtls_agent_status st = { .version = S("mtls-agent 0.1.0"),
					.pid = 4242,
					.uptime = 60,
					.connections = 2,
					.identities = 2,
					.tokens_present = 1,
					.tokens_logged_in = 1 };
	struct msg_hello_req hreq = { 1, 1, S("mkcorpus") };
	struct msg_hello_resp hresp = { 1, S("mtls-agent 0.1.0") };
	struct msg_list_resp lresp = { ids, 2 };
	struct msg_sign_req sreq = { S("p256"), MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, 0 };
	struct msg_sign_resp sresp = { sig, sizeof(sig) };
	struct msg_login_req login = { S("p256"), S("123456"), 0 };
	struct msg_logout_req logout = { S("") };
	struct msg_login_prompt_req login_prompt = { S("p256") };
	struct msg_set_pin_req setpin = { S(""), SET_PIN_CHANGE, S("123456"), S("654321") };
	struct msg_error err = { MTLS_ERR_PIN_INCORRECT, 2, S("incorrect PIN") };
	struct wbuf *b, *frames[3];
	size_t i;
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: mkcorpus DIR\n");
		return 2;
	}
	top = argv[1];
	mkdir_p("");
	mkdir_p("fuzz_msg");
	mkdir_p("fuzz_frame");
	mkdir_p("fuzz_purpose");
	if ((b = wbuf_new()) == NULL)
		die("wbuf_new", MTLS_ERR_ALLOC);
	for (i = 0; i < sizeof(sig); i++)
		sig[i] = (unsigned char)i;
	for (i = 0; i < sizeof(digest); i++)
		digest[i] = (unsigned char)(0x40 + i);

	memset(ids, 0, sizeof(ids));
	ids[0] = (struct mtls_agent_identity){ .name = S("p256"),
					       .token_label = S("mtls-test"),
					       .key_label = S("p256"),
					       .key_id = key_id,
					       .key_id_len = 1,
					       .key_type = MTLS_AGENT_KEY_EC,
					       .key_bits = 256,
					       .flags = MTLS_AGENT_ID_TOKEN_PRESENT |
							MTLS_AGENT_ID_KEY_FOUND,
					       .purposes = 0x6,
					       .schemes = schemes,
					       .n_schemes = 1,
					       .cert_der = (unsigned char *)cert,
					       .cert_der_len = sizeof(cert),
					       .chain_der = chain,
					       .chain_der_len = chain_len,
					       .n_chain = 1 };
	ids[1] = (struct mtls_agent_identity){ .name = S("rsa2048"),
					       .token_label = S("mtls-test"),
					       .key_label = S(""),
					       .key_id = key_id,
					       .key_id_len = 1,
					       .key_type = MTLS_AGENT_KEY_RSA,
					       .key_bits = 2048,
					       .purposes = 0x1e,
					       .schemes = schemes + 1,
					       .n_schemes = 1 };

	/* fuzz_msg: one body per message. */
	write_buf("fuzz_msg", "hello_req", b, msg_hello_req_put(b, &hreq));
	write_buf("fuzz_msg", "hello_resp", b, msg_hello_resp_put(b, &hresp));
	write_buf("fuzz_msg", "list_req", b, msg_list_req_put(b));
	write_buf("fuzz_msg", "list_resp", b, msg_list_resp_put(b, &lresp));
	lresp.n = 0;
	write_buf("fuzz_msg", "list_resp_empty", b, msg_list_resp_put(b, &lresp));
	sreq.content_len = tls13_content(content, 32);
	write_buf("fuzz_msg", "sign_req_tls13", b, msg_sign_req_put(b, &sreq));
	if ((r = pam_challenge_put(b, nonce, sizeof(nonce), "sshd", "alice")) != 0)
		die("pam challenge", r);
	sreq.purpose = MTLS_AGENT_PURPOSE_PAM_CHALLENGE;
	sreq.content_len = wbuf_len(b);
	memcpy(content, wbuf_ptr(b), sreq.content_len);
	wbuf_reset(b);
	write_buf("fuzz_msg", "sign_req_pam", b, msg_sign_req_put(b, &sreq));
	sreq.purpose = MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV;
	sreq.scheme = MTLS_AGENT_RSA_PKCS1_SHA256;
	sreq.identity = S("rsa2048");
	sreq.content_len = tls12_transcript(content);
	write_buf("fuzz_msg", "sign_req_tls12", b, msg_sign_req_put(b, &sreq));
	sreq.purpose = MTLS_AGENT_PURPOSE_RAW_DIGEST;
	sreq.scheme = MTLS_AGENT_ECDSA_SECP384R1_SHA384;
	sreq.identity = S("p384");
	sreq.content = digest;
	sreq.content_len = 48;
	write_buf("fuzz_msg", "sign_req_raw", b, msg_sign_req_put(b, &sreq));
	write_buf("fuzz_msg", "sign_resp", b, msg_sign_resp_put(b, &sresp));
	write_buf("fuzz_msg", "login_req", b, msg_login_req_put(b, &login));
	login.flags = LOGIN_VERIFY;
	write_buf("fuzz_msg", "login_req_verify", b, msg_login_req_put(b, &login));
	write_buf("fuzz_msg", "logout_req", b, msg_logout_req_put(b, &logout));
	write_buf("fuzz_msg", "login_prompt_req", b, msg_login_prompt_req_put(b, &login_prompt));
	write_buf("fuzz_msg", "set_pin_change", b, msg_set_pin_req_put(b, &setpin));
	setpin.mode = SET_PIN_UNBLOCK;
	setpin.old_pin = S("12345678");
	write_buf("fuzz_msg", "set_pin_unblock", b, msg_set_pin_req_put(b, &setpin));
	write_buf("fuzz_msg", "status_req", b, msg_status_req_put(b));
	write_buf("fuzz_msg", "status_resp", b, msg_status_resp_put(b, &st));
	write_buf("fuzz_msg", "login_resp", b, msg_empty_resp_put(b, MSG_LOGIN));
	write_buf("fuzz_msg", "logout_resp", b, msg_empty_resp_put(b, MSG_LOGOUT));
	write_buf("fuzz_msg", "set_pin_resp", b, msg_empty_resp_put(b, MSG_SET_PIN));
	write_buf("fuzz_msg", "error_pin", b, msg_error_put(b, &err));
	err = (struct msg_error){ MTLS_ERR_CONTENT_REJECTED, -1, S("not a TLS 1.3 content") };
	write_buf("fuzz_msg", "error_content", b, msg_error_put(b, &err));

	/* fuzz_purpose: contents each purpose accepts. */
	write_bytes("fuzz_purpose", "tls13_sha256", content, tls13_content(content, 32));
	write_bytes("fuzz_purpose", "tls13_sha384", content, tls13_content(content, 48));
	if ((r = pam_challenge_put(b, nonce, sizeof(nonce), "login", "bob")) != 0)
		die("pam challenge", r);
	write_buf("fuzz_purpose", "pam_challenge", b, 0);
	write_bytes("fuzz_purpose", "tls12_transcript", content, tls12_transcript(content));
	write_bytes("fuzz_purpose", "raw_sha256", digest, 32);
	write_bytes("fuzz_purpose", "raw_sha512", digest, 64);

	/* fuzz_frame: limit selector (index into fuzz_frame.c's table), then
	 * the stream. */
	for (i = 0; i < 3; i++)
		if ((frames[i] = wbuf_new()) == NULL)
			die("wbuf_new", MTLS_ERR_ALLOC);
	sreq = (struct msg_sign_req){ S("p256"), MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				      MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content,
				      tls13_content(content, 32) };
	if ((r = msg_hello_req_put(frames[0], &hreq)) != 0 ||
	    (r = msg_list_req_put(frames[1])) != 0 || (r = msg_sign_req_put(frames[2], &sreq)) != 0)
		die("frames", r);
	write_frames("session", 0, frames, 3, 0);
	write_frames("one_frame", 0, frames, 1, 0);
	write_frames("truncated_body", 0, frames, 3, 7);
	write_frames("truncated_header", 0, frames, 2, wbuf_len(frames[1]) + 2);
	write_frames("over_limit_16", 6, frames, 3, 0);
	write_frames("limit_4096", 10, frames, 3, 0);
	wbuf_reset(frames[0]);
	write_frames("empty_frame", 0, frames, 1, 0);
	for (i = 0; i < 3; i++)
		wbuf_free(frames[i]);
	wbuf_free(b);
	write_p11_seeds();
	write_dispatch_seeds();
	return 0;
}
