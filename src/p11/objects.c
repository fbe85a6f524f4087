/*
 * objects.c - what is on the tokens: TOKENS (slots with a token and their
 * flags, read fresh with C_GetTokenInfo on every call, so the agent's
 * once-a-second poll sees PIN counters and removals) and OBJECTS (the
 * certificates and private keys of one slot, with what the agent needs
 * to match a key to a certificate: the public numbers).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11.h"

static char *
unpad(const unsigned char *p, size_t len)
{
	char *s;

	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\0'))
		len--;
	if ((s = malloc(len + 1)) == NULL)
		return NULL;
	memcpy(s, p, len);
	s[len] = '\0';
	/* A NUL inside would not survive the cstring codec. */
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\0')
			s[i] = '?';
	return s;
}

int
p11_tokens(struct p11_state *st, struct msg_p11_tokens_resp *out, struct p11_fail *fail)
{
	CK_FUNCTION_LIST_PTR f = st->mod.f;
	CK_SLOT_ID ids[P11_SLOTS_MAX];
	CK_ULONG n = P11_SLOTS_MAX, i;
	CK_TOKEN_INFO info;
	struct p11_token *t;
	CK_RV rv;
	int r = 0;

	memset(out, 0, sizeof(*out));
	if ((rv = f->C_GetSlotList(CK_TRUE, ids, &n)) != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
		return p11_fail_rv(fail, rv, "C_GetSlotList");
	if (n > P11_SLOTS_MAX)
		n = P11_SLOTS_MAX;
	if (n > 0 && (out->t = calloc(n, sizeof(*out->t))) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; i < n; i++) {
		/* A token pulled between the two calls is simply not listed. */
		if (f->C_GetTokenInfo(ids[i], &info) != CKR_OK)
			continue;
		t = &out->t[out->n++];
		t->slot = ids[i];
		t->flags = (uint32_t)info.flags;
		t->logged_in = (uint8_t)p11_slot_logged_in(st, ids[i]);
		if ((t->label = unpad(info.label, sizeof(info.label))) == NULL ||
		    (t->manufacturer = unpad(info.manufacturerID, sizeof(info.manufacturerID))) ==
			NULL ||
		    (t->model = unpad(info.model, sizeof(info.model))) == NULL ||
		    (t->serial = unpad(info.serialNumber, sizeof(info.serialNumber))) == NULL) {
			r = MTLS_ERR_ALLOC;
			break;
		}
	}
	if (r != 0)
		msg_p11_tokens_resp_clear(out);
	return r;
}

/* Reads one attribute into a fresh buffer (empty if the object has none). */
static int
get_attr(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
	 unsigned char **vp, size_t *lenp, size_t max)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_ATTRIBUTE a = { type, NULL, 0 };

	*vp = NULL;
	*lenp = 0;
	if (f->C_GetAttributeValue(s, o, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > max)
		return 0;
	if ((a.pValue = malloc(a.ulValueLen + 1)) == NULL)
		return MTLS_ERR_ALLOC;
	if (f->C_GetAttributeValue(s, o, &a, 1) != CKR_OK) {
		free(a.pValue);
		return 0;
	}
	*vp = a.pValue;
	*lenp = a.ulValueLen;
	return 0;
}

static int
get_label(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, char **label)
{
	unsigned char *v;
	size_t len;
	int r;

	*label = NULL;
	if ((r = get_attr(ch, s, o, CKA_LABEL, &v, &len, MTLS_NAME_MAX)) != 0)
		return r;
	*label = unpad(v != NULL ? v : (const unsigned char *)"", len);
	free(v);
	return *label == NULL ? MTLS_ERR_ALLOC : 0;
}

/* The CKA_EC_POINT of the public key object with this CKA_ID, if any. */
static int
ec_point_of(struct p11_channel *ch, CK_SESSION_HANDLE s, const struct p11_object *key)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) },
				{ CKA_ID, key->id, key->id_len } };
	CK_OBJECT_HANDLE o;
	CK_ULONG n = 0;
	struct p11_object *k = (struct p11_object *)key;
	int r = 0;

	if (f->C_FindObjectsInit(s, tmpl, 2) != CKR_OK)
		return 0;
	if (f->C_FindObjects(s, &o, 1, &n) == CKR_OK && n == 1)
		r = get_attr(ch, s, o, CKA_EC_POINT, &k->b, &k->b_len, P11_ATTR_MAX);
	(void)f->C_FindObjectsFinal(s);
	return r;
}

