/*
 * certval.c - client certificate validation: chain, validity, key usage,
 * CRL and OCSP.
 *
 * Linked into the agent, the tools, the library and the PAM module, so:
 * no global state (every call builds its own X509_STORE), nothing printed,
 * never exits; the reason for a refusal goes back in `why`.
 *
 * Order of the checks: the chain first (trust, validity, CRLs), then the
 * leaf's key usage and EKU, then OCSP last because it costs a network
 * round trip.  A certificate refused for several reasons gets the first.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "certval.h"
#include "log.h"
#include "mtls-agent.h"

#define DEFAULT_OCSP_TIMEOUT 10
/* A response is a few KiB; anything near this is not an OCSP response. */
#define OCSP_MAX_RESPONSE (100 * 1024)
/* Allowed clock difference between us and the responder (seconds). */
#define OCSP_SKEW (5 * 60)
/* Bounds the work a crl_dir can cause. */
#define CRL_DIR_MAX_FILES 10000
#define SUBJECT_MAX	  256

/* Per-call state handed to the verify callback through the app data. */
struct vstate {
	int crl_required;
	int crl_missing; /* CRLs not found but not required either */
};

/*
 * The subject as one RFC 2253 line for `why`.  The RFC 2253 flags escape
 * control characters already; anything unprintable that is left is
 * replaced too, since `why` ends up in syslog.
 */
static void
subject_str(X509 *x, char *buf, size_t len)
{
	BIO *bio = NULL;
	char *p;
	long n;
	size_t i;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (x == NULL) {
		snprintf(buf, len, "(no certificate)");
		return;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0 ||
	    (n = BIO_get_mem_data(bio, &p)) < 0) {
		snprintf(buf, len, "(unprintable subject)");
		goto out;
	}
	if ((size_t)n >= len)
		n = (long)len - 1;
	for (i = 0; i < (size_t)n; i++)
		buf[i] = (p[i] < 0x20 || p[i] == 0x7f) ? '?' : p[i];
	buf[n] = '\0';
	if (n == 0)
		snprintf(buf, len, "(empty subject)");
out:
	BIO_free(bio);
}

/* The first OpenSSL error of this thread, as text for `why`. */
static const char *
ssl_reason(void)
{
	const char *s = ERR_reason_error_string(ERR_peek_error());

	return s != NULL ? s : "unknown error";
}

static int
map_verify_error(int e)
{
	switch (e) {
	case X509_V_ERR_CERT_HAS_EXPIRED: return MTLS_ERR_CERT_EXPIRED;
	case X509_V_ERR_CERT_NOT_YET_VALID: return MTLS_ERR_CERT_NOT_YET_VALID;
	case X509_V_ERR_CERT_REVOKED: return MTLS_ERR_CERT_REVOKED;
	case X509_V_ERR_UNABLE_TO_GET_CRL:
	case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_CRL_NOT_YET_VALID:
	case X509_V_ERR_CRL_SIGNATURE_FAILURE:
	case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
	case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
	case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
	case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
	case X509_V_ERR_DIFFERENT_CRL_SCOPE:
	case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
	case X509_V_ERR_CRL_PATH_VALIDATION_ERROR: return MTLS_ERR_CERT_REVOCATION_UNKNOWN;
	case X509_V_ERR_INVALID_PURPOSE: return MTLS_ERR_CERT_USAGE;
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
	case X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
	case X509_V_ERR_INVALID_EXTENSION:
	case X509_V_ERR_UNSUPPORTED_EXTENSION_FEATURE: return MTLS_ERR_CERT_INVALID;
	case X509_V_ERR_OUT_OF_MEM: return MTLS_ERR_ALLOC;
	default:
		/* Unknown issuer, self-signed, bad signature, not a CA, path
		 * length, name constraints...: no trustworthy chain. */
		return MTLS_ERR_CERT_UNTRUSTED;
	}
}

/*
 * Lets verification go on past a missing CRL when CRLs are used "where
 * available" (crl_required == 0).  Every other error stays an error.
 */
