/*
 * purpose_csr.c - the `csr` purpose: the content must be a DER
 * CertificationRequestInfo (RFC 2986 section 4.1) with version 0, a
 * printable subject, only an extensionRequest attribute whose extensions
 * OpenSSL knows and can print (no CA basicConstraints), and - bound to the
 * identity - a SubjectPublicKeyInfo that is the identity's own public key.
 * So the agent signs certificate requests for the key it holds, and no
 * TBSCertificate (the agent is no CA), TLS content or anything else passes
 * as one.  Parsing is OpenSSL's, through an ASN.1 template: no DER is read
 * by hand here.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls-agent.h"
#include "purpose.h"

/* RFC 2986: CertificationRequestInfo. */
typedef struct {
	ASN1_INTEGER *version;
	X509_NAME *subject;
	X509_PUBKEY *pubkey;
	STACK_OF(X509_ATTRIBUTE) * attributes;
} CSR_INFO;

ASN1_SEQUENCE(CSR_INFO) = {
	ASN1_SIMPLE(CSR_INFO, version, ASN1_INTEGER),
	ASN1_SIMPLE(CSR_INFO, subject, X509_NAME),
	ASN1_SIMPLE(CSR_INFO, pubkey, X509_PUBKEY),
	ASN1_IMP_SET_OF(CSR_INFO, attributes, X509_ATTRIBUTE, 0),
} static_ASN1_SEQUENCE_END(CSR_INFO)

static int
refuse(char *why, size_t why_len, const char *reason)
{
	if (why != NULL && why_len > 0)
		snprintf(why, why_len, "csr: %s", reason);
	ERR_clear_error();
	return MTLS_ERR_CONTENT_REJECTED;
}

/* Text a person reads: no control characters, valid UTF-8. */
static int
printable_bytes(const unsigned char *p, size_t len, int newlines)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((p[i] < 0x20 && !(newlines && p[i] == '\n')) || p[i] == 0x7f)
			return 0;
	return 1;
}

static int
subject_printable(const X509_NAME *name)
{
	int i, n = X509_NAME_entry_count(name);

	if (n <= 0)
		return 0;
	for (i = 0; i < n; i++) {
		const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
		unsigned char *u = NULL;
		int len, ok, t = ASN1_STRING_type(v);

		if (t != V_ASN1_PRINTABLESTRING && t != V_ASN1_UTF8STRING && t != V_ASN1_IA5STRING)
			return 0;
		if ((len = ASN1_STRING_to_UTF8(&u, v)) <= 0)
			return 0;
		ok = printable_bytes(u, (size_t)len, 0);
		OPENSSL_free(u);
		if (!ok)
			return 0;
	}
	return 1;
}

