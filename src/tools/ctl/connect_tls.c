/*
 * mtls-agentctl connect, the TLS side.  libcurl makes one SSL_CTX per
 * connection and hands it to tls_ctx_setup() before the handshake: the
 * agent identity goes in there (mtls_agent_ssl_ctx_use_identity(), so the
 * handshake signature is made by the agent), and so do the callbacks
 * that see the server's alerts and tickets.  After a failure,
 * connect_failure() reads libcurl's code, its error text, the verify
 * result and what the callbacks saw, and says which side refused what:
 * the agent (login, PIN, policy), the server (our certificate), or us
 * (the server's certificate or name).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "connect.h"
#include "ctl.h"

struct tls_state tls_seen;

static void
tls_info_cb(const SSL *ssl, int where, int ret)
{
	/* libcurl gives no SSL after a CONNECT_ONLY transfer; this is it. */
	if (where & SSL_CB_HANDSHAKE_START) {
		tls_seen.ssl = (SSL *)ssl;
		tls_seen.started = 1;
	}
	if (where & SSL_CB_HANDSHAKE_DONE)
		tls_seen.done = 1;
	if ((where & SSL_CB_LOOP) && SSL_get_state(ssl) == TLS_ST_CR_CERT_REQ)
		tls_seen.cert_requested = 1;
	/* Only fatal alerts the server sent (SSL_CB_READ_ALERT is two bits:
	 * ours are SSL_CB_WRITE_ALERT); close_notify is a warning. */
	if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT && (ret >> 8) == SSL3_AL_FATAL) {
		tls_seen.alert_received = 1;
		tls_seen.alert = ret & 0xff;
	}
}

static int
tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	(void)sess;
	tls_seen.ticket = 1;
	return 0; /* not kept: every run is a new process */
}

void
url_hostport(const char *url, char *hostport, size_t hp_len, char *host, size_t host_len)
{
	char *h = NULL, *port = NULL;
	CURLU *u = curl_url();
	size_t n;

	snprintf(hostport, hp_len, "?");
	snprintf(host, host_len, "?");
	if (u == NULL || url == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK)
		goto out;
	(void)curl_url_get(u, CURLUPART_PORT, &port, 0);
	snprintf(hostport, hp_len, "%s%s%s", h, port != NULL ? ":" : "", port != NULL ? port : "");
	/* An IPv6 address without its brackets (and without a zone). */
	n = strlen(h);
	if (h[0] == '[' && n > 2)
		snprintf(host, host_len, "%.*s", (int)(strcspn(h + 1, "]%")), h + 1);
	else
		snprintf(host, host_len, "%s", h);
out:
	curl_free(h);
	curl_free(port);
	curl_url_cleanup(u);
}

/*
 * The server's name is checked by OpenSSL during the handshake, before our
 * certificate and signature are sent (libcurl checks it only once the
 * handshake is done).  An address is checked against the certificate's IP
 * addresses; libcurl sends no SNI for it (RFC 6066 section 3).
 */
static int
expect_host(CURL *h, SSL_CTX *ctx)
{
	char hostport[512], host[512], *url = NULL;
	X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
	unsigned char a[sizeof(struct in6_addr)];

	if (curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || url == NULL)
		return -1;
	url_hostport(url, hostport, sizeof(hostport), host, sizeof(host));
	if (inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1 ? 0 : -1;
	return X509_VERIFY_PARAM_set1_host(param, host, 0) == 1 ? 0 : -1;
}

CURLcode
tls_ctx_setup(CURL *h, void *sslctx, void *arg)
{
	SSL_CTX *ctx = sslctx;
	int r;

	(void)arg;
	tls_seen.alert_received = tls_seen.alert = tls_seen.ticket = 0;
	tls_seen.ssl = NULL;
	tls_seen.started = tls_seen.done = tls_seen.cert_requested = 0;
	if (expect_host(h, ctx) != 0)
		return CURLE_SSL_CONNECT_ERROR;
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb);
	SSL_CTX_set_info_callback(ctx, tls_info_cb);
	ERR_clear_error();
	if ((r = mtls_agent_ssl_ctx_use_identity(ctx, socket_path, tls_seen.identity)) != 0) {
		tls_seen.identity_err = r;
		return CURLE_SSL_CERTPROBLEM;
	}
	return CURLE_OK;
}

SSL *
curl_ssl(CURL *h)
{
	struct curl_tlssessioninfo *ti = NULL;

	if (curl_easy_getinfo(h, CURLINFO_TLS_SSL_PTR, &ti) == CURLE_OK && ti != NULL &&
	    ti->backend == CURLSSLBACKEND_OPENSSL && ti->internals != NULL)
		return ti->internals;
	return tls_seen.ssl;
}

static void
print_name(FILE *f, const char *label, X509 *x)
{
	char *s = x != NULL ? name_string(X509_get_subject_name(x)) : NULL;

	fprintf(f, "%s%s\n", label, s != NULL ? safe(s) : "(none)");
	free(s);
}