static int
verify_cb(int ok, X509_STORE_CTX *ctx)
{
	struct vstate *st = X509_STORE_CTX_get_app_data(ctx);

	if (!ok && st != NULL && !st->crl_required &&
	    X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNABLE_TO_GET_CRL) {
		st->crl_missing++;
		return 1;
	}
	return ok;
}

/* Adds every PEM CRL in `path` to the store; *n counts them. */
static int
load_crl_file(X509_STORE *store, const char *path, int *n, char *why, size_t why_len)
{
	X509_CRL *crl = NULL;
	BIO *bio = NULL;
	unsigned long e;
	int r = MTLS_ERR_CONFIG;

	if ((bio = BIO_new_file(path, "r")) == NULL) {
		why_printf(why, why_len, "cannot read CRL file %s: %s", path, strerror(errno));
		goto out;
	}
	for (;;) {
		ERR_set_mark();
		crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
		if (crl == NULL) {
			e = ERR_peek_last_error();
			/* End of file: the normal way out of the loop. */
			if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
			    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
				ERR_pop_to_mark();
				break;
			}
			ERR_clear_last_mark();
			why_printf(why, why_len, "CRL file %s: %s", path, ssl_reason());
			goto out;
		}
		ERR_clear_last_mark();
		if (!X509_STORE_add_crl(store, crl)) {
			r = MTLS_ERR_ALLOC;
			why_printf(why, why_len, "cannot add CRL from %s", path);
			goto out;
		}
		X509_CRL_free(crl);
		crl = NULL;
		(*n)++;
	}
	r = 0;
out:
	X509_CRL_free(crl);
	BIO_free(bio);
	return r;
}

/*
 * Every regular file in `dir` that holds PEM CRLs (hash links made by
 * c_rehash load the same CRL twice, which the store ignores).  Files
 * without a CRL are skipped so a README or certificates may sit there.
 */
static int
load_crl_dir(X509_STORE *store, const char *dir, int *n, char *why, size_t why_len)
{
	char path[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d = NULL;
	int r = MTLS_ERR_CONFIG, files = 0;

	if ((d = opendir(dir)) == NULL) {
		why_printf(why, why_len, "cannot open CRL directory %s: %s", dir, strerror(errno));
		goto out;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (++files > CRL_DIR_MAX_FILES) {
			why_printf(why, why_len, "CRL directory %s: more than %d files", dir,
				   CRL_DIR_MAX_FILES);
			goto out;
		}
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path)) {
			why_printf(why, why_len, "CRL directory %s: name too long", dir);
			goto out;
		}
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if ((r = load_crl_file(store, path, n, why, why_len)) != 0)
			goto out;
	}
	if (errno != 0) {
		why_printf(why, why_len, "cannot read CRL directory %s: %s", dir, strerror(errno));
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	r = 0;
out:
	if (d != NULL)
		closedir(d);
	return r;
}

