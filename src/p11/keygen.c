/*
 * keygen.c - KEYGEN and IMPORT_CERT: the two requests that write to a
 * token.  KEYGEN makes a key pair with C_GenerateKeyPair (the private key
 * sensitive, never extractable, for signing only; the public key kept on
 * the token too; both with one fresh random CKA_ID and the label), IMPORT
 * writes a certificate object next to a key.  The agent has decided that
 * this may happen (configuration, login, which key the certificate is
 * for); the helper refuses a slot that is not logged in and says which
 * mechanisms a token has when it cannot generate the key asked for.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "p11.h"

#define KEY_ID_LEN 16

/* DER OIDs of the curves (CKA_EC_PARAMS as namedCurve). */
static const unsigned char oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};
static const unsigned char oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };

static const struct {
	CK_MECHANISM_TYPE m;
	const char *name;
} mech_names[] = {
	{ CKM_RSA_PKCS_KEY_PAIR_GEN, "RSA-PKCS-KEY-PAIR-GEN" },
	{ CKM_RSA_PKCS, "RSA-PKCS" },
	{ CKM_RSA_PKCS_PSS, "RSA-PKCS-PSS" },
	{ CKM_EC_KEY_PAIR_GEN, "EC-KEY-PAIR-GEN" },
	{ CKM_ECDSA, "ECDSA" },
	{ CKM_SHA256, "SHA256" },
	{ CKM_SHA256_RSA_PKCS, "SHA256-RSA-PKCS" },
	{ CKM_ECDSA_SHA256, "ECDSA-SHA256" },
	{ CKM_AES_KEY_GEN, "AES-KEY-GEN" },
};