/* The signature algorithm we signed the handshake with. */
static const char *
client_sig_name(SSL *ssl, char *buf, size_t len)
{
	int type = NID_undef, md = NID_undef;

	if (SSL_get_signature_type_nid(ssl, &type) != 1 || SSL_get_signature_nid(ssl, &md) != 1)
		return "(none)";
	snprintf(buf, len, "%s+%s",
		 type == EVP_PKEY_RSA_PSS ? "RSA-PSS"
		 : type == EVP_PKEY_RSA	  ? "RSA-PKCS1"
		 : type == EVP_PKEY_EC	  ? "ECDSA"
					  : OBJ_nid2sn(type),
		 OBJ_nid2sn(md));
	return buf;
}

void
print_session(FILE *f, SSL *ssl, const char *identity, const char *prefix)
{
	char buf[64];

	fprintf(f, "%sprotocol: %s\n", prefix, SSL_get_version(ssl));
	fprintf(f, "%scipher: %s\n", prefix, SSL_get_cipher_name(ssl));
	fprintf(f, "%s", prefix);
	print_name(f, "server certificate: ", SSL_get0_peer_certificate(ssl));
	fprintf(f, "%sidentity: %s\n", prefix, safe(identity));
	fprintf(f, "%s", prefix);
	print_name(f, "client certificate: ", SSL_get_certificate(ssl));
	fprintf(f, "%sclient signature: %s\n", prefix, client_sig_name(ssl, buf, sizeof(buf)));
}

/* The alerts a server sends when it does not accept our certificate (or
 * the signature made with its key). */
static const char *
client_cert_alert(int alert)
{
	switch (alert) {
	case SSL_AD_BAD_CERTIFICATE: return "bad certificate";
	case SSL_AD_UNSUPPORTED_CERTIFICATE: return "unsupported certificate";
	case SSL_AD_CERTIFICATE_REVOKED: return "certificate revoked";
	case SSL_AD_CERTIFICATE_EXPIRED: return "certificate expired";
	case SSL_AD_CERTIFICATE_UNKNOWN: return "certificate unknown";
	case SSL_AD_UNKNOWN_CA: return "unknown CA";
	case SSL_AD_ACCESS_DENIED: return "access denied";
	case SSL_AD_DECRYPT_ERROR: return "decrypt error (the signature did not verify)";
	case TLS13_AD_CERTIFICATE_REQUIRED: return "certificate required";
	}
	return NULL;
}

/* Agent errors whose text can be recognised in an OpenSSL error; the
 * generic ones ("internal error", "timed out") could be anybody's. */
static const int agent_errs[] = {
	MTLS_ERR_LOGIN_REQUIRED,
	MTLS_ERR_PIN_LOCKED,
	MTLS_ERR_PIN_INCORRECT,
	MTLS_ERR_POLICY_DENIED,
	MTLS_ERR_CONTENT_REJECTED,
	MTLS_ERR_TOKEN_ABSENT,
	MTLS_ERR_NO_IDENTITY,
	MTLS_ERR_PEER_DENIED,
	MTLS_ERR_UNSUPPORTED_SCHEME,
	MTLS_ERR_TOKEN,
	MTLS_ERR_BUSY,
	MTLS_ERR_CONNECT,
	MTLS_ERR_NO_SOCKET,
	MTLS_ERR_UNSUPPORTED_VERSION,
	MTLS_ERR_AGENT_LOCKED,
	MTLS_ERR_CONFIRM_DENIED,
	MTLS_ERR_RATE_LIMITED,
};

static int
agent_err_in(const char *text)
{
	size_t i;

	for (i = 0; i < sizeof(agent_errs) / sizeof(agent_errs[0]); i++)
		if (strstr(text, mtls_agent_strerror(agent_errs[i])) != NULL)
			return agent_errs[i];
	return 0;
}

/*
 * The agent error named by libcurl's text (the first OpenSSL error, which
 * libcurl took from the queue: the provider's own when the agent refused
 * to sign) or by what is left in the queue, which is emptied.  0: none.
 */
static int
agent_error_seen(const char *errbuf)
{
	const char *data = NULL, *reason;
	char text[512];
	unsigned long e;
	int flags = 0, agent_err = agent_err_in(errbuf);

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		if (agent_err != 0)
			continue;
		reason = ERR_reason_error_string(e);
		snprintf(text, sizeof(text), "%s %s", reason != NULL ? reason : "",
			 (flags & ERR_TXT_STRING) && data != NULL ? data : "");
		agent_err = agent_err_in(text);
	}
	return agent_err;
}

static int
agent_refused(int agent_err)
{
	const char *detail = mtls_agent_last_message();

	fprintf(stderr, PROG ": connect: the agent did not sign for identity '%s'",
		safe(tls_seen.identity));
	if (agent_err != 0)
		fprintf(stderr, ": %s", mtls_agent_strerror(agent_err));
	if (detail != NULL && *detail != '\0')
		fprintf(stderr, ": %s", safe(detail));
	fputc('\n', stderr);
	return agent_err != 0 ? exit_code(agent_err) : EXIT_FAILED;
}

