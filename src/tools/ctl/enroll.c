/*
 * mtls-agentctl enroll, renew, import-cert: a key pair generated on the
 * token, a certificate request for it built here with OpenSSL's X509_REQ
 * and signed by the agent under the `csr` purpose (the agent checks that
 * the request carries this identity's key), and the certificate the CA
 * issued written onto the token next to its key.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ctl.h"
#include "secmem.h"

#define ENROLL_SYNOPSIS ENROLL_USAGE
#define RENEW_SYNOPSIS	RENEW_USAGE
#define IMPORT_SYNOPSIS IMPORT_USAGE
#define DELETE_SYNOPSIS DELETE_USAGE

/* "/CN=alice/O=Example" -> a name; entries in the order given. */
static X509_NAME *
parse_subject(const char *s)
{
	X509_NAME *name = X509_NAME_new();
	char *copy = strdup(s), *item, *next, *eq;

	if (name == NULL || copy == NULL || copy[0] != '/')
		goto fail;
	for (item = copy + 1; item != NULL && *item != '\0'; item = next) {
		if ((next = strchr(item, '/')) != NULL)
			*next++ = '\0';
		if ((eq = strchr(item, '=')) == NULL || eq == item || eq[1] == '\0')
			goto fail;
		*eq = '\0';
		if (!X509_NAME_add_entry_by_txt(name, item, MBSTRING_UTF8,
						(const unsigned char *)eq + 1, -1, -1, 0))
			goto fail;
	}
	if (X509_NAME_entry_count(name) == 0)
		goto fail;
	free(copy);
	return name;
fail:
	free(copy);
	X509_NAME_free(name);
	ERR_clear_error();
	return NULL;
}

/* "email:a@b" "dns:x" "uri:u" "ip:1.2.3.4" -> OpenSSL's v3 form, appended
 * with a comma to buf. */
static int
add_san(char *buf, size_t len, const char *san)
{
	static const struct {
		const char *ours, *openssl;
	} kinds[] = {
		{ "email:", "email:" }, { "dns:", "DNS:" }, { "uri:", "URI:" }, { "ip:", "IP:" }
	};
	size_t i, used = strlen(buf);

	if (strchr(san, ',') != NULL)
		return -1;
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t k = strlen(kinds[i].ours);

		if (strncmp(san, kinds[i].ours, k) == 0 && san[k] != '\0') {
			if (snprintf(buf + used, len - used, "%s%s%s", used ? "," : "",
				     kinds[i].openssl, san + k) >= (int)(len - used))
				return -1;
			return 0;
		}
	}
	return -1;
}

/* The scheme and signature AlgorithmIdentifier for a request by pub. */
static int
scheme_for(EVP_PKEY *pub, uint16_t *scheme, int *sig_nid)
{
	if (EVP_PKEY_is_a(pub, "EC")) {
		int bits = EVP_PKEY_get_bits(pub);

		*scheme = bits == 384 ? MTLS_AGENT_ECDSA_SECP384R1_SHA384
				      : MTLS_AGENT_ECDSA_SECP256R1_SHA256;
		*sig_nid = bits == 384 ? NID_ecdsa_with_SHA384 : NID_ecdsa_with_SHA256;
		return bits == 256 || bits == 384 ? 0 : -1;
	}
	if (EVP_PKEY_is_a(pub, "RSA")) {
		*scheme = MTLS_AGENT_RSA_PKCS1_SHA256;
		*sig_nid = NID_sha256WithRSAEncryption;
		return 0;
	}
	return -1;
}

/*
 * Builds the request (subject, key, requested extensions), has the agent
 * sign its CertificationRequestInfo under the csr purpose, checks the
 * signature with the key and writes the PEM.  Returns an exit code.
 */
