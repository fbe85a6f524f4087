/*
 * agent_helpers - what the mtls-agent integration tests (test_agent*.c)
 * share over the fixture (agent_fixture.h): the fixture and the default
 * agent of a test, the token's keys and the TLS schemes written out
 * independently of src/common/scheme.c, content builders, signature
 * checks with OpenSSL, raw-frame helpers for protocol tests, and the
 * cmocka group and per-test setup and teardown.  Test scaffolding: a
 * helper that fails fails the test.
 */
#ifndef MTLS_AGENT_HELPERS_H
#define MTLS_AGENT_HELPERS_H

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "agent_fixture.h"
#include "mtls-agent.h"
#include "proto.h"
#include "wbuf.h"

#define IO_TIMEOUT_MS 5000
#define TOKEN_URI     "pkcs11:token=mtls-test"
#define SO_PIN	      "12345678"
#define WRONG_PIN     "000000"
#define DISTINCT_PIN  "Zq7-PIN-xK4w-93Jv" /* test_pin_not_in_memory */

/* snprintf that fails the test instead of truncating. */
#define format_into(buf, ...)                                                                      \
	do {                                                                                       \
		int n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                                \
		if (n_ < 0 || (size_t)n_ >= sizeof(buf))                                           \
			fail_msg("%s:%d: text does not fit", __FILE__, __LINE__);                  \
	} while (0)

/* Compares MTLS_ERR_* codes and says which, with the agent's message. */
#define assert_err(expr, want)                                                                     \
	do {                                                                                       \
		int got_ = (expr), want_ = (want);                                                 \
		if (got_ != want_)                                                                 \
			fail_msg("%s: got %d (%s), want %d (%s); agent said \"%s\"", #expr, got_,  \
				 errname(got_), want_, errname(want_), mtls_agent_last_message()); \
	} while (0)

#define RAW_FDS 4096

#define P256_ID "key = " TOKEN_URI ";id=%03\n"
/* The same inside a printf format. */
#define P256_ID_FMT "key = " TOKEN_URI ";id=%%03\n"

/* The fixture's keys (softhsm-setup.sh). */
struct test_key {
	const char *label;
	unsigned char id;
	int type;
	unsigned int bits;
};
#define N_KEYS ((size_t)4)
extern const struct test_key keys[N_KEYS];

/* RFC 8446 4.2.3, written out independently of src/common/scheme.c. */
struct test_scheme {
	uint16_t code;
	const char *md;
	size_t hash_len;
	int key_type;
	int pss;
	unsigned int ec_bits;
};
#define N_SCHEMES ((size_t)8)
extern const struct test_scheme schemes[N_SCHEMES];

struct slow_signer {
	const char *sock;
	int result;
	long ms;
};

extern struct agent_fixture fx;
extern struct agent_proc ag; /* the agent of tests set up with setup_agent */
extern char peer_base[64];   /* test_peer_uid's directory, removed in teardown */
extern char extra_token[64]; /* a token a test made, deleted in teardown */
extern int pin_changed;	     /* test_pin_not_in_memory changed the PIN: restore it */
/* Where test_token_moved put the token directory; moved back in teardown. */
extern char moved_from[PATH_MAX], moved_to[PATH_MAX];

extern struct frame_rx raw_rx[RAW_FDS];

long now_ms(void);
void sleep_ms(long ms);
const char *errname(int r);
const struct test_scheme *find_scheme(uint16_t code);
void dump_log(const struct agent_proc *p);
void start_agent(const char *config, const char *const *args, struct agent_proc *p);
unsigned char *cert_der_from_pem(const char *label, size_t *lenp);
EVP_PKEY *cert_pubkey(const char *label);
int verify_content(EVP_PKEY *pk, uint16_t scheme, const unsigned char *content, size_t len,
		   const unsigned char *sig, size_t sig_len);
struct wbuf *tls13_content(const char *context, size_t hash_len);
struct wbuf *tls13_client(size_t hash_len);
struct wbuf *pam_content(void);
mtls_agent *connect_to(const char *sock);
const struct mtls_agent_identity *find_identity(const struct mtls_agent_identity *ids, size_t n,
						const char *name);
size_t count_identities(mtls_agent *a);
void assert_fresh_client_lists(const char *sock, size_t want);
uint32_t flags_of(mtls_agent *a, const char *name);
void login(mtls_agent *a, const char *identity);
int sign(mtls_agent *a, const char *identity, uint16_t scheme, int purpose,
	 const struct wbuf *content, unsigned char **sig, size_t *sig_len);
void sign_and_verify(mtls_agent *a, const char *identity, const char *label, uint16_t scheme,
		     int purpose, const struct wbuf *content);
void sign_refused(mtls_agent *a, const char *identity, uint16_t scheme, int purpose,
		  const struct wbuf *content, int want);
struct frame_rx *rx_of(int fd);
int raw_connect(const char *path);
void raw_send_body(int fd, struct wbuf *body);
int raw_read(int fd, uint8_t *type, struct wbuf *body);
int raw_read_error(int fd);
struct wbuf *hello_body(uint32_t min, uint32_t max);
void raw_hello(int fd);
int group_setup(void **state);
int group_teardown(void **state);
int setup_none(void **state);
int setup_agent(void **state);
int teardown_agents(void **state);
void skip_under_valgrind(const char *why);
void *sign_in_thread(void *arg);
int change_token_pin(const char *from, const char *to);

#endif
