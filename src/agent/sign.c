/*
 * sign.c - the pipeline of one SIGN request: find the identity → peer
 * policy → scheme, purpose and content (policy.c) → rate limit →
 * confirmation (confirm.c, no lock held) → hash → the helper signs
 * (helper.c) → the signature in wire form.  The audit line is written by
 * the caller (server.c) from the result.  Token state comes from token.c
 * through token_int.h.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "confirm.h"
#include "log.h"
#include "mtls-agent.h"
#include "policy.h"
#include "purpose.h"
#include "secmem.h"
#include "ssh_policy.h"
#include "token.h"
#include "token_int.h"

/*
 * The digests the schemes use, fetched once: a fetch per signature takes
 * the provider store's lock and a lookup every time.
 */
static const char *const digest_names[] = { "SHA256", "SHA384", "SHA512" };
static EVP_MD *digests[sizeof(digest_names) / sizeof(digest_names[0])];
static pthread_once_t digests_once = PTHREAD_ONCE_INIT;

static void
fetch_digests(void)
{
	size_t i;

	for (i = 0; i < sizeof(digests) / sizeof(digests[0]); i++)
		digests[i] = EVP_MD_fetch(NULL, digest_names[i], NULL);
}

/* A digest for `name`: the fetched-once one (*owned 0), or a new fetch. */
static EVP_MD *
digest_get(const char *name, int *owned)
{
	size_t i;

	(void)pthread_once(&digests_once, fetch_digests);
	*owned = 0;
	for (i = 0; i < sizeof(digests) / sizeof(digests[0]); i++)
		if (digests[i] != NULL && strcmp(name, digest_names[i]) == 0)
			return digests[i];
	*owned = 1;
	return EVP_MD_fetch(NULL, name, NULL);
}

/* DigestInfo prefixes (RFC 8017 section 9.2, note 1). */
static const unsigned char di_sha256[19] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
					     0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					     0x01, 0x05, 0x00, 0x04, 0x20 };
static const unsigned char di_sha384[19] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60,
					     0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					     0x02, 0x05, 0x00, 0x04, 0x30 };
static const unsigned char di_sha512[19] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60,
					     0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					     0x03, 0x05, 0x00, 0x04, 0x40 };

/* r || s from the token as the DER ECDSA-Sig-Value TLS wants. */
static int
ecdsa_der(const unsigned char *rs, size_t len, unsigned char **sigp, size_t *sig_len)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	int n, ret = MTLS_ERR_TOKEN;

	if (len == 0 || len % 2 != 0)
		return MTLS_ERR_TOKEN;
	if ((es = ECDSA_SIG_new()) == NULL || (r = BN_bin2bn(rs, (int)len / 2, NULL)) == NULL ||
	    (s = BN_bin2bn(rs + len / 2, (int)len / 2, NULL)) == NULL ||
	    ECDSA_SIG_set0(es, r, s) != 1)
		goto out;
	r = s = NULL;
	if ((n = i2d_ECDSA_SIG(es, &der)) <= 0)
		goto out;
	if ((*sigp = malloc((size_t)n)) == NULL) {
		ret = MTLS_ERR_ALLOC;
		goto out;
	}
	memcpy(*sigp, der, (size_t)n);
	*sig_len = (size_t)n;
	ret = 0;
out:
	OPENSSL_free(der);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return ret;
}