static int
build_store(const struct certval_opts *o, X509_STORE **storep, char *why, size_t why_len)
{
	X509_STORE *store = NULL;
	struct stat st;
	int r, ncrl = 0;

	*storep = NULL;
	if ((store = X509_STORE_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	r = MTLS_ERR_CONFIG;
	if (o->ca_file != NULL && !X509_STORE_load_file(store, o->ca_file)) {
		why_printf(why, why_len, "cannot load CA file %s: %s", o->ca_file, ssl_reason());
		goto out;
	}
	if (o->ca_dir != NULL) {
		/* The hashed-directory lookup is lazy and would turn a typo
		 * into "unknown CA" later; say what is wrong now. */
		if (stat(o->ca_dir, &st) != 0) {
			why_printf(why, why_len, "CA directory %s: %s", o->ca_dir, strerror(errno));
			goto out;
		}
		if (!S_ISDIR(st.st_mode)) {
			why_printf(why, why_len, "CA directory %s: not a directory", o->ca_dir);
			goto out;
		}
		if (!X509_STORE_load_path(store, o->ca_dir)) {
			why_printf(why, why_len, "cannot use CA directory %s: %s", o->ca_dir,
				   ssl_reason());
			goto out;
		}
	}
	if (o->crl_file != NULL &&
	    (r = load_crl_file(store, o->crl_file, &ncrl, why, why_len)) != 0)
		goto out;
	if (o->crl_dir != NULL && (r = load_crl_dir(store, o->crl_dir, &ncrl, why, why_len)) != 0)
		goto out;
	if (o->crl_file != NULL && o->crl_dir == NULL && ncrl == 0) {
		/* A CRL file without a CRL is a mistake, not "no revocations". */
		why_printf(why, why_len, "CRL file %s holds no PEM CRL", o->crl_file);
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	*storep = store;
	store = NULL;
	r = 0;
out:
	X509_STORE_free(store);
	return r;
}

/*
 * Key usage and EKU of the leaf.  An anyExtendedKeyUsage-only EKU does not
 * count as clientAuth (as in OpenSSL's own SSL client purpose check).
 */
static int
check_usage(X509 *cert, const struct certval_opts *o, const char *subj, char *why, size_t why_len)
{
	uint32_t flags = X509_get_extension_flags(cert);

	if (flags & EXFLAG_INVALID) {
		why_printf(why, why_len, "certificate '%s': malformed extensions", subj);
		return MTLS_ERR_CERT_INVALID;
	}
	if (o->require_client_eku) {
		if ((flags & EXFLAG_XKUSAGE) &&
		    !(X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT)) {
			why_printf(why, why_len,
				   "certificate '%s': extended key usage does not "
				   "allow clientAuth",
				   subj);
			return MTLS_ERR_CERT_USAGE;
		}
		if (o->require_client_eku >= 2 && !(flags & EXFLAG_XKUSAGE)) {
			why_printf(why, why_len,
				   "certificate '%s': no extended key usage "
				   "(clientAuth required)",
				   subj);
			return MTLS_ERR_CERT_USAGE;
		}
	}
	if (o->require_digital_signature && (flags & EXFLAG_KUSAGE) &&
	    !(X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE)) {
		why_printf(why, why_len,
			   "certificate '%s': key usage does not allow "
			   "digitalSignature",
			   subj);
		return MTLS_ERR_CERT_USAGE;
	}
	return 0;
}

/*
 * POSTs the request and parses the answer.  SIGPIPE is blocked in this
 * thread for the exchange (OpenSSL writes with write(2), and the host
 * process, sshd or sudo, must not die because a responder hung up) and a
 * SIGPIPE raised meanwhile is consumed before the mask is restored.
 */
static OCSP_RESPONSE *
ocsp_exchange(const char *host, const char *port, const char *path, OCSP_REQUEST *req, int timeout,
	      char *err, size_t err_len)
{
	OCSP_RESPONSE *resp = NULL;
	BIO *reqbio = NULL, *rspbio = NULL;
	sigset_t pipeset, oldset, pending;
	struct timespec zero = { 0, 0 };
	int was_pending = 0, masked = 0;

	if ((reqbio = ASN1_item_i2d_mem_bio(ASN1_ITEM_rptr(OCSP_REQUEST),
					    (const ASN1_VALUE *)req)) == NULL) {
		why_printf(err, err_len, "cannot encode the request");
		goto out;
	}
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	if (sigpending(&pending) == 0)
		was_pending = sigismember(&pending, SIGPIPE) == 1;
	if (pthread_sigmask(SIG_BLOCK, &pipeset, &oldset) == 0)
		masked = 1;
	/* proxy "" = no proxy: the environment (http_proxy) is ignored, it
	 * may belong to the user being authenticated. */
	rspbio = OSSL_HTTP_transfer(NULL, host, port, path, 0, "", NULL, NULL, NULL, NULL, NULL, 0,
				    NULL, "application/ocsp-request", reqbio,
				    "application/ocsp-response", 1, OCSP_MAX_RESPONSE, timeout, 0);
	if (masked) {
		if (!was_pending && sigpending(&pending) == 0 &&
		    sigismember(&pending, SIGPIPE) == 1)
			(void)sigtimedwait(&pipeset, NULL, &zero);
		(void)pthread_sigmask(SIG_SETMASK, &oldset, NULL);
	}
	if (rspbio == NULL) {
		why_printf(err, err_len, "responder %s:%s unreachable or failed: %s", host, port,
			   ssl_reason());
		goto out;
	}
	if ((resp = d2i_OCSP_RESPONSE_bio(rspbio, NULL)) == NULL) {
		why_printf(err, err_len, "responder %s:%s sent no OCSP response", host, port);
		goto out;
	}
out:
	BIO_free(rspbio);
	BIO_free(reqbio);
	return resp;
}

/*
 * One OCSP query for `cert`.  Returns 0 (good), MTLS_ERR_CERT_REVOKED,
 * MTLS_ERR_ALLOC, or MTLS_ERR_CERT_REVOCATION_UNKNOWN with the reason in
 * `err` (the caller decides what soft mode makes of it).  *no_nonce is set
 * when the answer was good but carried no nonce; in hard mode that is
 * "unknown" already.
 *
 * A correctly signed "revoked" counts whatever its nonce and age:
 * revocation is not undone, and a replayed refusal can only refuse.  A
 * "good" needs everything: signature, our nonce (hard mode), current times.
 */
static int
ocsp_check(X509 *cert, X509 *issuer, STACK_OF(X509) * untrusted, X509_STORE *store,
	   const struct certval_opts *o, int *no_nonce, char *err, size_t err_len)
{
	STACK_OF(OPENSSL_STRING) *aia = NULL;
	OCSP_REQUEST *req = NULL;
	OCSP_RESPONSE *resp = NULL;
	OCSP_BASICRESP *bs = NULL;
	OCSP_CERTID *id = NULL;
	ASN1_GENERALIZEDTIME *thisupd = NULL, *nextupd = NULL, *revtime = NULL;
	char *host = NULL, *port = NULL, *path = NULL;
	const char *url = o->ocsp_url;
	int r = MTLS_ERR_CERT_REVOCATION_UNKNOWN, use_ssl = 0, status, reason;
	int nonce, timeout, rstatus;

	*no_nonce = 0;
	if (url == NULL) {
		aia = X509_get1_ocsp(cert);
		if (aia == NULL || sk_OPENSSL_STRING_num(aia) < 1) {
			why_printf(err, err_len,
				   "no OCSP responder configured and "
				   "none named in the certificate");
			goto out;
		}
		url = sk_OPENSSL_STRING_value(aia, 0);
	}
	if (!OSSL_HTTP_parse_url(url, &use_ssl, NULL, &host, &port, NULL, &path, NULL, NULL)) {
		why_printf(err, err_len, "bad OCSP URL");
		goto out;
	}
	if (use_ssl) {
		/* An OCSP response is signed; TLS would add a chicken-and-egg
		 * dependency on another validation.  RFC 6960 uses http. */
		why_printf(err, err_len,
			   "OCSP URL must be http:// (https is not "
			   "supported)");
		goto out;
	}
	if (issuer == NULL) {
		why_printf(err, err_len, "no issuer certificate to ask about");
		goto out;
	}
	if ((req = OCSP_REQUEST_new()) == NULL ||
	    (id = OCSP_cert_to_id(NULL, cert, issuer)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if (OCSP_request_add0_id(req, id) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	/* The request owns the id now; keep a copy to look the answer up. */
	if ((id = OCSP_CERTID_dup(id)) == NULL || !OCSP_request_add1_nonce(req, NULL, -1)) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	timeout = o->ocsp_timeout > 0 ? o->ocsp_timeout : DEFAULT_OCSP_TIMEOUT;
	if ((resp = ocsp_exchange(host, port, path, req, timeout, err, err_len)) == NULL)
		goto out;
	rstatus = OCSP_response_status(resp);
	if (rstatus != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		why_printf(err, err_len, "responder answered '%s'",
			   OCSP_response_status_str(rstatus));
		goto out;
	}
	if ((bs = OCSP_response_get1_basic(resp)) == NULL) {
		why_printf(err, err_len, "not a basic OCSP response");
		goto out;
	}
	/* Signed by the issuer or by a responder it delegated to
	 * (id-kp-OCSPSigning), chaining to our trust store. */
	if (OCSP_basic_verify(bs, untrusted, store, 0) <= 0) {
		why_printf(err, err_len, "response signature does not verify: %s", ssl_reason());
		goto out;
	}
	if (!OCSP_resp_find_status(bs, id, &status, &reason, &revtime, &thisupd, &nextupd)) {
		why_printf(err, err_len, "response has no status for this certificate");
		goto out;
	}
	if (status == V_OCSP_CERTSTATUS_REVOKED) {
		why_printf(err, err_len, "revoked (OCSP, reason: %s)",
			   reason >= 0 ? OCSP_crl_reason_str(reason) : "unspecified");
		r = MTLS_ERR_CERT_REVOKED;
		goto out;
	}
	nonce = OCSP_check_nonce(req, bs);
	if (nonce == -1) {
		/* Some responders serve pre-signed answers without a nonce. */
		if (o->ocsp == CERTVAL_OCSP_HARD) {
			why_printf(err, err_len, "response carries no nonce");
			goto out;
		}
		*no_nonce = 1;
	} else if (nonce != 1) {
		why_printf(err, err_len,
			   "response nonce does not match the request "
			   "(replayed?)");
		goto out;
	}
	if (!OCSP_check_validity(thisupd, nextupd, OCSP_SKEW, -1)) {
		why_printf(err, err_len,
			   "response is not current (thisUpdate/"
			   "nextUpdate)");
		goto out;
	}
	if (status != V_OCSP_CERTSTATUS_GOOD) {
		why_printf(err, err_len, "responder does not know the certificate");
		goto out;
	}
	r = 0;
out:
	OCSP_CERTID_free(id);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	OCSP_REQUEST_free(req);
	OPENSSL_free(host);
	OPENSSL_free(port);
	OPENSSL_free(path);
	X509_email_free(aia);
	return r;
}

void
certval_opts_init(struct certval_opts *o)
{
	if (o == NULL)
		return;
	memset(o, 0, sizeof(*o));
	o->ocsp = CERTVAL_OCSP_OFF;
	o->ocsp_timeout = DEFAULT_OCSP_TIMEOUT;
	o->require_client_eku = 1;
	o->require_digital_signature = 1;
}

int
certval_verify(X509 *cert, STACK_OF(X509) * chain, const struct certval_opts *o, char *why,
	       size_t why_len)
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	X509_VERIFY_PARAM *param;
	STACK_OF(X509) *verified = NULL;
	struct vstate st = { 0, 0 };
	char subj[SUBJECT_MAX], bad[SUBJECT_MAX], err[256];
	unsigned long flags;
	int r, e, depth, no_nonce = 0;

	if (why != NULL && why_len > 0)
		why[0] = '\0';
	if (cert == NULL || o == NULL) {
		why_printf(why, why_len, "no certificate or options");
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	subject_str(cert, subj, sizeof(subj));
	if (o->ca_file == NULL && o->ca_dir == NULL) {
		why_printf(why, why_len, "no CA configured");
		return MTLS_ERR_CONFIG;
	}
	if (o->ocsp != CERTVAL_OCSP_OFF && o->ocsp != CERTVAL_OCSP_SOFT &&
	    o->ocsp != CERTVAL_OCSP_HARD) {
		why_printf(why, why_len, "bad OCSP mode %d", (int)o->ocsp);
		return MTLS_ERR_CONFIG;
	}
	if ((r = build_store(o, &store, why, why_len)) != 0)
		goto out;
	if ((ctx = X509_STORE_CTX_new()) == NULL || !X509_STORE_CTX_init(ctx, store, cert, chain)) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	param = X509_STORE_CTX_get0_param(ctx);
	/* Strict RFC 5280 checks refuse CAs most sites use (no keyUsage):
	 * only on request, see certval.h. */
	flags = o->x509_strict ? X509_V_FLAG_X509_STRICT : 0;
	if (o->crl_file != NULL || o->crl_dir != NULL) {
		/* Every certificate of the chain is checked against the CRLs
		 * we have; a missing CRL is an error only when required. */
		flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
		st.crl_required = o->crl_required;
	} else if (o->crl_required) {
		why_printf(why, why_len,
			   "CRLs required but no CRL file or directory "
			   "configured");
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	if (!X509_VERIFY_PARAM_set_flags(param, flags)) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if (o->at != 0)
		X509_VERIFY_PARAM_set_time(param, o->at);
	X509_STORE_CTX_set_app_data(ctx, &st);
	X509_STORE_CTX_set_verify_cb(ctx, verify_cb);

	if (X509_verify_cert(ctx) <= 0) {
		e = X509_STORE_CTX_get_error(ctx);
		depth = X509_STORE_CTX_get_error_depth(ctx);
		r = map_verify_error(e);
		if (e == X509_V_OK) /* failed without saying why */
			r = MTLS_ERR_CERT_UNTRUSTED;
		subject_str(X509_STORE_CTX_get_current_cert(ctx), bad, sizeof(bad));
		if (depth > 0)
			why_printf(why, why_len,
				   "certificate '%s': issuer '%s' at "
				   "depth %d: %s",
				   subj, bad, depth, X509_verify_cert_error_string(e));
		else
			why_printf(why, why_len, "certificate '%s': %s", subj,
				   X509_verify_cert_error_string(e));
		goto out;
	}
	if ((r = check_usage(cert, o, subj, why, why_len)) != 0)
		goto out;

	if (o->ocsp != CERTVAL_OCSP_OFF) {
		if ((verified = X509_STORE_CTX_get1_chain(ctx)) == NULL) {
			r = MTLS_ERR_ALLOC;
			goto out;
		}
		err[0] = '\0';
		r = ocsp_check(cert, sk_X509_num(verified) > 1 ? sk_X509_value(verified, 1) : NULL,
			       verified, store, o, &no_nonce, err, sizeof(err));
		if (r == MTLS_ERR_CERT_REVOCATION_UNKNOWN && o->ocsp == CERTVAL_OCSP_SOFT) {
			why_printf(why, why_len, "OCSP soft-fail for '%s': %s", subj, err);
			r = 0;
		} else if (r != 0) {
			why_printf(why, why_len, "certificate '%s': OCSP: %s", subj,
				   err[0] != '\0' ? err : mtls_agent_strerror(r));
		} else if (no_nonce) {
			why_printf(why, why_len,
				   "OCSP for '%s': good, but the "
				   "response carries no nonce (accepted in soft mode)",
				   subj);
		}
		if (r != 0)
			goto out;
	}
	if (st.crl_missing > 0 && why != NULL && why_len > 0 && why[0] == '\0')
		why_printf(why, why_len,
			   "certificate '%s': accepted; no CRL for %d "
			   "certificate(s) of the chain (CRLs not required)",
			   subj, st.crl_missing);
	r = 0;
out:
	sk_X509_pop_free(verified, X509_free);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	/* Leave no errors of ours in this thread's queue for the caller's
	 * next SSL_get_error() to trip over. */
	ERR_clear_error();
	return r;
}

X509 *
certval_parse_der(const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x;

	if (der == NULL || len == 0 || len > LONG_MAX)
		return NULL;
	x = d2i_X509(NULL, &p, (long)len);
	/* Trailing bytes: not the certificate the caller thinks it has. */
	if (x != NULL && p != der + len) {
		X509_free(x);
		x = NULL;
	}
	/* Only DER: BER that OpenSSL would silently re-encode (unused bits
	 * in a BIT STRING, ...) makes fingerprints over other bytes. */
	if (x != NULL) {
		unsigned char *re = NULL;
		int rl = i2d_X509(x, &re);

		if (rl <= 0 || (size_t)rl != len || memcmp(re, der, len) != 0) {
			X509_free(x);
			x = NULL;
		}
		OPENSSL_free(re);
	}
	ERR_clear_error();
	return x;
}
