/*
 * test_ssh_frames - a raw SSH agent protocol client for tests/interop/ssh.sh
 * and the bench: sends what OpenSSH's tools never send (random data to
 * sign, a userauth request with another key, malformed frames of every
 * message type) and prints what the agent answers.
 *
 *   test_ssh_frames SOCK sign-random KEY.pub       reply type of a SIGN_REQUEST
 *                                                  over 64 random bytes
 *   test_ssh_frames SOCK sign-other KEY.pub OTHER.pub
 *                                                  ... over a userauth request
 *                                                  carrying OTHER's key
 *   test_ssh_frames SOCK sign-wrong-alg KEY.pub    ... over a userauth request
 *                                                  naming rsa-sha2-512 while the
 *                                                  request's flag asks SHA-256
 *   test_ssh_frames SOCK sign-userauth KEY.pub     ... over a good userauth
 *                                                  request (unbound connection)
 *   test_ssh_frames SOCK malformed KEY.pub         every malformed frame on one
 *                                                  connection must get FAILURE
 *                                                  (5) and the connection must
 *                                                  still serve; then an
 *                                                  oversized frame closes it
 *   test_ssh_frames SOCK query                     the "query" extension names
 *   test_ssh_frames SOCK bind KEY.pub             session-bind@openssh.com with
 *                                                  a made-up Ed25519 host key,
 *                                                  then signatures that must fit
 *                                                  the binding: prints one
 *                                                  "CASE reply N" line each
 *   test_ssh_frames SOCK bench KEY.pub SECONDS     userauth SIGN_REQUESTs for
 *                                                  SECONDS on one connection:
 *                                                  prints signatures a second
 * Exit 0 when the exchange happened (whatever the agent answered), 1 on an
 * unexpected answer in `malformed`, 2 on usage or I/O errors.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "msg_ssh.h"
#include "proto.h"
#include "wbuf.h"

static int
die(const char *what)
{
	fprintf(stderr, "test_ssh_frames: %s\n", what);
	exit(2);
}

static int
connect_to(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path))
		die("socket path too long");
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
		die("cannot connect");
	return fd;
}

/* Sends body (a frame of its length) and reads the reply: its type, -1 if
 * the agent closed the connection. */
static int
exchange(int fd, struct frame_rx *rx, const struct wbuf *body, struct wbuf *reply)
{
	uint8_t type;

	if (frame_write(fd, body, 5000) != 0)
		return -1;
	if (frame_read(fd, rx, reply, SSH_AGENT_FRAME_MAX, 10000, 10000) != 0)
		return -1;
	if (wbuf_get_u8(reply, &type) != 0)
		return -1;
	return type;
}

/* The key blob of an OpenSSH public key file ("TYPE BASE64 COMMENT"). */
static struct wbuf *
read_pub(const char *path)
{
	char line[16384], *b64, *end;
	unsigned char dec[12288];
	struct wbuf *b;
	FILE *f;
	int n, pad = 0;

	if ((f = fopen(path, "r")) == NULL || fgets(line, sizeof(line), f) == NULL)
		die("cannot read the public key file");
	fclose(f);
	if ((b64 = strchr(line, ' ')) == NULL)
		die("not an OpenSSH public key");
	b64++;
	end = b64 + strcspn(b64, " \r\n");
	*end = '\0';
	if (strlen(b64) % 4 != 0 || strlen(b64) > sizeof(dec))
		die("bad base64");
	pad = (end[-1] == '=') + (end[-2] == '=');
	if ((n = EVP_DecodeBlock(dec, (unsigned char *)b64, (int)strlen(b64))) < pad)
		die("bad base64");
	if ((b = wbuf_from(dec, (size_t)(n - pad))) == NULL)
		die("out of memory");
	return b;
}