static int
describe(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls,
	 struct p11_object *o)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_KEY_TYPE kt = 0;
	CK_ATTRIBUTE a = { CKA_KEY_TYPE, &kt, sizeof(kt) };
	int r;

	o->handle = h;
	if ((r = get_attr(ch, s, h, CKA_ID, &o->id, &o->id_len, P11_ATTR_MAX)) != 0 ||
	    (r = get_label(ch, s, h, &o->label)) != 0)
		return r;
	if (cls == CKO_CERTIFICATE) {
		o->kind = P11_OBJ_CERT;
		return get_attr(ch, s, h, CKA_VALUE, &o->a, &o->a_len, MTLS_CERT_MAX);
	}
	if (f->C_GetAttributeValue(s, h, &a, 1) != CKR_OK)
		return 1;
	if (kt == CKK_RSA) {
		o->kind = P11_OBJ_RSA;
		if ((r = get_attr(ch, s, h, CKA_MODULUS, &o->a, &o->a_len, P11_ATTR_MAX)) != 0)
			return r;
		return get_attr(ch, s, h, CKA_PUBLIC_EXPONENT, &o->b, &o->b_len, P11_ATTR_MAX);
	}
	if (kt == CKK_EC) {
		o->kind = P11_OBJ_EC;
		if ((r = get_attr(ch, s, h, CKA_EC_PARAMS, &o->a, &o->a_len, P11_ATTR_MAX)) != 0)
			return r;
		return ec_point_of(ch, s, o);
	}
	return 1; /* a key type we do not sign with: left out */
}

static void
object_clear(struct p11_object *o)
{
	free(o->id);
	free(o->label);
	free(o->a);
	free(o->b);
	memset(o, 0, sizeof(*o));
}

/* Finds the objects of one class, appending to out. */
static int
find_class(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
	   struct msg_p11_objects_resp *out)
{
	CK_FUNCTION_LIST_PTR f = ch->st->mod.f;
	CK_ATTRIBUTE tmpl = { CKA_CLASS, &cls, sizeof(cls) };
	CK_OBJECT_HANDLE hs[P11_OBJECTS_MAX];
	CK_ULONG n = 0, i;
	struct p11_fail fail;
	CK_RV rv;
	int r = 0;

	if ((rv = f->C_FindObjectsInit(s, &tmpl, 1)) != CKR_OK)
		return p11_fail_rv(&fail, rv, "C_FindObjectsInit");
	rv = f->C_FindObjects(s, hs, P11_OBJECTS_MAX - out->n, &n);
	(void)f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return p11_fail_rv(&fail, rv, "C_FindObjects");
	for (i = 0; i < n && r == 0; i++) {
		struct p11_object *o = &out->o[out->n];

		if ((r = describe(ch, s, hs[i], cls, o)) == 0)
			out->n++;
		else if (r > 0) {
			object_clear(o);
			r = 0;
		} else
			object_clear(o);
	}
	return r;
}

int
p11_objects(struct p11_channel *ch, CK_SLOT_ID slot, struct msg_p11_objects_resp *out,
	    struct p11_fail *fail)
{
	CK_SESSION_HANDLE s;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = p11_channel_session(ch, slot, &s, fail)) != 0)
		return r;
	if ((out->o = calloc(P11_OBJECTS_MAX, sizeof(*out->o))) == NULL)
		return MTLS_ERR_ALLOC;
	/* Private keys are listed only once logged in (CKA_PRIVATE). */
	if ((r = find_class(ch, s, CKO_CERTIFICATE, out)) != 0 ||
	    (r = find_class(ch, s, CKO_PRIVATE_KEY, out)) != 0) {
		p11_channel_drop(ch, slot);
		msg_p11_objects_resp_clear(out);
		fail->code = r;
		snprintf(fail->message, sizeof(fail->message), "slot %lu: finding objects failed",
			 (unsigned long)slot);
		return r;
	}
	return 0;
}

int
p11_get_attr(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
	     CK_ATTRIBUTE_TYPE type, unsigned char **vp, size_t *lenp, size_t max)
{
	return get_attr(ch, s, o, type, vp, lenp, max);
}