static int
make_csr(const char *cmd, mtls_agent *a, const char *identity, EVP_PKEY *pub,
	 const X509_NAME *subject, STACK_OF(X509_EXTENSION) * exts, const char *outpath)
{
	X509_REQ *req = X509_REQ_new();
	X509_ALGOR *alg = NULL;
	ASN1_BIT_STRING *bs = NULL;
	unsigned char *tbs = NULL, *sig = NULL;
	size_t sig_len = 0;
	uint16_t scheme;
	int tbs_len, sig_nid, r, ret = EXIT_FAILED;
	FILE *out = stdout;

	if (req == NULL || scheme_for(pub, &scheme, &sig_nid) != 0) {
		errmsg(cmd, "the key is of a type the agent does not sign with");
		goto out;
	}
	if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, subject) ||
	    !X509_REQ_set_pubkey(req, pub) ||
	    (exts != NULL && sk_X509_EXTENSION_num(exts) > 0 &&
	     !X509_REQ_add_extensions(req, exts))) {
		errmsg(cmd, "cannot build the request");
		goto out;
	}
	if ((tbs_len = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0) {
		errmsg(cmd, "cannot encode the request");
		goto out;
	}
	if ((r = mtls_agent_sign(a, identity, scheme, MTLS_AGENT_PURPOSE_CSR, tbs, (size_t)tbs_len,
				 &sig, &sig_len)) != 0) {
		ret = agent_error(cmd, r, NULL);
		goto out;
	}
	if ((alg = X509_ALGOR_new()) == NULL || (bs = ASN1_BIT_STRING_new()) == NULL ||
	    !X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid),
			     sig_nid == NID_sha256WithRSAEncryption ? V_ASN1_NULL : V_ASN1_UNDEF,
			     NULL) ||
	    !ASN1_BIT_STRING_set(bs, sig, (int)sig_len)) {
		errmsg(cmd, "out of memory");
		goto out;
	}
	bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	if (!X509_REQ_set1_signature_algo(req, alg))
		goto out;
	X509_REQ_set0_signature(req, bs);
	bs = NULL;
	/* What goes to the CA must verify with the key it names. */
	if (X509_REQ_verify(req, pub) != 1) {
		errmsg(cmd, "the agent's signature does not verify with the key");
		goto out;
	}
	if (outpath != NULL && (out = fopen(outpath, "w")) == NULL) {
		errmsg(cmd, "%s: %s", outpath, strerror(errno));
		goto out;
	}
	if (!PEM_write_X509_REQ(out, req) || fflush(out) != 0) {
		errmsg(cmd, "cannot write the request");
		goto out;
	}
	ret = EXIT_OK;
out:
	if (out != stdout && out != NULL && fclose(out) != 0 && ret == EXIT_OK) {
		errmsg(cmd, "%s: %s", outpath, strerror(errno));
		ret = EXIT_FAILED;
	}
	ERR_clear_error();
	ASN1_BIT_STRING_free(bs);
	X509_ALGOR_free(alg);
	OPENSSL_free(tbs);
	free(sig);
	X509_REQ_free(req);
	return ret;
}

static int
unknown_kind(const char *cmd, const char *kind_s)
{
	return usage_error(cmd,
			   "unknown key kind '%s' (ec:p256, ec:p384, rsa:2048, rsa:3072, "
			   "rsa:4096)",
			   kind_s);
}

/* A new key pair on the token; *pub its public key.  Exit code. */
static int
keygen(const char *cmd, mtls_agent *a, const char *token, const char *label, const char *kind_s,
       char **name, EVP_PKEY **pub)
{
	unsigned char *spki = NULL;
	const unsigned char *p;
	size_t spki_len = 0;
	int kind = mtls_agent_key_kind_from_name(kind_s), r;

	*pub = NULL;
	if (kind == 0)
		return unknown_kind(cmd, kind_s);
	if ((r = mtls_agent_keygen(a, token, label, kind, name, &spki, &spki_len)) != 0)
		return agent_error(cmd, r, NULL);
	p = spki;
	*pub = d2i_PUBKEY(NULL, &p, (long)spki_len);
	free(spki);
	if (*pub == NULL) {
		errmsg(cmd, "the agent sent a public key that does not parse");
		return EXIT_FAILED;
	}
	if (!quiet)
		fprintf(stderr, PROG ": %s: key pair %s generated on the token\n", cmd,
			safe(*name));
	return EXIT_OK;
}

int
cmd_enroll(int argc, char **argv)
{
	static const struct option opts[] = { { "token", required_argument, NULL, 't' },
					      { "label", required_argument, NULL, 'l' },
					      { "key", required_argument, NULL, 'k' },
					      { "subject", required_argument, NULL, 'S' },
					      { "san", required_argument, NULL, 'a' },
					      { "out", required_argument, NULL, 'o' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *token = "", *label = NULL, *kind = "ec:p256", *subj_s = NULL, *outpath = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *ext;
	X509_NAME *subject = NULL;
	EVP_PKEY *pub = NULL;
	mtls_agent *a = NULL;
	char sans[2048] = "", *name = NULL;
	int c, ret;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		switch (c) {
		case 't': token = optarg; break;
		case 'l': label = optarg; break;
		case 'k': kind = optarg; break;
		case 'S': subj_s = optarg; break;
		case 'o': outpath = optarg; break;
		case 'a':
			if (add_san(sans, sizeof(sans), optarg) != 0)
				return usage_error("enroll",
						   "bad --san '%s' (email:ADDR, dns:NAME, "
						   "uri:URI or ip:ADDR)",
						   optarg);
			break;
		default:
			if (!common_option(c, optarg))
				return bad_option("enroll", argv, ENROLL_SYNOPSIS);
		}
	}
	if (optind != argc)
		return usage_error("enroll", "unexpected argument '%s'", argv[optind]);
	if (label == NULL || subj_s == NULL)
		return usage_error("enroll", "--label and --subject are required (usage: %s)",
				   ENROLL_SYNOPSIS);
	if (mtls_agent_key_kind_from_name(kind) == 0)
		return unknown_kind("enroll", kind);
	if ((subject = parse_subject(subj_s)) == NULL)
		return usage_error("enroll", "bad --subject '%s' (/CN=NAME/O=ORG...)", subj_s);
	if (sans[0] != '\0') {
		if ((ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, sans)) == NULL) {
			X509_NAME_free(subject);
			ERR_clear_error();
			return usage_error("enroll", "bad --san value");
		}
		if ((exts = sk_X509_EXTENSION_new_null()) == NULL ||
		    !sk_X509_EXTENSION_push(exts, ext)) {
			X509_EXTENSION_free(ext);
			ret = agent_error("enroll", MTLS_ERR_ALLOC, NULL);
			goto out;
		}
	}
	if ((ret = connect_agent("enroll", &a)) != 0)
		goto out;
	if ((ret = keygen("enroll", a, token, label, kind, &name, &pub)) != 0)
		goto out;
	ret = make_csr("enroll", a, name, pub, subject, exts, outpath);
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	EVP_PKEY_free(pub);
	free(name);
	mtls_agent_free(a);
	return ret;
}