static const char *
key_alg(const struct wbuf *key)
{
	struct wbuf *b = wbuf_from(wbuf_ptr(key), wbuf_len(key));
	const unsigned char *t;
	size_t tl;
	const char *alg = "?";

	if (b != NULL && wbuf_get_string_direct(b, &t, &tl, 64) == 0) {
		if (ssh_str_eq(t, tl, "ssh-rsa"))
			alg = "rsa-sha2-256";
		else if (ssh_str_eq(t, tl, "ecdsa-sha2-nistp256"))
			alg = "ecdsa-sha2-nistp256";
		else if (ssh_str_eq(t, tl, "ecdsa-sha2-nistp384"))
			alg = "ecdsa-sha2-nistp384";
	}
	wbuf_free(b);
	return alg;
}

/* A userauth request as ssh signs it, with key blob `key` and the
 * signature algorithm of `alg_key`; session id `sid` (NULL: random) and,
 * if hostkey is not NULL, hostbound to it. */
static struct wbuf *
userauth_full(const struct wbuf *key, const struct wbuf *alg_key, const unsigned char *fixed_sid,
	      const struct wbuf *hostkey)
{
	unsigned char sid[32];
	struct wbuf *b = wbuf_new();

	if (fixed_sid != NULL)
		memcpy(sid, fixed_sid, sizeof(sid));
	else if (RAND_bytes(sid, sizeof(sid)) != 1)
		die("random");
	if (b == NULL || wbuf_put_string(b, sid, sizeof(sid)) != 0 || wbuf_put_u8(b, 50) != 0 ||
	    wbuf_put_cstring(b, "tester") != 0 || wbuf_put_cstring(b, "ssh-connection") != 0 ||
	    wbuf_put_cstring(b, hostkey != NULL ? "publickey-hostbound-v00@openssh.com"
						: "publickey") != 0 ||
	    wbuf_put_u8(b, 1) != 0 || wbuf_put_cstring(b, key_alg(alg_key)) != 0 ||
	    wbuf_put_string(b, wbuf_ptr(key), wbuf_len(key)) != 0 ||
	    (hostkey != NULL && wbuf_put_string(b, wbuf_ptr(hostkey), wbuf_len(hostkey)) != 0))
		die("cannot build a userauth request");
	return b;
}

static struct wbuf *
userauth_as(const struct wbuf *key, const struct wbuf *alg_key)
{
	return userauth_full(key, alg_key, NULL, NULL);
}

static struct wbuf *
userauth(const struct wbuf *key)
{
	return userauth_as(key, key);
}

static int
sign_type(const char *sock, const struct wbuf *key, const struct wbuf *data)
{
	struct msg_ssh_sign_req m = { wbuf_ptr(key), wbuf_len(key), wbuf_ptr(data), wbuf_len(data),
				      SSH_AGENT_RSA_SHA2_256 };
	struct wbuf *body = wbuf_new(), *reply = wbuf_new();
	struct frame_rx rx = { 0 };
	int fd = connect_to(sock), t;

	if (body == NULL || reply == NULL || msg_ssh_sign_req_put(body, &m) != 0)
		die("cannot build SIGN_REQUEST");
	t = exchange(fd, &rx, body, reply);
	close(fd);
	wbuf_free(body);
	wbuf_free(reply);
	return t;
}

/* Appends a frame body given as bytes. */
static struct wbuf *
raw(const void *p, size_t n)
{
	struct wbuf *b = wbuf_from(p, n);

	if (b == NULL)
		die("out of memory");
	return b;
}

