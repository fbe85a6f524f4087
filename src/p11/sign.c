/*
 * sign.c - SIGN: C_SignInit + C_Sign on the channel's own session of the
 * slot.  The agent has decided and hashed; the data is a digest (ECDSA,
 * PSS) or a DigestInfo (PKCS#1 v1.5), its shape checked by the codec.
 * No lock of ours is held here: channels sign in parallel.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "p11.h"

static void
pss_params(uint8_t hash, CK_RSA_PKCS_PSS_PARAMS *p)
{
	switch (hash) {
	case P11_HASH_SHA384:
		p->hashAlg = CKM_SHA384;
		p->mgf = CKG_MGF1_SHA384;
		p->sLen = 48;
		break;
	case P11_HASH_SHA512:
		p->hashAlg = CKM_SHA512;
		p->mgf = CKG_MGF1_SHA512;
		p->sLen = 64;
		break;
	default:
		p->hashAlg = CKM_SHA256;
		p->mgf = CKG_MGF1_SHA256;
		p->sLen = 32;
		break;
	}
}

static CK_RV
sign_once(struct p11_channel *ch, CK_SESSION_HANDLE s, const struct msg_p11_sign_req *req,
	  unsigned char *sig, size_t *sig_len)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_ULONG len = *sig_len;
	CK_RV rv;

	switch (req->mech) {
	case P11_MECH_RSA_PKCS: mech.mechanism = CKM_RSA_PKCS; break;
	case P11_MECH_RSA_PSS:
		mech.mechanism = CKM_RSA_PKCS_PSS;
		pss_params(req->hash, &pss);
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
		break;
	default: mech.mechanism = CKM_ECDSA; break;
	}
	if ((rv = f->C_SignInit(s, &mech, (CK_OBJECT_HANDLE)req->key)) != CKR_OK)
		return rv;
	if ((rv = f->C_Sign(s, req->data, req->data_len, sig, &len)) != CKR_OK)
		return rv;
	*sig_len = len;
	return CKR_OK;
}

int
p11_sign(struct p11_channel *ch, const struct msg_p11_sign_req *req, unsigned char *sig,
	 size_t *sig_len, struct p11_fail *fail)
{
	CK_SLOT_ID slot = (CK_SLOT_ID)req->slot;
	CK_SESSION_HANDLE s;
	size_t cap = *sig_len;
	CK_RV rv;
	int r;

	if ((r = p11_channel_session(ch, slot, &s, fail)) != 0)
		return r;
	rv = sign_once(ch, s, req, sig, sig_len);
	if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) {
		/* The token went and came back: one new session, one more try. */
		p11_channel_drop(ch, slot);
		if ((r = p11_channel_session(ch, slot, &s, fail)) != 0)
			return r;
		*sig_len = cap;
		rv = sign_once(ch, s, req, sig, sig_len);
	}
	if (rv != CKR_OK) {
		if (rv != CKR_USER_NOT_LOGGED_IN && rv != CKR_KEY_HANDLE_INVALID)
			p11_channel_drop(ch, slot);
		return p11_fail_rv(fail, rv, "C_Sign");
	}
	return 0;
}