/* The token URI of a token label (pkcs11:token=..., RFC 7512 escaping). */
static int
token_uri(const char *label, char *buf, size_t len)
{
	size_t used = (size_t)snprintf(buf, len, "pkcs11:token=");
	const unsigned char *p;

	for (p = (const unsigned char *)label; *p != '\0'; p++) {
		int n;

		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_')
			n = snprintf(buf + used, len - used, "%c", *p);
		else
			n = snprintf(buf + used, len - used, "%%%02X", *p);
		if (n < 0 || (size_t)n >= len - used)
			return -1;
		used += (size_t)n;
	}
	return 0;
}

int
cmd_renew(int argc, char **argv)
{
	static const struct option opts[] = { { "new-key", no_argument, NULL, 'n' },
					      { "label", required_argument, NULL, 'l' },
					      { "key", required_argument, NULL, 'k' },
					      { "out", required_argument, NULL, 'o' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *ident = NULL, *label = NULL, *kind = NULL, *outpath = NULL;
	struct mtls_agent_identity *ids = NULL, *id = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	STACK_OF(GENERAL_NAME) *gens = NULL;
	char uri[512], newlabel[80], *name = NULL;
	EVP_PKEY *pub = NULL;
	mtls_agent *a = NULL;
	X509 *cert = NULL;
	const unsigned char *p;
	size_t n = 0, i;
	int c, r, ret, new_key = 0;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		switch (c) {
		case 'n': new_key = 1; break;
		case 'l': label = optarg; break;
		case 'k': kind = optarg; break;
		case 'o': outpath = optarg; break;
		default:
			if (!common_option(c, optarg))
				return bad_option("renew", argv, RENEW_SYNOPSIS);
		}
	}
	if (optind < argc)
		ident = argv[optind++];
	if (ident == NULL || optind != argc)
		return usage_error("renew", "one identity name expected (usage: %s)",
				   RENEW_SYNOPSIS);
	if (!new_key && (label != NULL || kind != NULL))
		return usage_error("renew", "--label and --key go with --new-key");
	if ((ret = connect_agent("renew", &a)) != 0)
		return ret;
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("renew", r, NULL);
		goto out;
	}
	for (i = 0; i < n; i++)
		if (strcmp(ids[i].name, ident) == 0)
			id = &ids[i];
	if (id == NULL || id->cert_der == NULL) {
		errmsg("renew", "no identity %s with a certificate", safe(ident));
		ret = EXIT_FAILED;
		goto out;
	}
	p = id->cert_der;
	if ((cert = d2i_X509(NULL, &p, (long)id->cert_der_len)) == NULL) {
		errmsg("renew", "the certificate of %s does not parse", safe(ident));
		ret = EXIT_FAILED;
		goto out;
	}
	/* The current subject and subject alternative names, as they are. */
	if ((gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL)) != NULL &&
	    X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1) {
		ret = agent_error("renew", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if (new_key) {
		if (label == NULL) {
			snprintf(newlabel, sizeof(newlabel), "%.64s.new", ident);
			label = newlabel;
		}
		if (token_uri(id->token_label, uri, sizeof(uri)) != 0) {
			errmsg("renew", "token label too long");
			ret = EXIT_FAILED;
			goto out;
		}
		if ((ret = keygen("renew", a, uri, label,
				  kind ? kind
				       : (id->key_type == MTLS_AGENT_KEY_RSA ? "rsa:2048"
					  : id->key_bits == 384		     ? "ec:p384"
									     : "ec:p256"),
				  &name, &pub)) != 0)
			goto out;
		ret = make_csr("renew", a, name, pub, X509_get_subject_name(cert), exts, outpath);
	} else {
		ret = make_csr("renew", a, ident, X509_get0_pubkey(cert),
			       X509_get_subject_name(cert), exts, outpath);
	}
out:
	sk_GENERAL_NAME_pop_free(gens, GENERAL_NAME_free);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_free(cert);
	EVP_PKEY_free(pub);
	free(name);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}

/* A PEM or DER certificate file, as DER. */
static int
read_cert(const char *path, unsigned char **der, int *len)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	*der = NULL;
	if (f == NULL)
		return -1;
	if ((x = PEM_read_X509(f, NULL, NULL, NULL)) == NULL) {
		rewind(f);
		ERR_clear_error();
		x = d2i_X509_fp(f, NULL);
	}
	fclose(f);
	ERR_clear_error();
	if (x == NULL) {
		errno = EINVAL;
		return -1;
	}
	*len = i2d_X509(x, der);
	X509_free(x);
	return *len > 0 ? 0 : -1;
}