static int
malformed(const char *sock, const struct wbuf *key)
{
	struct frame_rx rx = { 0 };
	struct wbuf *reply = wbuf_new(), *b;
	int fd = connect_to(sock), bad = 0, t, n = 0;
	size_t i;
	/* Each: a type byte and a payload that does not decode. */
	static const struct {
		const char *name;
		const char *bytes;
		size_t len;
	} cases[] = {
		{ "REQUEST_IDENTITIES with a trailing byte", "\x0b\x00", 2 },
		{ "SIGN_REQUEST empty", "\x0d", 1 },
		{ "SIGN_REQUEST key length past the end",
		  "\x0d\x00\x00\x10\x00"
		  "abc",
		  8 },
		{ "SIGN_REQUEST no data, no flags", "\x0d\x00\x00\x00\x01k", 6 },
		{ "SIGN_REQUEST flags truncated", "\x0d\x00\x00\x00\x01k\x00\x00\x00\x01x\x00\x00",
		  13 },
		{ "SIGN_REQUEST trailing byte",
		  "\x0d\x00\x00\x00\x01k\x00\x00\x00\x01x\x00\x00\x00\x00\x00", 16 },
		{ "SIGN_REQUEST key over 16 KiB", "\x0d\x00\x00\x40\x01", 5 },
		{ "LOCK empty", "\x16", 1 },
		{ "LOCK passphrase with NUL",
		  "\x16\x00\x00\x00\x03"
		  "a\x00b",
		  8 },
		{ "LOCK trailing byte", "\x16\x00\x00\x00\x01pX", 7 },
		{ "UNLOCK empty", "\x17", 1 },
		{ "UNLOCK length past the end", "\x17\x00\x00\x00\x09pass", 9 },
		{ "EXTENSION empty", "\x1b", 1 },
		{ "EXTENSION empty name", "\x1b\x00\x00\x00\x00", 5 },
		{ "EXTENSION unknown",
		  "\x1b\x00\x00\x00\x03"
		  "abc",
		  8 },
		{ "EXTENSION query with trailing bytes", "\x1b\x00\x00\x00\x05queryX", 11 },
		{ "session-bind truncated",
		  "\x1b\x00\x00\x00\x18session-bind@openssh.com\x00\x00\x00\x01h", 34 },
		{ "session-bind bool 2",
		  "\x1b\x00\x00\x00\x18session-bind@openssh.com\x00\x00\x00\x01h\x00\x00\x00\x01s"
		  "\x00\x00\x00\x01g\x02",
		  45 },
		{ "session-bind bad signature",
		  "\x1b\x00\x00\x00\x18session-bind@openssh.com\x00\x00\x00\x01h\x00\x00\x00\x01s"
		  "\x00\x00\x00\x01g\x00",
		  45 },
		{ "ADD_IDENTITY", "\x11\x00\x00\x00\x0bssh-ed25519", 16 },
		{ "ADD_ID_CONSTRAINED", "\x19", 1 },
		{ "REMOVE_IDENTITY", "\x12\x00\x00\x00\x01k", 6 },
		{ "REMOVE_ALL_IDENTITIES", "\x13", 1 },
		{ "ADD_SMARTCARD_KEY", "\x14\x00\x00\x00\x01r\x00\x00\x00\x01p", 11 },
		{ "REMOVE_SMARTCARD_KEY", "\x15\x00\x00\x00\x01r\x00\x00\x00\x01p", 11 },
		{ "ADD_SMARTCARD_KEY_CONSTRAINED", "\x1a", 1 },
		{ "SSH1 request (type 1)", "\x01", 1 },
		{ "a reply type sent as a request", "\x0c\x00\x00\x00\x00", 5 },
		{ "type 255", "\xff", 1 },
	};

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		b = raw(cases[i].bytes, cases[i].len);
		t = exchange(fd, &rx, b, reply);
		wbuf_free(b);
		n++;
		if (t != SSH_AGENT_FAILURE) {
			printf("not ok: %s: reply %d, expected %d\n", cases[i].name, t,
			       SSH_AGENT_FAILURE);
			bad = 1;
			if (t < 0)
				return 1;
		}
	}
	/* A SIGN_REQUEST for a key the agent does not have. */
	{
		struct wbuf *other = wbuf_new(), *data;
		struct msg_ssh_sign_req m;

		if (other == NULL || wbuf_put_cstring(other, "ssh-ed25519") != 0 ||
		    wbuf_put_string(other, "01234567890123456789012345678901", 32) != 0)
			die("out of memory");
		data = userauth(other);
		m = (struct msg_ssh_sign_req){ wbuf_ptr(other), wbuf_len(other), wbuf_ptr(data),
					       wbuf_len(data), 0 };
		b = wbuf_new();
		if (b == NULL || msg_ssh_sign_req_put(b, &m) != 0)
			die("out of memory");
		t = exchange(fd, &rx, b, reply);
		n++;
		if (t != SSH_AGENT_FAILURE) {
			printf("not ok: SIGN_REQUEST with an unknown key: reply %d\n", t);
			bad = 1;
		}
		wbuf_free(b);
		wbuf_free(data);
		wbuf_free(other);
	}
	/* SHA-1 ssh-rsa (no flag) is refused for an RSA key. */
	if (strcmp(key_alg(key), "rsa-sha2-256") == 0) {
		struct wbuf *data = userauth(key);
		struct msg_ssh_sign_req m = { wbuf_ptr(key), wbuf_len(key), wbuf_ptr(data),
					      wbuf_len(data), 0 };

		b = wbuf_new();
		if (b == NULL || msg_ssh_sign_req_put(b, &m) != 0)
			die("out of memory");
		t = exchange(fd, &rx, b, reply);
		n++;
		if (t != SSH_AGENT_FAILURE) {
			printf("not ok: SHA-1 ssh-rsa SIGN_REQUEST: reply %d\n", t);
			bad = 1;
		}
		wbuf_free(b);
		wbuf_free(data);
	}
	/* Still serving: a good REQUEST_IDENTITIES. */
	b = raw("\x0b", 1);
	t = exchange(fd, &rx, b, reply);
	wbuf_free(b);
	if (t != SSH_AGENT_IDENTITIES_ANSWER) {
		printf("not ok: REQUEST_IDENTITIES after the malformed frames: reply %d\n", t);
		bad = 1;
	}
	close(fd);
	/* An oversized frame: the agent closes the connection. */
	fd = connect_to(sock);
	{
		unsigned char hdr[5] = { 0x00, 0x04, 0x00, 0x01, 0x0b };

		if (write(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr))
			die("write");
		wbuf_reset(reply);
		frame_rx_reset(&rx);
		t = frame_read(fd, &rx, reply, SSH_AGENT_FRAME_MAX, 5000, 5000);
		if (t != MTLS_ERR_CONNECTION_CLOSED) {
			printf("not ok: a frame over 256 KiB was not answered by closing (%d)\n",
			       t);
			bad = 1;
		}
	}
	close(fd);
	wbuf_free(reply);
	if (!bad)
		printf("ok: %d malformed or refused frames answered with SSH_AGENT_FAILURE\n", n);
	return bad;
}