/* What was going on when it failed, by how far the connection got (the
 * info callback saw the handshake start, so TCP was connected; libcurl
 * may have freed the SSL by now). */
static const char *
stage(void)
{
	if (tls_seen.done)
		return "reading the response";
	return "TLS handshake";
}

static int
connected(CURL *h)
{
	curl_off_t t = 0;

	return tls_seen.started ||
	       (curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &t) == CURLE_OK && t > 0);
}

/*
 * A TLS 1.3 server checks the client certificate after the client's
 * Finished, so it refuses it after the handshake is over for us: its
 * alert then often goes unread, as the connection is reset under it (and
 * libcurl may stop at once, e.g. with getpeername() failing with ENOTCONN).
 * A server that asked for a certificate and dropped the connection before
 * any answer refused it.
 */
static int
dropped_after_certificate(CURL *h, CURLcode rc)
{
	long code = 0;

	if (!tls_seen.done || !tls_seen.cert_requested)
		return 0;
	if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 0)
		return 0;
	return rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
	       rc == CURLE_GOT_NOTHING;
}

int
connect_failure(CURL *h, CURLcode rc, const char *errbuf)
{
	char hostport[512], host[512], why[CURL_ERROR_SIZE], *url = NULL;
	const char *detail = mtls_agent_last_message(), *alert;
	long vr = X509_V_OK, os_errno = 0;
	int agent_err;

	if (curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK)
		url = NULL;
	url_hostport(url, hostport, sizeof(hostport), host, sizeof(host));
	blank_controls(hostport);
	blank_controls(host);
	snprintf(why, sizeof(why), "%s", errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
	blank_controls(why);
	if (tls_seen.identity_err != 0) {
		char extra[128];

		snprintf(extra, sizeof(extra), " (identity '%s')", safe(tls_seen.identity));
		return agent_error("connect", tls_seen.identity_err, extra);
	}
	if ((agent_err = agent_error_seen(errbuf)) != 0)
		return agent_refused(agent_err);
	if (rc == CURLE_PEER_FAILED_VERIFICATION && !tls_seen.alert_received) {
		(void)curl_easy_getinfo(h, CURLINFO_SSL_VERIFYRESULT, &vr);
		if (vr == X509_V_OK || vr == X509_V_ERR_HOSTNAME_MISMATCH ||
		    vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
			errmsg("connect", "server certificate does not match host %s", host);
		else
			errmsg("connect", "server certificate not trusted: %s",
			       X509_verify_cert_error_string(vr));
		return EXIT_FAILED;
	}
	if (tls_seen.alert_received) {
		if ((alert = client_cert_alert(tls_seen.alert)) != NULL)
			errmsg("connect", "server rejected the client certificate: %s", alert);
		else
			errmsg("connect", "%s with %s failed: the server sent alert '%s'", stage(),
			       hostport, SSL_alert_desc_string_long(tls_seen.alert));
		return EXIT_FAILED;
	}
	if (detail != NULL && *detail != '\0' &&
	    (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR))
		/* The agent said no in words the provider did not pass on. */
		return agent_refused(0);
	if (dropped_after_certificate(h, rc)) {
		errmsg("connect",
		       "server rejected the client certificate: it asked for one, then closed the "
		       "connection after the handshake without an answer (%s)",
		       why);
		return EXIT_FAILED;
	}
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		errmsg("connect", "cannot resolve %s: %s", host, why);
		return EXIT_FAILED;
	case CURLE_COULDNT_CONNECT:
		(void)curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
		errmsg("connect", "cannot connect to %s: %s", hostport,
		       os_errno != 0 ? strerror((int)os_errno) : why);
		return EXIT_FAILED;
	case CURLE_OPERATION_TIMEDOUT:
		if (!connected(h))
			errmsg("connect", "cannot connect to %s: %s", hostport,
			       strerror(ETIMEDOUT));
		else
			errmsg("connect", "%s with %s: timed out", stage(), hostport);
		return EXIT_FAILED;
	case CURLE_SSL_CACERT_BADFILE:
		errmsg("connect", "cannot load the CA certificates: %s", why);
		return EXIT_FAILED;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		if (rc == CURLE_GOT_NOTHING || strstr(why, "unexpected eof") != NULL ||
		    strstr(why, "SSL_ERROR_SYSCALL") != NULL ||
		    strstr(why, "Connection reset") != NULL)
			errmsg("connect", "%s with %s failed: the server closed the connection",
			       stage(), hostport);
		else
			errmsg("connect", "%s with %s failed: %s", stage(), hostport, why);
		return EXIT_FAILED;
	default: errmsg("connect", "%s: %s", hostport, why); return EXIT_FAILED;
	}
}