/* The token's mechanisms, by name where we know one, into fail->message. */
static void
list_mechanisms(struct p11_state *st, CK_SLOT_ID slot, const char *what, struct p11_fail *fail)
{
	CK_MECHANISM_TYPE ms[128];
	CK_ULONG n = 128, i;
	size_t len, k;
	int pass;

	fail->code = MTLS_ERR_MECHANISM;
	fail->retries = -1;
	len = (size_t)snprintf(fail->message, sizeof(fail->message),
			       "the token cannot generate %s; its mechanisms:", what);
	if (st->mod.f->C_GetMechanismList(slot, ms, &n) != CKR_OK) {
		snprintf(fail->message + len, sizeof(fail->message) - len, " (not listed)");
		return;
	}
	if (n > 128)
		n = 128;
	/* The ones with names first (the message is bounded), then the rest. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < n && len < sizeof(fail->message) - 1; i++) {
			const char *name = NULL;

			for (k = 0; k < sizeof(mech_names) / sizeof(mech_names[0]); k++)
				if (mech_names[k].m == ms[i])
					name = mech_names[k].name;
			if (pass == 0 && name != NULL)
				len += (size_t)snprintf(fail->message + len,
							sizeof(fail->message) - len, " %s", name);
			else if (pass == 1 && name == NULL)
				len += (size_t)snprintf(fail->message + len,
							sizeof(fail->message) - len, " 0x%lx",
							(unsigned long)ms[i]);
		}
	}
	if (n == 0)
		snprintf(fail->message + len, sizeof(fail->message) - len, " none");
}

/* Whether the slot can make this key pair (mechanism and size). */
static int
can_generate(struct p11_state *st, CK_SLOT_ID slot, CK_MECHANISM_TYPE m, CK_ULONG bits)
{
	CK_MECHANISM_INFO mi;

	if (st->mod.f->C_GetMechanismInfo(slot, m, &mi) != CKR_OK ||
	    !(mi.flags & CKF_GENERATE_KEY_PAIR))
		return 0;
	/* EC sizes are field bits; a module that reports 0 does not say. */
	return mi.ulMaxKeySize == 0 || (bits >= mi.ulMinKeySize && bits <= mi.ulMaxKeySize);
}

/* The public numbers of the new pair, as OBJECTS reports them. */
/* The three writes need our login on the slot: the agent logs in first. */
static int
need_login(struct p11_channel *ch, CK_SLOT_ID slot, const char *doing, struct p11_fail *fail)
{
	if (p11_slot_logged_in(ch->st, slot))
		return 0;
	fail->code = MTLS_ERR_LOGIN_REQUIRED;
	fail->retries = -1;
	snprintf(fail->message, sizeof(fail->message), "slot %lu: log the token in before %s",
		 (unsigned long)slot, doing);
	return fail->code;
}

static int
write_protected(CK_RV rv)
{
	return rv == CKR_SESSION_READ_ONLY || rv == CKR_TOKEN_WRITE_PROTECTED;
}

/* A write the token refused as read-only: said so, not as a generic failure. */
static int
fail_read_only(struct p11_fail *fail, CK_RV rv, const char *what)
{
	fail->code = MTLS_ERR_READ_ONLY;
	fail->retries = -1;
	fail->rv = rv;
	snprintf(fail->message, sizeof(fail->message), "%s: the token is write-protected (0x%lx)",
		 what, (unsigned long)rv);
	return fail->code;
}

static int
describe_new(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub, int rsa,
	     struct p11_object *o)
{
	int r;

	if (rsa) {
		o->kind = P11_OBJ_RSA;
		if ((r = p11_get_attr(ch, s, pub, CKA_MODULUS, &o->a, &o->a_len, P11_ATTR_MAX)) !=
			0 ||
		    (r = p11_get_attr(ch, s, pub, CKA_PUBLIC_EXPONENT, &o->b, &o->b_len,
				      P11_ATTR_MAX)) != 0)
			return r;
	} else {
		o->kind = P11_OBJ_EC;
		if ((r = p11_get_attr(ch, s, pub, CKA_EC_PARAMS, &o->a, &o->a_len, P11_ATTR_MAX)) !=
			0 ||
		    (r = p11_get_attr(ch, s, pub, CKA_EC_POINT, &o->b, &o->b_len, P11_ATTR_MAX)) !=
			0)
			return r;
	}
	return o->a_len > 0 && o->b_len > 0 ? 0 : MTLS_ERR_TOKEN;
}

int
p11_keygen(struct p11_channel *ch, const struct msg_p11_keygen_req *req, struct p11_object *out,
	   struct p11_fail *fail)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_SLOT_ID slot = (CK_SLOT_ID)req->slot;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = 0;
	CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
	unsigned char id[KEY_ID_LEN];
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	CK_ULONG label_len = (CK_ULONG)strlen(req->label);
	int rsa = req->kind >= MTLS_AGENT_KEYGEN_RSA_2048, r;
	const char *what;
	CK_RV rv;

	memset(out, 0, sizeof(*out));
	switch (req->kind) {
	case MTLS_AGENT_KEYGEN_EC_P256:
		bits = 256;
		what = "EC P-256 keys";
		break;
	case MTLS_AGENT_KEYGEN_EC_P384:
		bits = 384;
		what = "EC P-384 keys";
		break;
	case MTLS_AGENT_KEYGEN_RSA_2048:
		bits = 2048;
		what = "RSA-2048 keys";
		break;
	case MTLS_AGENT_KEYGEN_RSA_3072:
		bits = 3072;
		what = "RSA-3072 keys";
		break;
	default:
		bits = 4096;
		what = "RSA-4096 keys";
		break;
	}
	if (rsa)
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
	/* Logged in by us: the agent asked for a login first. */
	if ((r = need_login(ch, slot, "generating a key", fail)) != 0)
		return r;
	if (!can_generate(ch->st, slot, mech.mechanism, bits)) {
		list_mechanisms(ch->st, slot, what, fail);
		return fail->code;
	}
	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id))
		return p11_fail_rv(fail, CKR_FUNCTION_FAILED, "getrandom");
	{
		/* The public key's attributes, then those of its kind (added below). */
		CK_ATTRIBUTE pub_t[9] = {
			{ CKA_TOKEN, &yes, sizeof(yes) },     { CKA_PRIVATE, &no, sizeof(no) },
			{ CKA_VERIFY, &yes, sizeof(yes) },    { CKA_ENCRYPT, &no, sizeof(no) },
			{ CKA_WRAP, &no, sizeof(no) },	      { CKA_ID, id, sizeof(id) },
			{ CKA_LABEL, req->label, label_len },
		};
		CK_ULONG n_pub = 7;
		CK_ATTRIBUTE priv_t[] = {
			{ CKA_TOKEN, &yes, sizeof(yes) },     { CKA_PRIVATE, &yes, sizeof(yes) },
			{ CKA_SENSITIVE, &yes, sizeof(yes) }, { CKA_EXTRACTABLE, &no, sizeof(no) },
			{ CKA_SIGN, &yes, sizeof(yes) },      { CKA_DECRYPT, &no, sizeof(no) },
			{ CKA_UNWRAP, &no, sizeof(no) },      { CKA_DERIVE, &no, sizeof(no) },
			{ CKA_ID, id, sizeof(id) },	      { CKA_LABEL, req->label, label_len },
		};

		if (rsa) {
			pub_t[n_pub++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) };
			pub_t[n_pub++] =
			    (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent) };
		} else if (bits == 256) {
			pub_t[n_pub++] =
			    (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256) };
		} else {
			pub_t[n_pub++] =
			    (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid_p384, sizeof(oid_p384) };
		}
		if ((r = p11_channel_session(ch, slot, &s, fail)) != 0)
			return r;
		rv = f->C_GenerateKeyPair(s, &mech, pub_t, n_pub, priv_t,
					  sizeof(priv_t) / sizeof(priv_t[0]), &pub, &priv);
	}
	if (write_protected(rv))
		return fail_read_only(fail, rv, "C_GenerateKeyPair");
	if (rv == CKR_MECHANISM_INVALID || rv == CKR_TEMPLATE_INCONSISTENT ||
	    rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_KEY_SIZE_RANGE) {
		list_mechanisms(ch->st, slot, what, fail);
		fail->rv = rv;
		return fail->code;
	}
	if (rv != CKR_OK)
		return p11_fail_rv(fail, rv, "C_GenerateKeyPair");
	out->handle = priv;
	if ((out->id = malloc(sizeof(id))) == NULL || (out->label = strdup(req->label)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto fail;
	}
	memcpy(out->id, id, sizeof(id));
	out->id_len = sizeof(id);
	if ((r = describe_new(ch, s, pub, rsa, out)) != 0)
		goto fail;
	return 0;
fail:
	/* A pair we cannot describe is not left behind. */
	(void)f->C_DestroyObject(s, priv);
	(void)f->C_DestroyObject(s, pub);
	msg_p11_object_clear(out);
	fail->code = r;
	snprintf(fail->message, sizeof(fail->message),
		 "the new key's public numbers are unreadable");
	return r;
}