/* An Ed25519 host key: its blob, and a session-bind body signed with it. */
static struct wbuf *
hostkey_new(EVP_PKEY **pk)
{
	unsigned char raw[32];
	size_t len = sizeof(raw);
	struct wbuf *b = wbuf_new();

	if ((*pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL ||
	    EVP_PKEY_get_raw_public_key(*pk, raw, &len) != 1 || b == NULL ||
	    wbuf_put_cstring(b, "ssh-ed25519") != 0 || wbuf_put_string(b, raw, len) != 0)
		die("cannot make a host key");
	return b;
}

static struct wbuf *
bind_body(EVP_PKEY *pk, const struct wbuf *hostkey, const unsigned char *sid, int fwd)
{
	unsigned char sig[64];
	size_t sig_len = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	struct wbuf *b = wbuf_new(), *sb = wbuf_new();

	if (ctx == NULL || b == NULL || sb == NULL ||
	    EVP_DigestSignInit_ex(ctx, NULL, NULL, NULL, NULL, pk, NULL) != 1 ||
	    EVP_DigestSign(ctx, sig, &sig_len, sid, 32) != 1 ||
	    wbuf_put_cstring(sb, "ssh-ed25519") != 0 || wbuf_put_string(sb, sig, sig_len) != 0 ||
	    wbuf_put_u8(b, SSH_AGENTC_EXTENSION) != 0 ||
	    wbuf_put_cstring(b, SSH_EXT_SESSION_BIND) != 0 ||
	    wbuf_put_string(b, wbuf_ptr(hostkey), wbuf_len(hostkey)) != 0 ||
	    wbuf_put_string(b, sid, 32) != 0 ||
	    wbuf_put_string(b, wbuf_ptr(sb), wbuf_len(sb)) != 0 ||
	    wbuf_put_u8(b, (uint8_t)fwd) != 0)
		die("cannot build session-bind");
	EVP_MD_CTX_free(ctx);
	wbuf_free(sb);
	return b;
}

static int
sign_on(int fd, struct frame_rx *rx, const struct wbuf *key, const struct wbuf *data)
{
	struct msg_ssh_sign_req m = { wbuf_ptr(key), wbuf_len(key), wbuf_ptr(data), wbuf_len(data),
				      SSH_AGENT_RSA_SHA2_256 };
	struct wbuf *body = wbuf_new(), *reply = wbuf_new();
	int t;

	if (body == NULL || reply == NULL || msg_ssh_sign_req_put(body, &m) != 0)
		die("cannot build SIGN_REQUEST");
	t = exchange(fd, rx, body, reply);
	wbuf_free(body);
	wbuf_free(reply);
	return t;
}

static void
bind_case(const char *name, int t)
{
	printf("%s reply %d\n", name, t);
}

/* The checks of the bindings, on connections of their own. */
static int
binds(const char *sock, const struct wbuf *key)
{
	unsigned char sid[32], sid2[32];
	struct frame_rx rx = { 0 };
	struct wbuf *reply = wbuf_new(), *hk, *hk2, *b, *d;
	EVP_PKEY *pk, *pk2;
	int fd;

	if (reply == NULL || RAND_bytes(sid, 32) != 1 || RAND_bytes(sid2, 32) != 1)
		die("random");
	hk = hostkey_new(&pk);
	hk2 = hostkey_new(&pk2);

	/* bound for authentication: the session id and host key must fit */
	fd = connect_to(sock);
	b = bind_body(pk, hk, sid, 0);
	bind_case("bind", exchange(fd, &rx, b, reply));
	wbuf_free(b);
	d = userauth_full(key, key, sid2, NULL);
	bind_case("userauth-other-session", sign_on(fd, &rx, key, d));
	wbuf_free(d);
	d = userauth_full(key, key, sid, hk2);
	bind_case("hostbound-other-hostkey", sign_on(fd, &rx, key, d));
	wbuf_free(d);
	d = userauth_full(key, key, sid, hk);
	bind_case("hostbound-bound-hostkey", sign_on(fd, &rx, key, d));
	wbuf_free(d);
	d = userauth_full(key, key, sid, NULL);
	bind_case("userauth-bound-session", sign_on(fd, &rx, key, d));
	wbuf_free(d);
	b = bind_body(pk2, hk2, sid2, 0);
	bind_case("rebind-after-auth", exchange(fd, &rx, b, reply));
	wbuf_free(b);
	close(fd);

	/* the same session id twice, and a signature by another host key */
	fd = connect_to(sock);
	frame_rx_reset(&rx);
	b = bind_body(pk, hk, sid, 1);
	bind_case("bind-forwarding", exchange(fd, &rx, b, reply));
	bind_case("bind-same-session", exchange(fd, &rx, b, reply));
	wbuf_free(b);
	b = bind_body(pk, hk2, sid2, 0);
	bind_case("bind-wrong-signer", exchange(fd, &rx, b, reply));
	wbuf_free(b);
	close(fd);

	/* hostbound on an unbound connection */
	fd = connect_to(sock);
	frame_rx_reset(&rx);
	d = userauth_full(key, key, sid, hk);
	bind_case("hostbound-unbound", sign_on(fd, &rx, key, d));
	wbuf_free(d);
	close(fd);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(pk2);
	wbuf_free(hk);
	wbuf_free(hk2);
	wbuf_free(reply);
	return 0;
}

static int
query(const char *sock)
{
	struct frame_rx rx = { 0 };
	struct wbuf *b = raw("\x1b\x00\x00\x00\x05query", 10), *reply = wbuf_new();
	const unsigned char *p;
	size_t len;
	int fd = connect_to(sock), t;

	t = exchange(fd, &rx, b, reply);
	printf("reply %d\n", t);
	while (t == SSH_AGENT_SUCCESS && wbuf_get_string_direct(reply, &p, &len, 256) == 0)
		printf("%.*s\n", (int)len, (const char *)p);
	close(fd);
	wbuf_free(b);
	wbuf_free(reply);
	return 0;
}

static int
bench(const char *sock, const struct wbuf *key, double seconds)
{
	struct wbuf *data = userauth(key), *body = wbuf_new(), *reply = wbuf_new();
	struct msg_ssh_sign_req m = { wbuf_ptr(key), wbuf_len(key), wbuf_ptr(data), wbuf_len(data),
				      SSH_AGENT_RSA_SHA2_256 };
	struct frame_rx rx = { 0 };
	struct timespec t0, t1;
	int fd = connect_to(sock);
	double s = 0;
	long n = 0;

	if (body == NULL || reply == NULL || msg_ssh_sign_req_put(body, &m) != 0)
		die("cannot build SIGN_REQUEST");
	/* One signature first: connection and key look-up are not counted. */
	if (exchange(fd, &rx, body, reply) != SSH_AGENT_SIGN_RESPONSE)
		die("a signature was refused");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (s < seconds) {
		if (exchange(fd, &rx, body, reply) != SSH_AGENT_SIGN_RESPONSE)
			die("a signature was refused");
		n++;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	}
	printf("%.0f\n", (double)n / s);
	close(fd);
	wbuf_free(data);
	wbuf_free(body);
	wbuf_free(reply);
	return 0;
}

int
main(int argc, char **argv)
{
	struct wbuf *key = NULL, *data;
	int t;

	if (argc < 3)
		die("usage: test_ssh_frames SOCK MODE [ARGS]");
	if (argc > 3)
		key = read_pub(argv[3]);
	if (strcmp(argv[2], "query") == 0)
		return query(argv[1]);
	if (key == NULL)
		die("MODE needs KEY.pub");
	if (strcmp(argv[2], "sign-random") == 0) {
		unsigned char r[64];

		if (RAND_bytes(r, sizeof(r)) != 1 || (data = wbuf_from(r, sizeof(r))) == NULL)
			die("random");
	} else if (strcmp(argv[2], "sign-other") == 0 && argc == 5) {
		struct wbuf *other = read_pub(argv[4]);

		/* the signing key's algorithm: only the key blob is wrong */
		data = userauth_as(other, key);
		wbuf_free(other);
	} else if (strcmp(argv[2], "sign-wrong-alg") == 0) {
		data = userauth(key);
		{
			const unsigned char *p = wbuf_ptr(data);
			size_t n = wbuf_len(data), i;
			unsigned char *copy = malloc(n);

			if (copy == NULL)
				die("out of memory");
			memcpy(copy, p, n);
			/* "rsa-sha2-256" -> "rsa-sha2-512" in place (same length) */
			for (i = 0; i + 12 <= n; i++)
				if (memcmp(copy + i, "rsa-sha2-256", 12) == 0) {
					memcpy(copy + i, "rsa-sha2-512", 12);
					break;
				}
			wbuf_free(data);
			data = wbuf_from(copy, n);
			free(copy);
		}
	} else if (strcmp(argv[2], "sign-userauth") == 0) {
		data = userauth(key);
	} else if (strcmp(argv[2], "bind") == 0) {
		return binds(argv[1], key);
	} else if (strcmp(argv[2], "malformed") == 0) {
		return malformed(argv[1], key);
	} else if (strcmp(argv[2], "bench") == 0 && argc == 5) {
		return bench(argv[1], key, atof(argv[4]));
	} else {
		die("unknown mode");
	}
	t = sign_type(argv[1], key, data);
	printf("reply %d\n", t);
	wbuf_free(data);
	wbuf_free(key);
	return 0;
}