/* One requested extension: one OpenSSL knows, decodes and prints. */
static int
extension_ok(X509_EXTENSION *ext, char *why, size_t why_len)
{
	int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
	BASIC_CONSTRAINTS *bc;
	BUF_MEM *mem;
	BIO *bio;
	void *v;
	int ok;

	if (nid != NID_subject_alt_name && nid != NID_key_usage && nid != NID_ext_key_usage &&
	    nid != NID_basic_constraints && nid != NID_subject_key_identifier) {
		refuse(why, why_len,
		       "an extension other than subjectAltName, keyUsage, "
		       "extendedKeyUsage, basicConstraints or subjectKeyIdentifier");
		return 0;
	}
	if ((v = X509V3_EXT_d2i(ext)) == NULL) {
		refuse(why, why_len, "an extension does not parse");
		return 0;
	}
	if (nid == NID_basic_constraints) {
		bc = v;
		ok = !bc->ca;
		BASIC_CONSTRAINTS_free(bc);
		if (!ok) {
			refuse(why, why_len, "basicConstraints asks for a CA");
			return 0;
		}
	} else {
		X509V3_EXT_METHOD const *m = X509V3_EXT_get(ext);

		if (m != NULL && m->it != NULL)
			ASN1_item_free(v, ASN1_ITEM_ptr(m->it));
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return 0;
	ok = X509V3_EXT_print(bio, ext, 0, 0) == 1 && BIO_get_mem_ptr(bio, &mem) == 1 &&
	     printable_bytes((const unsigned char *)mem->data, mem->length, 1);
	BIO_free(bio);
	if (!ok)
		refuse(why, why_len, "an extension is not printable");
	return ok;
}

static int
attributes_ok(const STACK_OF(X509_ATTRIBUTE) * attrs, char *why, size_t why_len)
{
	int i, j;

	for (i = 0; i < sk_X509_ATTRIBUTE_num(attrs); i++) {
		X509_ATTRIBUTE *a = sk_X509_ATTRIBUTE_value(attrs, i);
		STACK_OF(X509_EXTENSION) * exts;
		const unsigned char *p;
		ASN1_TYPE *t;
		int ok = 1;

		if (OBJ_obj2nid(X509_ATTRIBUTE_get0_object(a)) != NID_ext_req ||
		    X509_ATTRIBUTE_count(a) != 1 || (t = X509_ATTRIBUTE_get0_type(a, 0)) == NULL ||
		    t->type != V_ASN1_SEQUENCE)
			return refuse(why, why_len, "an attribute other than one extensionRequest"),
			       0;
		p = t->value.sequence->data;
		exts = d2i_X509_EXTENSIONS(NULL, &p, t->value.sequence->length);
		if (exts == NULL || p != t->value.sequence->data + t->value.sequence->length) {
			sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
			return refuse(why, why_len, "extensionRequest does not parse"), 0;
		}
		for (j = 0; j < sk_X509_EXTENSION_num(exts) && ok; j++)
			ok = extension_ok(sk_X509_EXTENSION_value(exts, j), why, why_len);
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
		if (!ok)
			return 0;
	}
	return 1;
}

int
purpose_csr_check(const unsigned char *content, size_t len, const struct evp_pkey_st *key,
		  char *why, size_t why_len)
{
	const unsigned char *p = content;
	unsigned char *der = NULL;
	CSR_INFO *ci = NULL;
	EVP_PKEY *pub;
	int der_len, r = MTLS_ERR_CONTENT_REJECTED;

	if (why != NULL && why_len > 0)
		why[0] = '\0';
	if (len == 0 || len > MTLS_AGENT_CONTENT_MAX || len > (size_t)0x7fffffff)
		return refuse(why, why_len, "empty or oversized content");
	ci = (CSR_INFO *)ASN1_item_d2i(NULL, &p, (long)len, ASN1_ITEM_rptr(CSR_INFO));
	if (ci == NULL || p != content + len) {
		r = refuse(why, why_len, "not a CertificationRequestInfo");
		goto out;
	}
	/* One encoding only: what is signed is what a CA will read. */
	if ((der_len = ASN1_item_i2d((ASN1_VALUE *)ci, &der, ASN1_ITEM_rptr(CSR_INFO))) <= 0 ||
	    (size_t)der_len != len || memcmp(der, content, len) != 0) {
		r = refuse(why, why_len, "not DER");
		goto out;
	}
	if (ASN1_INTEGER_get(ci->version) != 0) {
		r = refuse(why, why_len, "version is not 0 (v1)");
		goto out;
	}
	if (!subject_printable(ci->subject)) {
		r = refuse(why, why_len, "subject empty or not printable");
		goto out;
	}
	if (!attributes_ok(ci->attributes, why, why_len))
		goto out;
	if ((pub = X509_PUBKEY_get0(ci->pubkey)) == NULL) {
		r = refuse(why, why_len, "public key does not parse");
		goto out;
	}
	if (key != NULL && EVP_PKEY_eq(pub, (const EVP_PKEY *)key) != 1) {
		r = refuse(why, why_len, "the request is for another key than this identity's");
		goto out;
	}
	r = 0;
out:
	OPENSSL_free(der);
	ASN1_item_free((ASN1_VALUE *)ci, ASN1_ITEM_rptr(CSR_INFO));
	ERR_clear_error();
	return r;
}