/* Hashes (unless the content is the digest) and has the helper sign. */
static int
sign_with(struct tokenset *ts, const struct ident *id, const struct slot *slot,
	  const struct scheme_info *s, int purpose, const unsigned char *content, size_t len,
	  unsigned char **sigp, size_t *sig_len, char *why, size_t why_len)
{
	unsigned char md[EVP_MAX_MD_SIZE], data[19 + EVP_MAX_MD_SIZE];
	struct msg_p11_sign_req sr = { .slot = slot->id, .key = id->key, .data = data };
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_error fail;
	struct msg_sign_resp resp = { 0 };
	const unsigned char *tbs = md;
	unsigned int md_len = 0;
	EVP_MD *dgst = NULL;
	size_t tbs_len;
	int r = MTLS_ERR_INTERNAL, dgst_owned = 0;

	memset(&fail, 0, sizeof(fail));
	if (req == NULL || reply == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((dgst = digest_get(s->digest, &dgst_owned)) == NULL)
		goto out;
	if (purpose == MTLS_AGENT_PURPOSE_RAW_DIGEST ||
	    purpose == MTLS_AGENT_PURPOSE_PKCS11_DIGEST) {
		tbs = content;
		tbs_len = len;
	} else {
		if (EVP_Digest(content, len, md, &md_len, dgst, NULL) != 1)
			goto out;
		tbs_len = md_len;
	}
	if (tbs_len != 32 && tbs_len != 48 && tbs_len != 64) {
		snprintf(why, why_len, "digest of %zu bytes", tbs_len);
		r = MTLS_ERR_CONTENT_REJECTED;
		goto out;
	}
	if (s->key_type == MTLS_AGENT_KEY_RSA && !s->pss) {
		sr.mech = P11_MECH_RSA_PKCS;
		memcpy(data, tbs_len == 32 ? di_sha256 : tbs_len == 48 ? di_sha384 : di_sha512, 19);
		memcpy(data + 19, tbs, tbs_len);
		sr.data_len = 19 + tbs_len;
	} else {
		sr.mech = s->key_type == MTLS_AGENT_KEY_RSA ? P11_MECH_RSA_PSS : P11_MECH_ECDSA;
		if (s->pss)
			sr.hash = tbs_len == 32	  ? P11_HASH_SHA256
				  : tbs_len == 48 ? P11_HASH_SHA384
						  : P11_HASH_SHA512;
		memcpy(data, tbs, tbs_len);
		sr.data_len = tbs_len;
	}
	if ((r = msg_p11_sign_req_put(req, &sr)) != 0)
		goto out;
	if ((r = tk_call(ts, req, reply, &fail)) != 0) {
		switch (r) {
		case MTLS_ERR_TIMEOUT:
			why_printf(why, why_len,
				   "the PKCS#11 module has not answered a signature for %u s; it "
				   "is started again, and the token needs a login",
				   ts->cfg->token_timeout);
			break;
		case MTLS_ERR_LOGIN_REQUIRED:
			snprintf(why, why_len, "token is not logged in");
			break;
		case MTLS_ERR_TOKEN_ABSENT: snprintf(why, why_len, "token removed"); break;
		default:
			if (fail.rv == CKR_SESSION_HANDLE_INVALID) {
				snprintf(why, why_len, "token removed");
				r = MTLS_ERR_TOKEN_ABSENT;
			} else if (fail.rv != 0) {
				snprintf(why, why_len,
					 "token signature failed (PKCS#11 error 0x%lx)",
					 (unsigned long)fail.rv);
			} else {
				snprintf(why, why_len,
					 "the PKCS#11 helper failed; it is started again, and the "
					 "token needs a login");
			}
		}
		goto out;
	}
	if ((r = msg_sign_resp_get(reply, &resp)) != 0) {
		r = MTLS_ERR_TOKEN;
		goto out;
	}
	if (s->key_type == MTLS_AGENT_KEY_EC) {
		r = ecdsa_der(resp.sig, resp.sig_len, sigp, sig_len);
	} else {
		*sigp = resp.sig;
		*sig_len = resp.sig_len;
		resp.sig = NULL;
		r = 0;
	}
out:
	if (r == MTLS_ERR_INTERNAL && why[0] == '\0')
		snprintf(why, why_len, "signature setup failed");
	msg_sign_resp_clear(&resp);
	msg_p11_error_clear(&fail);
	wbuf_free(req);
	wbuf_free(reply);
	if (dgst_owned)
		EVP_MD_free(dgst);
	mtls_wipe(md, sizeof(md));
	mtls_wipe(data, sizeof(data));
	return r;
}

/*
 * Rate limit: a bucket of `rate` signatures refilled at rate/60 a second.
 * Returns 1 if this signature may go ahead.
 */
static int
rate_ok(struct tokenset *ts, struct ident *id, unsigned int rate)
{
	struct timespec now;
	double elapsed;
	int ok;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ts->stat_mu);
	if (id->bucket_at.tv_sec == 0 && id->bucket_at.tv_nsec == 0) {
		id->bucket = rate;
	} else {
		elapsed = (double)(now.tv_sec - id->bucket_at.tv_sec) +
			  (double)(now.tv_nsec - id->bucket_at.tv_nsec) / 1e9;
		id->bucket += elapsed * rate / 60.0;
		if (id->bucket > rate)
			id->bucket = rate;
	}
	id->bucket_at = now;
	ok = id->bucket >= 1.0;
	if (ok)
		id->bucket -= 1.0;
	pthread_mutex_unlock(&ts->stat_mu);
	return ok;
}

