/*
 * mtls-agentctl list: the identities, as text or JSON.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>
#include <time.h>
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ctl.h"

/* A JSON string literal; control and non-UTF-8-safe bytes are escaped. */
static void
json_string(const char *s)
{
	const unsigned char *p;

	if (s == NULL) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		switch (*p) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\b': fputs("\\b", stdout); break;
		case '\f': fputs("\\f", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				printf("\\u%04x", *p);
			else
				putchar(*p);
		}
	}
	putchar('"');
}

/* What a listing shows of one certificate. */
struct cert_view {
	int present; /* the agent sent a certificate */
	int parsed;  /* and it parsed as one */
	char *subject, *issuer, *serial;
	char not_before[32], not_after[32];
	char expires[48];  /* "in N days", "expired N days ago" */
	char *fingerprint; /* SHA-256 of the DER, AA:BB:... */
};

static void
time_string(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "(invalid time)");
}

static void
cert_view_clear(struct cert_view *v)
{
	free(v->subject);
	free(v->issuer);
	free(v->serial);
	free(v->fingerprint);
	memset(v, 0, sizeof(*v));
}

static void
cert_view_load(struct cert_view *v, const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	X509 *x = NULL;
	BIGNUM *bn = NULL;

	memset(v, 0, sizeof(*v));
	if (der == NULL || len == 0)
		return;
	v->present = 1;
	/* The agent is trusted to send certificates, not to send good ones:
	 * anything that does not parse completely is just reported. */
	if (len > LONG_MAX || (x = d2i_X509(NULL, &p, (long)len)) == NULL || p != der + len)
		goto out;
	v->subject = name_string(X509_get_subject_name(x));
	v->issuer = name_string(X509_get_issuer_name(x));
	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) != NULL)
		v->serial = BN_bn2hex(bn) /* OpenSSL memory */;
	if (v->serial != NULL) {
		/* Move to malloc memory so cert_view_clear can free() it. */
		char *s = strdup(v->serial);

		OPENSSL_free(v->serial);
		v->serial = s;
	}
	time_string(X509_get0_notBefore(x), v->not_before, sizeof(v->not_before));
	time_string(X509_get0_notAfter(x), v->not_after, sizeof(v->not_after));
	{
		int days = 0, secs = 0;

		/* Whole days left (rounded down), as a person counts them. */
		if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1)
			snprintf(v->expires, sizeof(v->expires), "(unknown)");
		else if (days > 0 || (days == 0 && secs >= 0))
			snprintf(v->expires, sizeof(v->expires), "in %d day%s", days,
				 days == 1 ? "" : "s");
		else
			snprintf(v->expires, sizeof(v->expires), "expired %d day%s ago", -days,
				 days == -1 ? "" : "s");
	}
	if (EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) == 1)
		v->fingerprint = hex_string(md, mdlen, ":", 1);
	v->parsed = v->subject != NULL && v->issuer != NULL;
out:
	BN_free(bn);
	X509_free(x);
}

static const char *
key_type_name(int type)
{
	switch (type) {
	case MTLS_AGENT_KEY_RSA: return "RSA";
	case MTLS_AGENT_KEY_EC: return "EC";
	}
	return "unknown";
}

/* Human-readable state words for an identity's flags, NULL-terminated. */
static size_t
state_words(uint32_t f, const char **w)
{
	size_t n = 0;

	if (!(f & MTLS_AGENT_ID_TOKEN_PRESENT)) {
		w[n++] = "token absent";
	} else {
		w[n++] = "token present";
		if (f & MTLS_AGENT_ID_LOGGED_IN)
			w[n++] = "logged in";
		else
			w[n++] = "login required";
		/* Tokens show private keys only after login: before it, a
		 * missing key is not missing yet. */
		if (f & MTLS_AGENT_ID_KEY_MISMATCH)
			w[n++] = "key does not match certificate";
		else if (!(f & MTLS_AGENT_ID_KEY_FOUND))
			w[n++] = (f & MTLS_AGENT_ID_LOGGED_IN) ? "key not found"
							       : "private key visible after login";
	}
	if (f & MTLS_AGENT_ID_PIN_LOCKED)
		w[n++] = "locked";
	else if (f & MTLS_AGENT_ID_PIN_FINAL_TRY)
		w[n++] = "final try";
	else if (f & MTLS_AGENT_ID_PIN_COUNT_LOW)
		w[n++] = "PIN count low";
	if (f & MTLS_AGENT_ID_PROTECTED_AUTH)
		w[n++] = "PIN pad";
	w[n] = NULL;
	return n;
}

