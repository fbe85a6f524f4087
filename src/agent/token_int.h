/*
 * token_int.h - what the token layer's files share inside the agent:
 * token.c (identities, logins, hot-plug) and sign.c (the request pipeline
 * of a signature).  Not for anyone else.
 */
#ifndef MTLS_TOKEN_INT_H
#define MTLS_TOKEN_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>
#include <p11-kit/uri.h>

#include "conf.h"
#include "helper.h"
#include "msg_p11.h"

/* Channels to the helper: signatures in parallel, one per channel. */
#define HELPER_CHANNELS 16

struct ident {
	char *name;
	unsigned char *id; /* CKA_ID of key (and certificate) */
	size_t id_len;
	char *key_label;   /* CKA_LABEL to match when there is no id */
	P11KitUri *uri;	   /* key URI: token and object selection */
	char *token_label; /* token the identity was found on */
	char *token_serial;
	int present; /* token seen at the last scan */
	X509 *cert;
	EVP_PKEY *pub; /* the key's public half: the certificate's, or the
			* token's numbers for a key with no certificate yet */
	unsigned char *cert_der;
	size_t cert_der_len;
	unsigned char **chain_der;
	size_t *chain_der_len;
	size_t n_chain;
	int key_type;
	unsigned int key_bits;
	uint32_t purposes;
	int has_key;			  /* the private key is found (logged in) */
	uint64_t key;			  /* its handle in the helper */
	int key_mismatch;		  /* the key at its id is not the certificate's */
	const struct config_identity *ci; /* its policy; NULL if discovered */
	time_t attached_at;		  /* when the key was attached (lifetime) */
	time_t last_used;		  /* last signature (idle-logout) */
	double bucket;			  /* rate-limit tokens left */
	struct timespec bucket_at;
};

/* A slot with a token, as the helper listed it. */
struct slot {
	uint64_t id;
	char *label, *serial, *manufacturer, *model;
	uint32_t flags;
	time_t login_time; /* when we logged it in, 0 = not by us / not in */
};

struct tokenset {
	pthread_rwlock_t lock;
	const struct config *cfg;
	struct helper *hp;
	unsigned int gen; /* helper generation the tables were read from */
	struct slot *slots;
	size_t nslots;
	struct ident *ids;
	size_t n;
	int stale; /* a request saw the token vanish: rescan */
	/* Module re-initialisation (REINIT, see token_poll()): since when
	 * identities are lost (0: they are not), when it last ran. */
	long failing_since;
	long restarted_at;
	int lost;
	pthread_mutex_t stat_mu; /* last_used and rate buckets of identities */
};

/* Enrollment (enroll.c) reaches into token.c through these. */
WUR int tk_write_lock(struct tokenset *ts);
WUR int tk_list_objects(struct tokenset *ts, uint64_t slot, struct msg_p11_objects_resp *objs);
int tk_token_matches(P11KitUri *uri, const struct slot *s);
/* Whether the configuration offers this token at all (`token =`, or the
 * [identity] sections' key URIs). */
int tk_offered(struct tokenset *ts, const struct slot *s);
/* Re-reads slots and identities (write lock held). */
void tk_reenumerate(struct tokenset *ts);
/* The public key of a private key object (RSA numbers, EC params and
 * point), or NULL. */
EVP_PKEY *tk_object_pubkey(const struct p11_object *o);
/* Is the key object o the public key pub? */
int tk_key_is(EVP_PKEY *pub, const struct p11_object *o);

/* Expiry (enroll_expiry.c): whole days from now to the certificate's
 * notAfter (negative once expired) and that time; 0 or -1. */
int tk_cert_days_left(X509 *x, time_t now, int *days, time_t *not_after);
/* Logs a warning once a day per certificate within expiry-warning-days. */
void tk_expiry_warn(struct tokenset *ts, time_t now);
/* Certificates within expiry-warning-days or expired; lock held. */
uint32_t tk_expiring(struct tokenset *ts, time_t now);

/* Moves DER that OpenSSL allocated (len from i2d_*(), <= 0 on failure)
 * into malloc() memory, as identities and replies keep it; frees der. */
WUR int tk_der_keep(unsigned char *der, int len, unsigned char **out, size_t *out_len);
/* A token label that can be an identity name: [A-Za-z0-9._-]{1,64}. */
int tk_valid_name(const char *s);
/* The identity called name, or NULL; lock held. */
struct ident *tk_find_ident(struct tokenset *ts, const char *name);
/* The slot holding the identity's token, or NULL; lock held. */
struct slot *tk_ident_slot(struct tokenset *ts, const struct ident *id);
/* Fresh flags of slot from the helper; MTLS_ERR_TOKEN_ABSENT if gone. */
WUR int tk_slot_flags(struct tokenset *ts, const struct slot *slot, uint32_t *flags,
		      int *logged_in);
/* One helper request (req is reset); *fail cleared by the caller. */
WUR int tk_call(struct tokenset *ts, struct wbuf *req, struct wbuf *reply,
		struct msg_p11_error *fail);
/* The read lock (why/why_len unused: helper calls are bounded). */
WUR int tk_read_lock(struct tokenset *ts, char *why, size_t why_len);
/* Re-reads the tokens if a request saw one vanish or the helper changed. */
void tk_catch_up(struct tokenset *ts);

#endif