/*
 * Phase 1 (read lock held): every decision that needs no token; *idp is
 * the identity, valid while the lock is held.  `charge` counts the request
 * against the rate limit (not again when re-deciding after a confirmation).
 */
static int
sign_decide(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	    int purpose, const unsigned char *content, size_t len, int charge, struct ident **idp,
	    int *confirm, char *why, size_t why_len)
{
	const struct scheme_info *s;
	struct ident *id;
	int r;

	*confirm = 0;
	*idp = NULL;
	if ((id = tk_find_ident(ts, name)) == NULL) {
		snprintf(why, why_len, "no identity named %s", name);
		return MTLS_ERR_NO_IDENTITY;
	}
	if (id->ci != NULL && id->ci->n_peers > 0 &&
	    !policy_peer_matches(id->ci->peers, id->ci->n_peers, peer->uid, peer->gid, peer->exe)) {
		snprintf(why, why_len, "peer uid %u gid %u exe %s may not use identity %s",
			 (unsigned)peer->uid, (unsigned)peer->gid, peer->exe, name);
		return MTLS_ERR_POLICY_DENIED;
	}
	if ((r = policy_check_sign(id->purposes, id->key_type, id->key_bits, scheme, purpose,
				   content, len, &s, why, why_len)) != 0)
		return r;
	/* SSH: this identity's key, the connection's bindings, namespaces. */
	if ((purpose == MTLS_AGENT_PURPOSE_SSH || purpose == MTLS_AGENT_PURPOSE_SSH_SIG) &&
	    (r = ssh_policy_check(id->cert, id->ci, peer->ssh, scheme, purpose, content, len, why,
				  why_len)) != 0)
		return r;
	/* A digest from the PKCS#11 front end is a blank cheque: only for the
	 * programs the identity names. */
	if (purpose == MTLS_AGENT_PURPOSE_PKCS11_DIGEST &&
	    (id->ci == NULL || id->ci->n_peers == 0)) {
		snprintf(why, why_len,
			 "identity %s: pkcs11-digest needs a peers list naming the programs "
			 "that may have digests signed",
			 name);
		return MTLS_ERR_POLICY_DENIED;
	}
	/* A certificate request must be for this identity's own key. */
	if (purpose == MTLS_AGENT_PURPOSE_CSR &&
	    (r = purpose_csr_check(content, len, id->pub, why, why_len)) != 0)
		return r;
	if (charge && id->ci != NULL && id->ci->rate_limit > 0 &&
	    !rate_ok(ts, id, id->ci->rate_limit)) {
		snprintf(why, why_len, "identity %s: more than %u signatures a minute", name,
			 id->ci->rate_limit);
		warn("rate limit hit: identity %s (%u a minute), peer pid %ld", name,
		     id->ci->rate_limit, (long)peer->pid);
		return MTLS_ERR_RATE_LIMITED;
	}
	*confirm = id->ci != NULL && id->ci->confirm;
	*idp = id;
	return 0;
}

/*
 * Asks for confirmation with no lock held (other clients go on meanwhile),
 * then takes the read lock again and decides again: a reload may have
 * removed or renamed the identity, changed its policy or given the name
 * another certificate (and so another key) meanwhile.  On success the read
 * lock is held and *idp is the identity as it is now.
 */