static void
print_pem(const unsigned char *der, size_t len)
{
	BIO *out;

	if ((out = BIO_new_fp(stdout, BIO_NOCLOSE)) == NULL)
		return;
	(void)PEM_write_bio(out, "CERTIFICATE", "", der, (long)len);
	BIO_free(out);
}

/* What both formats show of one identity, with unknown purposes as
 * purpose-N and unknown schemes as 0xNNNN. */
struct id_view {
	struct cert_view cert;
	char *keyid;
	const char *state[8];
	size_t n_state;
	const char *purposes[32];
	char purpose_other[32][16];
	size_t n_purposes;
	const char **schemes;
	char (*scheme_other)[8];
	size_t n_schemes;
};

static void
id_view_clear(struct id_view *v)
{
	cert_view_clear(&v->cert);
	free(v->keyid);
	free(v->schemes);
	free(v->scheme_other);
	memset(v, 0, sizeof(*v));
}

static void
id_view_load(struct id_view *v, const struct mtls_agent_identity *id)
{
	size_t i;
	int bit;

	memset(v, 0, sizeof(*v));
	cert_view_load(&v->cert, id->cert_der, id->cert_der_len);
	v->keyid = hex_string(id->key_id, id->key_id_len, "", 0);
	v->n_state = state_words(id->flags, v->state);
	for (bit = 1; bit < 32; bit++) {
		if (!(id->purposes & (1U << bit)))
			continue;
		v->purposes[v->n_purposes] = mtls_agent_purpose_name(bit);
		if (v->purposes[v->n_purposes] == NULL) {
			snprintf(v->purpose_other[v->n_purposes], sizeof(v->purpose_other[0]),
				 "purpose-%d", bit);
			v->purposes[v->n_purposes] = v->purpose_other[v->n_purposes];
		}
		v->n_purposes++;
	}
	if (id->n_schemes == 0 ||
	    (v->schemes = calloc(id->n_schemes, sizeof(*v->schemes))) == NULL ||
	    (v->scheme_other = calloc(id->n_schemes, sizeof(*v->scheme_other))) == NULL)
		return; /* shown as none */
	for (i = 0; i < id->n_schemes; i++) {
		v->schemes[i] = mtls_agent_scheme_name(id->schemes[i]);
		if (v->schemes[i] == NULL) {
			snprintf(v->scheme_other[i], sizeof(v->scheme_other[0]), "0x%04x",
				 id->schemes[i]);
			v->schemes[i] = v->scheme_other[i];
		}
	}
	v->n_schemes = id->n_schemes;
}

/* The certificate in PEM as a JSON string (null when it cannot be made). */
static void
print_pem_json(const unsigned char *der, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	BUF_MEM *mem;
	char *s = NULL;

	if (bio != NULL && PEM_write_bio(bio, "CERTIFICATE", "", der, (long)len) > 0 &&
	    BIO_get_mem_ptr(bio, &mem) > 0 && (s = malloc(mem->length + 1)) != NULL) {
		memcpy(s, mem->data, mem->length);
		s[mem->length] = '\0';
	}
	json_string(s);
	free(s);
	BIO_free(bio);
}

/*
 * One identity in either format.  Text: "  label:        value" lines;
 * JSON: the members of one object.  `first` says no comma is due yet.
 */
struct out {
	int json;
	int first;
	const char *indent; /* JSON members */
};

static void
member(struct out *o, const char *label, const char *key)
{
	if (o->json)
		printf("%s\n%s\"%s\": ", o->first ? "" : ",", o->indent, key);
	else
		printf("  %-14s", label);
	o->first = 0;
}

static void
put_str(struct out *o, const char *label, const char *key, const char *value)
{
	member(o, label, key);
	if (o->json)
		json_string(value);
	else
		printf("%s\n", value != NULL ? safe(value) : "?");
}

/* Text: " a, b, c" (" (none)" when empty); JSON: an array of strings. */
static void
put_names(struct out *o, const char *label, const char *key, const char *const *names, size_t n)
{
	size_t i;

	/* Text: the names start with their own blank. */
	if (o->json) {
		member(o, label, key);
		printf("[");
	} else {
		printf("  %-13s", label);
	}
	for (i = 0; i < n; i++) {
		if (o->json) {
			printf("%s", i > 0 ? ", " : "");
			json_string(names[i]);
		} else {
			printf("%s %s", i > 0 ? "," : "", names[i]);
		}
	}
	printf("%s", o->json ? "]" : n == 0 ? " (none)\n" : "\n");
}

