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

static void
print_identity_text(const struct mtls_agent_identity *id, int pem)
{
	const char *words[8];
	struct cert_view v;
	char *keyid;
	size_t i;
	int bit;

	cert_view_load(&v, id->cert_der, id->cert_der_len);
	keyid = hex_string(id->key_id, id->key_id_len, "", 0);
	printf("identity: %s\n", safe(id->name));
	printf("  token:        %s\n", safe(id->token_label));
	printf("  key label:    %s\n", safe(id->key_label));
	printf("  key id:       %s\n", keyid != NULL ? keyid : "?");
	printf("  key:          %s %u\n", key_type_name(id->key_type), id->key_bits);
	state_words(id->flags, words);
	printf("  state:       ");
	for (i = 0; words[i] != NULL; i++)
		printf("%s %s", i > 0 ? "," : "", words[i]);
	printf("\n  purposes:    ");
	for (i = 0, bit = 1; bit < 32; bit++) {
		const char *n = mtls_agent_purpose_name(bit);

		if (!(id->purposes & (1U << bit)))
			continue;
		if (n != NULL)
			printf("%s %s", i++ > 0 ? "," : "", n);
		else
			printf("%s purpose-%d", i++ > 0 ? "," : "", bit);
	}
	printf("%s\n  schemes:     ", i == 0 ? " (none)" : "");
	for (i = 0; i < id->n_schemes; i++) {
		const char *n = mtls_agent_scheme_name(id->schemes[i]);

		if (n != NULL)
			printf("%s %s", i > 0 ? "," : "", n);
		else
			printf("%s 0x%04x", i > 0 ? "," : "", id->schemes[i]);
	}
	printf("%s\n", id->n_schemes == 0 ? " (none)" : "");
	if (!v.present) {
		printf("  certificate:  (none)\n");
	} else if (!v.parsed) {
		printf("  certificate:  (unparsable certificate)\n");
	} else {
		printf("  subject:      %s\n", safe(v.subject));
		printf("  issuer:       %s\n", safe(v.issuer));
		printf("  serial:       %s\n", v.serial != NULL ? v.serial : "?");
		printf("  not before:   %s\n", v.not_before);
		printf("  not after:    %s\n", v.not_after);
		printf("  sha256:       %s\n", v.fingerprint != NULL ? v.fingerprint : "?");
	}
	printf("  chain:        %zu certificate%s\n", id->n_chain, id->n_chain == 1 ? "" : "s");
	if (pem && v.parsed)
		print_pem(id->cert_der, id->cert_der_len);
	free(keyid);
	cert_view_clear(&v);
}

static void
print_identity_json(const struct mtls_agent_identity *id, int pem)
{
	const char *words[8];
	struct cert_view v;
	char *keyid;
	size_t i;
	int bit;

	cert_view_load(&v, id->cert_der, id->cert_der_len);
	keyid = hex_string(id->key_id, id->key_id_len, "", 0);
	printf("  {\n    \"name\": ");
	json_string(id->name);
	printf(",\n    \"token_label\": ");
	json_string(id->token_label);
	printf(",\n    \"key_label\": ");
	json_string(id->key_label);
	printf(",\n    \"key_id\": ");
	json_string(keyid);
	printf(",\n    \"key_type\": ");
	json_string(key_type_name(id->key_type));
	printf(",\n    \"key_bits\": %u", id->key_bits);
	printf(",\n    \"flags\": %u", id->flags);
	printf(",\n    \"token_present\": %s",
	       (id->flags & MTLS_AGENT_ID_TOKEN_PRESENT) ? "true" : "false");
	printf(",\n    \"logged_in\": %s",
	       (id->flags & MTLS_AGENT_ID_LOGGED_IN) ? "true" : "false");
	printf(",\n    \"state\": [");
	state_words(id->flags, words);
	for (i = 0; words[i] != NULL; i++) {
		printf("%s", i > 0 ? ", " : "");
		json_string(words[i]);
	}
	printf("],\n    \"purposes\": [");
	for (i = 0, bit = 1; bit < 32; bit++) {
		const char *n = mtls_agent_purpose_name(bit);
		char other[32];

		if (!(id->purposes & (1U << bit)))
			continue;
		if (n == NULL) {
			snprintf(other, sizeof(other), "purpose-%d", bit);
			n = other;
		}
		printf("%s", i++ > 0 ? ", " : "");
		json_string(n);
	}
	printf("],\n    \"schemes\": [");
	for (i = 0; i < id->n_schemes; i++) {
		const char *n = mtls_agent_scheme_name(id->schemes[i]);
		char other[16];

		if (n == NULL) {
			snprintf(other, sizeof(other), "0x%04x", id->schemes[i]);
			n = other;
		}
		printf("%s", i > 0 ? ", " : "");
		json_string(n);
	}
	printf("],\n    \"certificate\": ");
	if (!v.present) {
		printf("null");
	} else if (!v.parsed) {
		printf("{ \"parsable\": false }");
	} else {
		printf("{\n      \"parsable\": true,\n      \"subject\": ");
		json_string(v.subject);
		printf(",\n      \"issuer\": ");
		json_string(v.issuer);
		printf(",\n      \"serial\": ");
		json_string(v.serial);
		printf(",\n      \"not_before\": ");
		json_string(v.not_before);
		printf(",\n      \"not_after\": ");
		json_string(v.not_after);
		printf(",\n      \"sha256_fingerprint\": ");
		json_string(v.fingerprint);
		if (pem) {
			BIO *bio = BIO_new(BIO_s_mem());
			BUF_MEM *mem;
			char *s = NULL;

			if (bio != NULL &&
			    PEM_write_bio(bio, "CERTIFICATE", "", id->cert_der,
					  (long)id->cert_der_len) > 0 &&
			    BIO_get_mem_ptr(bio, &mem) > 0 &&
			    (s = malloc(mem->length + 1)) != NULL) {
				memcpy(s, mem->data, mem->length);
				s[mem->length] = '\0';
			}
			printf(",\n      \"pem\": ");
			json_string(s);
			free(s);
			BIO_free(bio);
		}
		printf("\n    }");
	}
	printf(",\n    \"chain_length\": %zu\n  }", id->n_chain);
	free(keyid);
	cert_view_clear(&v);
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
			print_identity_json(&ids[i], pem);
		}
		printf("%s]\n", n > 0 ? "\n" : "");
	} else if (n == 0) {
		if (!quiet)
			printf("no identities\n");
	} else {
		for (i = 0; i < n; i++) {
			if (i > 0)
				putchar('\n');
			print_identity_text(&ids[i], pem);
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