int
cmd_import_cert(int argc, char **argv)
{
	static const struct option opts[] = { { "force", no_argument, NULL, 'f' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *path = NULL;
	unsigned char *der = NULL;
	unsigned int flags = 0;
	mtls_agent *a = NULL;
	char *name = NULL;
	int c, r, ret, len = 0;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (c == 'f')
			flags |= MTLS_AGENT_IMPORT_FORCE;
		else if (!common_option(c, optarg))
			return bad_option("import-cert", argv, IMPORT_SYNOPSIS);
	}
	if (optind < argc)
		path = argv[optind++];
	if (path == NULL || optind != argc)
		return usage_error("import-cert", "one certificate file expected (usage: %s)",
				   IMPORT_SYNOPSIS);
	if (read_cert(path, &der, &len) != 0) {
		errmsg("import-cert", "%s: %s", path,
		       errno == EINVAL ? "not a PEM or DER certificate" : strerror(errno));
		return EXIT_FAILED;
	}
	if ((ret = connect_agent("import-cert", &a)) != 0)
		goto out;
	if ((r = mtls_agent_import_cert(a, der, (size_t)len, flags, &name)) != 0) {
		ret = agent_error("import-cert", r, NULL);
		goto out;
	}
	if (!quiet)
		printf("imported: identity %s\n", safe(name));
	ret = EXIT_OK;
out:
	OPENSSL_free(der);
	free(name);
	mtls_agent_free(a);
	return ret;
}

int
cmd_delete_key(int argc, char **argv)
{
	static const struct option opts[] = { { "force", no_argument, NULL, 'f' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_identity *ids = NULL;
	const char *ident = NULL, *token = "its token";
	unsigned int flags = 0;
	mtls_agent *a = NULL;
	char *answer = NULL, *prompt = NULL;
	size_t n = 0, i;
	int c, r, ret;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (c == 'f')
			flags |= MTLS_AGENT_DELETE_FORCE;
		else if (!common_option(c, optarg))
			return bad_option("delete-key", argv, DELETE_SYNOPSIS);
	}
	if (optind < argc)
		ident = argv[optind++];
	if (ident == NULL || optind != argc)
		return usage_error("delete-key", "one identity name expected (usage: %s)",
				   DELETE_SYNOPSIS);
	if ((ret = connect_agent("delete-key", &a)) != 0)
		return ret;
	if (mtls_agent_list(a, &ids, &n) == 0)
		for (i = 0; i < n; i++)
			if (strcmp(ids[i].name, ident) == 0)
				token = ids[i].token_label;
	/* Nothing undoes this: a person says yes, on the terminal or through
	 * the askpass program, as for a PIN. */
	if (asprintf(&prompt, "Delete the key pair %s and its certificate from %s? Type yes: ",
		     safe(ident), safe(token)) == -1) {
		prompt = NULL;
		ret = agent_error("delete-key", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if ((answer = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error("delete-key", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if (read_pin_tty(prompt, answer) != 0) {
		errmsg("delete-key", "not confirmed: %s",
		       errno == ENOTTY ? no_terminal_hint("delete-key") : "no answer");
		ret = EXIT_FAILED;
		goto out;
	}
	if (strcmp(answer, "yes") != 0) {
		errmsg("delete-key", "not confirmed: nothing deleted");
		ret = EXIT_FAILED;
		goto out;
	}
	if ((r = mtls_agent_delete_key(a, ident, flags)) != 0) {
		ret = agent_error("delete-key", r, NULL);
		goto out;
	}
	if (!quiet)
		printf("deleted: key pair %s\n", safe(ident));
	ret = EXIT_OK;
out:
	mtls_secure_free(answer);
	free(prompt);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}