static int
sign_confirm(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	     int purpose, const unsigned char *content, size_t len, struct ident **idp, char *why,
	     size_t why_len)
{
	unsigned char *cert = NULL;
	size_t cert_len = (*idp)->cert_der_len;
	char prompt[1024], detail[512];
	int r, confirm = 0;

	/* The confirmed key is the certificate's: remember which one. */
	if ((cert = malloc(cert_len)) == NULL) {
		pthread_rwlock_unlock(&ts->lock);
		return MTLS_ERR_ALLOC;
	}
	memcpy(cert, (*idp)->cert_der, cert_len);
	/* SSH: the user, host and host key the signature is for. */
	ssh_describe(peer->ssh, (*idp)->ci, purpose, content, len, detail, sizeof(detail));
	*idp = NULL;
	pthread_rwlock_unlock(&ts->lock);
	snprintf(prompt, sizeof(prompt),
		 "Allow %s (executable as the kernel reports it; pid %ld, uid %u) to sign a %s "
		 "with the key \"%s\"?%s%s",
		 peer->exe, (long)peer->pid, (unsigned)peer->uid, mtls_agent_purpose_name(purpose),
		 name, detail[0] ? " " : "", detail);
	if ((r = confirm_ask(ts->cfg->askpass, ts->cfg->confirm_timeout, prompt, why, why_len)) !=
	    0)
		goto out;
	if ((r = tk_read_lock(ts, why, why_len)) != 0)
		goto out;
	r = sign_decide(ts, peer, name, scheme, purpose, content, len, 0, idp, &confirm, why,
			why_len);
	if (r == 0 &&
	    ((*idp)->cert_der_len != cert_len || memcmp((*idp)->cert_der, cert, cert_len) != 0)) {
		snprintf(why, why_len,
			 "identity %s was reconfigured while its use was being confirmed", name);
		r = MTLS_ERR_CONFIRM_DENIED;
	}
	if (r != 0) {
		*idp = NULL;
		pthread_rwlock_unlock(&ts->lock);
	}
out:
	free(cert);
	return r;
}

int
token_sign(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	   int purpose, const unsigned char *content, size_t len, unsigned char **sig,
	   size_t *sig_len, char *why, size_t why_len)
{
	const struct scheme_info *s;
	struct slot *slot;
	struct ident *id;
	uint32_t flags;
	int r, confirm = 0, in;

	*sig = NULL;
	*sig_len = 0;
	why[0] = '\0';
	tk_catch_up(ts);
	if ((r = tk_read_lock(ts, why, why_len)) != 0)
		return r;
	/* Decided and signed under one read lock, so a reload cannot take
	 * the identity away in between; only a confirmation lets go of it. */
	r = sign_decide(ts, peer, name, scheme, purpose, content, len, 1, &id, &confirm, why,
			why_len);
	if (r != 0)
		goto out;
	if (confirm && (r = sign_confirm(ts, peer, name, scheme, purpose, content, len, &id, why,
					 why_len)) != 0)
		return r; /* no lock held */
	s = scheme_lookup(scheme);
	slot = tk_ident_slot(ts, id);
	if (!id->present || slot == NULL) {
		snprintf(why, why_len, "the token of %s is not present", name);
		r = MTLS_ERR_TOKEN_ABSENT;
		goto out;
	}
	if (!id->has_key) {
		if (tk_slot_flags(ts, slot, &flags, &in) == MTLS_ERR_TOKEN_ABSENT) {
			snprintf(why, why_len, "the token of %s is not present", name);
			r = MTLS_ERR_TOKEN_ABSENT;
			goto out;
		}
		if (id->key_mismatch) {
			snprintf(why, why_len,
				 "identity %s: key does not match certificate (the private key "
				 "at its id is another key); nothing is signed with it",
				 name);
			r = MTLS_ERR_TOKEN;
			goto out;
		}
		if (in) {
			/* Logged in, yet no usable key: say so, not "log in". */
			snprintf(why, why_len,
				 "no private key for %s on its token, or one that does not match "
				 "its certificate",
				 name);
			r = MTLS_ERR_TOKEN;
			goto out;
		}
		snprintf(why, why_len, "log in to the token of %s first", name);
		r = MTLS_ERR_LOGIN_REQUIRED;
		goto out;
	}
	r = sign_with(ts, id, slot, s, purpose, content, len, sig, sig_len, why, why_len);
	if (r == 0) {
		pthread_mutex_lock(&ts->stat_mu);
		id->last_used = time(NULL);
		pthread_mutex_unlock(&ts->stat_mu);
	} else if (r == MTLS_ERR_TOKEN || r == MTLS_ERR_TOKEN_ABSENT) {
		/* A failure may mean the token went away under the key:
		 * answer "absent" if so, and have the poller rescan. */
		if (tk_slot_flags(ts, slot, &flags, NULL) != 0) {
			snprintf(why, why_len, "the token of %s was removed", name);
			r = MTLS_ERR_TOKEN_ABSENT;
		}
		__atomic_store_n(&ts->stale, 1, __ATOMIC_RELAXED);
	}
out:
	pthread_rwlock_unlock(&ts->lock);
	return r;
}