static void
put_cert(struct out *o, const struct mtls_agent_identity *id, const struct cert_view *c, int pem)
{
	struct out co = { o->json, 1, "      " };

	if (o->json) {
		member(o, "", "certificate");
		if (!c->present || !c->parsed) {
			printf("%s", !c->present ? "null" : "{ \"parsable\": false }");
			return;
		}
		printf("{\n      \"parsable\": true");
		co.first = 0;
	} else if (!c->present || !c->parsed) {
		put_str(o, "certificate:", NULL,
			!c->present ? "(none)" : "(unparsable certificate)");
		return;
	}
	put_str(&co, "subject:", "subject", c->subject);
	put_str(&co, "issuer:", "issuer", c->issuer);
	put_str(&co, "serial:", "serial", c->serial);
	put_str(&co, "not before:", "not_before", c->not_before);
	put_str(&co, "not after:", "not_after", c->not_after);
	put_str(&co, "expires:", "expires", c->expires);
	put_str(&co, "sha256:", "sha256_fingerprint", c->fingerprint);
	if (o->json && pem) {
		member(&co, "", "pem");
		print_pem_json(id->cert_der, id->cert_der_len);
	}
	if (o->json)
		printf("\n    }");
}

static void
print_identity(const struct mtls_agent_identity *id, int pem, int json)
{
	struct out o = { json, 1, "    " };
	char key[64];
	struct id_view v;

	id_view_load(&v, id);
	if (json) {
		printf("  {");
		put_str(&o, "", "name", id->name);
	} else {
		printf("identity: %s\n", safe(id->name));
	}
	put_str(&o, "token:", "token_label", id->token_label);
	put_str(&o, "key label:", "key_label", id->key_label);
	put_str(&o, "key id:", "key_id", v.keyid);
	if (json) {
		put_str(&o, "", "key_type", key_type_name(id->key_type));
		printf(",\n    \"key_bits\": %u,\n    \"flags\": %u", id->key_bits, id->flags);
		printf(",\n    \"token_present\": %s,\n    \"logged_in\": %s",
		       (id->flags & MTLS_AGENT_ID_TOKEN_PRESENT) ? "true" : "false",
		       (id->flags & MTLS_AGENT_ID_LOGGED_IN) ? "true" : "false");
	} else {
		snprintf(key, sizeof(key), "%s %u", key_type_name(id->key_type), id->key_bits);
		put_str(&o, "key:", NULL, key);
	}
	put_names(&o, "state:", "state", v.state, v.n_state);
	put_names(&o, "purposes:", "purposes", v.purposes, v.n_purposes);
	put_names(&o, "schemes:", "schemes", v.schemes, v.n_schemes);
	put_cert(&o, id, &v.cert, pem);
	if (json) {
		printf(",\n    \"chain_length\": %zu\n  }", id->n_chain);
	} else {
		printf("  chain:        %zu certificate%s\n", id->n_chain,
		       id->n_chain == 1 ? "" : "s");
		if (pem && v.cert.parsed)
			print_pem(id->cert_der, id->cert_der_len);
	}
	id_view_clear(&v);
}

int
cmd_list(int argc, char **argv)
{
	static const struct option opts[] = { { "pem", no_argument, NULL, 'p' },
					      { "json", no_argument, NULL, 'j' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_identity *ids = NULL;
	mtls_agent *a = NULL;
	int c, r, pem = 0, json = 0, ret;
	size_t n = 0, i;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'p': pem = 1; break;
		case 'j': json = 1; break;
		default: return bad_option("list", argv, "list [--pem] [--json]");
		}
	}
	if (optind != argc)
		return usage_error("list", "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent("list", &a)) != 0)
		return ret;
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("list", r, NULL);
		goto out;
	}
	if (json) {
		printf("[");
		for (i = 0; i < n; i++) {
			printf("%s\n", i > 0 ? "," : "");
			print_identity(&ids[i], pem, 1);
		}
		printf("%s]\n", n > 0 ? "\n" : "");
	} else if (n == 0) {
		if (!quiet)
			printf("no identities\n");
	} else {
		for (i = 0; i < n; i++) {
			if (i > 0)
				putchar('\n');
			print_identity(&ids[i], pem, 0);
		}
	}
	if (fflush(stdout) != 0) {
		errmsg("list", "cannot write output: %s", strerror(errno));
		ret = EXIT_FAILED;
	}
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}