int
p11_import_cert(struct p11_channel *ch, const struct msg_p11_import_req *req, struct p11_fail *fail)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_SLOT_ID slot = (CK_SLOT_ID)req->slot;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_ID, req->id, req->id_len },
		{ CKA_LABEL, req->label, strlen(req->label) },
		{ CKA_SUBJECT, req->subject, req->subject_len },
		{ CKA_VALUE, req->cert, req->cert_len },
	};
	CK_ATTRIBUTE find[] = { { CKA_CLASS, &cls, sizeof(cls) },
				{ CKA_ID, req->id, req->id_len } };
	CK_OBJECT_HANDLE obj, old[16];
	CK_ULONG n = 0, i;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	if ((r = need_login(ch, slot, "importing", fail)) != 0)
		return r;
	if ((r = p11_channel_session(ch, slot, &s, fail)) != 0)
		return r;
	/* The certificates it replaces, found before the new one exists. */
	if ((req->flags & P11_IMPORT_REPLACE) && f->C_FindObjectsInit(s, find, 2) == CKR_OK) {
		if (f->C_FindObjects(s, old, 16, &n) != CKR_OK)
			n = 0;
		(void)f->C_FindObjectsFinal(s);
	}
	rv = f->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &obj);
	if (write_protected(rv))
		return fail_read_only(fail, rv, "C_CreateObject");
	if (rv != CKR_OK)
		return p11_fail_rv(fail, rv, "C_CreateObject");
	for (i = 0; i < n; i++)
		if (old[i] != obj && (rv = f->C_DestroyObject(s, old[i])) != CKR_OK)
			return p11_fail_rv(fail, rv, "C_DestroyObject (the replaced certificate)");
	return 0;
}

int
p11_delete(struct p11_channel *ch, const struct msg_p11_delete_req *req, struct p11_fail *fail)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_SLOT_ID slot = (CK_SLOT_ID)req->slot;
	CK_ATTRIBUTE find = { CKA_ID, req->id, req->id_len };
	CK_OBJECT_HANDLE objs[16];
	CK_SESSION_HANDLE s;
	CK_ULONG n = 0, i;
	CK_RV rv;
	int r;

	if ((r = need_login(ch, slot, "deleting", fail)) != 0)
		return r;
	if ((r = p11_channel_session(ch, slot, &s, fail)) != 0)
		return r;
	if ((rv = f->C_FindObjectsInit(s, &find, 1)) != CKR_OK)
		return p11_fail_rv(fail, rv, "C_FindObjectsInit");
	rv = f->C_FindObjects(s, objs, 16, &n);
	(void)f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return p11_fail_rv(fail, rv, "C_FindObjects");
	for (i = 0; i < n; i++) {
		rv = f->C_DestroyObject(s, objs[i]);
		if (write_protected(rv))
			return fail_read_only(fail, rv, "C_DestroyObject");
		if (rv != CKR_OK)
			return p11_fail_rv(fail, rv, "C_DestroyObject");
	}
	return 0;
}
