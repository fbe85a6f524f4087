/*
 * test_pkcs11_module.c - mtls-agent-pkcs11.so driven through its function
 * list, against the real agent on the SoftHSM2 token.
 *
 * The module is dlopen'ed from the build tree ($MTLS_PKCS11_MODULE) and
 * finds the agent through $MTLS_AGENT_SOCK, as any application would.
 * Signatures are verified with OpenSSL against the identity's certificate,
 * and each one (and each refusal) is looked up in the agent's audit log, so
 * nothing passes that the agent did not sign or refuse itself.
 */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

#include "agent_fixture.h"
#include "mtls-agent.h"

static struct agent_fixture fx;
static struct agent_proc ag; /* the agent of the current test */
static void *dl;
static CK_FUNCTION_LIST_PTR F;
static char registration[PATH_MAX]; /* a p11-kit .module file of test 9, "" if none */

/* Identities of the main agent (keys 01 = rsa2048, 03 = p256). */
static const char identities[] = "[identity p256-p11]\n"
				 "key = pkcs11:token=mtls-test;id=%%03;type=private\n"
				 "certificate = %s/p256.pem\n"
				 "purposes = tls13, tls12, pkcs11-digest\n"
				 "peers = uid:%u\n"
				 "[identity rsa-p11]\n"
				 "key = pkcs11:token=mtls-test;id=%%01;type=private\n"
				 "certificate = %s/rsa2048.pem\n"
				 "purposes = tls13, tls12, pkcs11-digest\n"
				 "peers = uid:%u\n"
				 "[identity p256-tls13]\n"
				 "key = pkcs11:token=mtls-test;id=%%03;type=private\n"
				 "certificate = %s/p256.pem\n"
				 "[identity p256-nopeers]\n"
				 "key = pkcs11:token=mtls-test;id=%%03;type=private\n"
				 "certificate = %s/p256.pem\n"
				 "purposes = tls13, pkcs11-digest\n"
				 "[identity p256-otherpeer]\n"
				 "key = pkcs11:token=mtls-test;id=%%03;type=private\n"
				 "certificate = %s/p256.pem\n"
				 "purposes = tls13, pkcs11-digest\n"
				 "peers = uid:%u\n";

#define assert_rv(call, want)                                                                      \
	do {                                                                                       \
		CK_RV rv_ = (call);                                                                \
		if (rv_ != (CK_RV)(want))                                                          \
			fail_msg("%s: got 0x%lx, want 0x%lx (%s)", #call, (unsigned long)rv_,      \
				 (unsigned long)(want), #want);                                    \
	} while (0)

static int
group_setup(void **state)
{
	const char *path = getenv("MTLS_PKCS11_MODULE");
	CK_C_GetFunctionList gfl;

	if (path == NULL || (dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "cannot load $MTLS_PKCS11_MODULE (%s): %s\n", path ? path : "unset",
			dlerror());
		return -1;
	}
	if ((gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) == NULL ||
	    gfl(&F) != CKR_OK)
		return -1;
	return fixture_setup(&fx) == 0 ? 0 : -1;
}

static int
group_teardown(void **state)
{
	fixture_teardown(&fx);
	return 0;
}

static int
teardown(void **state)
{
	(void)F->C_Finalize(NULL);
	fixture_kill_all(&fx);
	/* A failed check jumps out of the test: the system-wide file goes here. */
	if (registration[0] != '\0') {
		(void)unlink(registration);
		registration[0] = '\0';
	}
	memset(&ag, 0, sizeof(ag));
	return 0;
}

static void
start(const char *config, int login)
{
	int retries;
	mtls_agent *a;

	if (agent_start(&fx, config, NULL, &ag) != 0) {
		char *log = agent_log(&ag);
		fail_msg("agent did not start:\n%s", log);
	}
	setenv("MTLS_AGENT_SOCK", ag.sock, 1);
	if (login) {
		assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
		assert_int_equal(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
		mtls_agent_free(a);
	}
}

static void
start_main(int login)
{
	static char conf[8192];
	unsigned int me = (unsigned int)getuid();

	snprintf(conf, sizeof(conf), identities, fx.dir, me, fx.dir, me, fx.dir, fx.dir, fx.dir,
		 me + 1);
	start(conf, login);
}

/* The slot whose token label is `name`; fails the test if there is none. */
static CK_SLOT_ID
slot_of(const char *name)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	char label[33];
	size_t len;

	assert_rv(F->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
	for (i = 0; i < n; i++) {
		assert_rv(F->C_GetTokenInfo(slots[i], &ti), CKR_OK);
		memcpy(label, ti.label, 32);
		len = 32;
		while (len > 0 && label[len - 1] == ' ')
			len--;
		label[len] = '\0';
		if (strcmp(label, name) == 0)
			return slots[i];
	}
	fail_msg("no token labelled %s", name);
	return 0;
}

static CK_SESSION_HANDLE
open_session(const char *name)
{
	CK_SESSION_HANDLE h;

	assert_rv(F->C_OpenSession(slot_of(name), CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
	return h;
}

/* The one object of `class` in the session, or CK_INVALID_HANDLE. */
static CK_OBJECT_HANDLE
find(CK_SESSION_HANDLE h, CK_OBJECT_CLASS class)
{
	CK_ATTRIBUTE t = { CKA_CLASS, &class, sizeof(class) };
	CK_OBJECT_HANDLE o[4];
	CK_ULONG n = 0;

	assert_rv(F->C_FindObjectsInit(h, &t, 1), CKR_OK);
	assert_rv(F->C_FindObjects(h, o, 4, &n), CKR_OK);
	assert_rv(F->C_FindObjectsFinal(h), CKR_OK);
	assert_true(n <= 1);
	return n == 1 ? o[0] : CK_INVALID_HANDLE;
}

static EVP_PKEY *
cert_key(const char *file)
{
	char path[PATH_MAX];
	EVP_PKEY *k;
	X509 *x;
	FILE *f;

	assert_int_equal(fixture_path(&fx, file, path, sizeof(path)), 0);
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
	fclose(f);
	assert_non_null(k = X509_get_pubkey(x));
	X509_free(x);
	return k;
}

/* 64 spaces, the client context and a 32-byte "transcript hash". */
static size_t
tls13_content(unsigned char *c)
{
	static const char ctx[] = "TLS 1.3, client CertificateVerify";

	memset(c, 0x20, 64);
	memcpy(c + 64, ctx, sizeof(ctx));
	memset(c + 64 + sizeof(ctx), 0xab, 32);
	return 64 + sizeof(ctx) + 32;
}

/* r || s -> DER, for OpenSSL's verify. */
static size_t
ecdsa_der(const unsigned char *raw, size_t len, unsigned char *der)
{
	ECDSA_SIG *s = ECDSA_SIG_new();
	unsigned char *p = der;
	int n;

	assert_non_null(s);
	assert_int_equal(ECDSA_SIG_set0(s, BN_bin2bn(raw, (int)len / 2, NULL),
					BN_bin2bn(raw + len / 2, (int)len / 2, NULL)),
			 1);
	n = i2d_ECDSA_SIG(s, &p);
	ECDSA_SIG_free(s);
	assert_true(n > 0);
	return (size_t)n;
}

/* Signs `data` in one C_Sign after the size query. */
static CK_RV
sign(CK_SESSION_HANDLE h, CK_MECHANISM *m, const unsigned char *data, size_t len,
     unsigned char *sig, CK_ULONG *sig_len)
{
	CK_OBJECT_HANDLE key = find(h, CKO_PRIVATE_KEY);
	CK_RV rv;

	assert_int_not_equal(key, CK_INVALID_HANDLE);
	if ((rv = F->C_SignInit(h, m, key)) != CKR_OK)
		return rv;
	if ((rv = F->C_Sign(h, (CK_BYTE_PTR)data, len, NULL, sig_len)) != CKR_OK)
		return rv;
	return F->C_Sign(h, (CK_BYTE_PTR)data, len, sig, sig_len);
}

static int
audited(const char *a, const char *b)
{
	char *log = agent_log(&ag), *line;
	int found = 0;

	for (line = strtok(log, "\n"); line != NULL && !found; line = strtok(NULL, "\n"))
		found = strstr(line, "audit: ") != NULL && strstr(line, a) != NULL &&
			(b == NULL || strstr(line, b) != NULL);
	free(log);
	return found;
}

/* ---------------------------------------------------------------------- */
/* 1. every argument checked */

static void
test_arguments(void **state)
{
	CK_C_INITIALIZE_ARGS ia;
	CK_SLOT_ID slots[64], one;
	CK_ULONG n, zero = 0;
	CK_INFO info;
	CK_SESSION_HANDLE h, h2;
	CK_OBJECT_HANDLE cert, key, o[4];
	CK_MECHANISM_TYPE mechs[32];
	CK_MECHANISM_INFO mi;
	unsigned char buf[4096], c[200];
	CK_ULONG sig_len;
	CK_BBOOL b;
	CK_ATTRIBUTE a[2];
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 20 };
	CK_MECHANISM ecdsa = { CKM_ECDSA, NULL, 0 }, rsa = { CKM_RSA_PKCS, NULL, 0 },
		     bad_pss = { CKM_RSA_PKCS_PSS, &pss, sizeof(pss) },
		     ecdsa_sha384 = { CKM_ECDSA_SHA384, NULL, 0 };
	CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");

	start_main(1);
	assert_rv(gfl(NULL), CKR_ARGUMENTS_BAD);
	/* Nothing before C_Initialize. */
	assert_rv(F->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	assert_rv(F->C_GetSlotList(CK_TRUE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
	assert_rv(F->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	/* Initialisation arguments. */
	memset(&ia, 0, sizeof(ia));
	ia.pReserved = &ia;
	assert_rv(F->C_Initialize(&ia), CKR_ARGUMENTS_BAD);
	memset(&ia, 0, sizeof(ia));
	ia.CreateMutex = (CK_CREATEMUTEX)1;
	assert_rv(F->C_Initialize(&ia), CKR_ARGUMENTS_BAD);
	ia.DestroyMutex = (CK_DESTROYMUTEX)1;
	ia.LockMutex = (CK_LOCKMUTEX)1;
	ia.UnlockMutex = (CK_UNLOCKMUTEX)1;
	assert_rv(F->C_Initialize(&ia), CKR_CANT_LOCK);
	ia.flags = CKF_OS_LOCKING_OK;
	assert_rv(F->C_Initialize(&ia), CKR_OK);
	assert_rv(F->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_rv(F->C_Finalize(&ia), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_GetInfo(&info), CKR_OK);
	assert_int_equal(info.cryptokiVersion.major, 2);
	assert_int_equal(info.cryptokiVersion.minor, 40);
	assert_memory_equal(info.manufacturerID, "mtls-agent ", 11);

	/* Slot list: the two-call convention. */
	assert_rv(F->C_GetSlotList(CK_TRUE, NULL, NULL), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
	assert_int_equal(n, 5);
	assert_rv(F->C_GetSlotList(CK_TRUE, slots, &zero), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(zero, 5);
	one = 1;
	assert_rv(F->C_GetSlotList(CK_TRUE, slots, &one), CKR_BUFFER_TOO_SMALL);
	n = 64;
	assert_rv(F->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
	assert_int_equal(n, 5);
	assert_rv(F->C_GetSlotInfo(999, (CK_SLOT_INFO_PTR)buf), CKR_SLOT_ID_INVALID);
	assert_rv(F->C_GetSlotInfo(slots[0], NULL), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_GetTokenInfo(999, (CK_TOKEN_INFO_PTR)buf), CKR_SLOT_ID_INVALID);
	assert_rv(F->C_GetTokenInfo(slots[0], NULL), CKR_ARGUMENTS_BAD);

	/* Mechanisms of the P-256 identity: no RSA, no SHA-384 ECDSA. */
	n = 32;
	assert_rv(F->C_GetMechanismList(slot_of("p256-p11"), mechs, &n), CKR_OK);
	assert_int_equal(n, 2);
	one = 1;
	assert_rv(F->C_GetMechanismList(slot_of("p256-p11"), mechs, &one), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(one, 2);
	assert_rv(F->C_GetMechanismList(slot_of("p256-p11"), mechs, NULL), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_GetMechanismInfo(slot_of("p256-p11"), CKM_ECDSA, &mi), CKR_OK);
	assert_true(mi.flags & CKF_SIGN);
	assert_int_equal(mi.ulMinKeySize, 256);
	assert_rv(F->C_GetMechanismInfo(slot_of("p256-p11"), CKM_RSA_PKCS, &mi),
		  CKR_MECHANISM_INVALID);
	assert_rv(F->C_GetMechanismInfo(slot_of("p256-p11"), CKM_ECDSA, NULL), CKR_ARGUMENTS_BAD);

	/* Sessions. */
	assert_rv(F->C_OpenSession(slot_of("p256-p11"), 0, NULL, NULL, &h),
		  CKR_SESSION_PARALLEL_NOT_SUPPORTED);
	assert_rv(F->C_OpenSession(slot_of("p256-p11"), CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
				   NULL, &h),
		  CKR_TOKEN_WRITE_PROTECTED);
	assert_rv(F->C_OpenSession(999, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_SLOT_ID_INVALID);
	assert_rv(F->C_OpenSession(slot_of("p256-p11"), CKF_SERIAL_SESSION, NULL, NULL, NULL),
		  CKR_ARGUMENTS_BAD);
	h = open_session("p256-p11");
	assert_rv(F->C_GetSessionInfo(h + 1000, (CK_SESSION_INFO_PTR)buf),
		  CKR_SESSION_HANDLE_INVALID);
	assert_rv(F->C_GetSessionInfo(h, NULL), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_CloseSession(h + 1000), CKR_SESSION_HANDLE_INVALID);
	assert_rv(F->C_CloseSession(CK_INVALID_HANDLE), CKR_SESSION_HANDLE_INVALID);

	/* Finding objects. */
	a[0].type = CKA_CLASS;
	a[0].pValue = NULL;
	a[0].ulValueLen = 8;
	assert_rv(F->C_FindObjectsInit(h, a, 1), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_FindObjectsInit(h, NULL, 1), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_FindObjects(h, o, 4, &n), CKR_OPERATION_NOT_INITIALIZED);
	assert_rv(F->C_FindObjectsFinal(h), CKR_OPERATION_NOT_INITIALIZED);
	assert_rv(F->C_FindObjectsInit(h, NULL, 0), CKR_OK);
	assert_rv(F->C_FindObjectsInit(h, NULL, 0), CKR_OPERATION_ACTIVE);
	assert_rv(F->C_FindObjects(h, NULL, 4, &n), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_FindObjects(h, o, 4, NULL), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_FindObjects(h, o, 4, &n), CKR_OK);
	assert_int_equal(n, 3); /* certificate, public key, private key */
	assert_rv(F->C_FindObjects(h, o, 4, &n), CKR_OK);
	assert_int_equal(n, 0);
	assert_rv(F->C_FindObjectsFinal(h), CKR_OK);
	cert = find(h, CKO_CERTIFICATE);
	key = find(h, CKO_PRIVATE_KEY);
	assert_int_not_equal(cert, CK_INVALID_HANDLE);
	assert_int_not_equal(key, CK_INVALID_HANDLE);

	/* Attributes: sizes, short buffers, unknown and sensitive ones. */
	a[0].type = CKA_VALUE;
	a[0].pValue = NULL;
	a[0].ulValueLen = 0;
	assert_rv(F->C_GetAttributeValue(h, cert, a, 1), CKR_OK);
	assert_true(a[0].ulValueLen > 100 && a[0].ulValueLen < sizeof(buf));
	n = a[0].ulValueLen;
	a[0].pValue = buf;
	a[0].ulValueLen = n - 1;
	assert_rv(F->C_GetAttributeValue(h, cert, a, 1), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
	a[0].ulValueLen = n;
	assert_rv(F->C_GetAttributeValue(h, cert, a, 1), CKR_OK);
	assert_int_equal(a[0].ulValueLen, n);
	assert_int_equal(buf[0], 0x30);
	a[0].type = CKA_VALUE; /* the private value of the key */
	a[0].ulValueLen = sizeof(buf);
	a[1].type = CKA_SENSITIVE;
	a[1].pValue = &b;
	a[1].ulValueLen = sizeof(b);
	assert_rv(F->C_GetAttributeValue(h, key, a, 2), CKR_ATTRIBUTE_SENSITIVE);
	assert_int_equal(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
	assert_int_equal(b, CK_TRUE); /* the others are still filled in */
	a[0].type = CKA_EXTRACTABLE;
	a[0].pValue = &b;
	a[0].ulValueLen = sizeof(b);
	assert_rv(F->C_GetAttributeValue(h, key, a, 1), CKR_OK);
	assert_int_equal(b, CK_FALSE);
	a[0].type = CKA_SIGN;
	assert_rv(F->C_GetAttributeValue(h, key, a, 1), CKR_OK);
	assert_int_equal(b, CK_TRUE);
	a[0].type = CKA_MODULUS; /* an EC key has none */
	a[0].pValue = buf;
	a[0].ulValueLen = sizeof(buf);
	assert_rv(F->C_GetAttributeValue(h, key, a, 1), CKR_ATTRIBUTE_TYPE_INVALID);
	assert_int_equal(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
	assert_rv(F->C_GetAttributeValue(h, key, NULL, 1), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_GetAttributeValue(h, 12345, a, 1), CKR_OBJECT_HANDLE_INVALID);

	/* Signing: wrong key object, mechanism, parameters, sequence. */
	assert_rv(F->C_SignInit(h, &ecdsa, cert), CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_rv(F->C_SignInit(h, &ecdsa, 12345), CKR_KEY_HANDLE_INVALID);
	assert_rv(F->C_SignInit(h, &rsa, key), CKR_MECHANISM_INVALID);
	assert_rv(F->C_SignInit(h, &ecdsa_sha384, key), CKR_MECHANISM_INVALID);
	assert_rv(F->C_SignInit(h, NULL, key), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_Sign(h, c, 32, buf, &sig_len), CKR_OPERATION_NOT_INITIALIZED);
	assert_rv(F->C_SignFinal(h, buf, &sig_len), CKR_OPERATION_NOT_INITIALIZED);
	assert_rv(F->C_SignInit(h, &ecdsa, key), CKR_OK);
	assert_rv(F->C_SignInit(h, &ecdsa, key), CKR_OPERATION_ACTIVE);
	memset(c, 7, 32);
	assert_rv(F->C_Sign(h, c, 32, NULL, &sig_len), CKR_OK);
	assert_int_equal(sig_len, 64);
	sig_len = 63;
	assert_rv(F->C_Sign(h, c, 32, buf, &sig_len), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(sig_len, 64);
	assert_rv(F->C_Sign(h, c, 32, buf, &sig_len), CKR_OK); /* still active */
	assert_rv(F->C_Sign(h, c, 32, buf, &sig_len), CKR_OPERATION_NOT_INITIALIZED);
	assert_rv(F->C_SignInit(h, &ecdsa, key), CKR_OK);
	assert_rv(F->C_Sign(h, c, 31, buf, &sig_len), CKR_DATA_LEN_RANGE);
	assert_rv(F->C_SignInit(h, &ecdsa, key), CKR_OK);
	assert_rv(F->C_Sign(h, NULL, 32, buf, &sig_len), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_SignInit(h, &ecdsa, key), CKR_OK);
	assert_rv(F->C_Sign(h, c, 32, buf, NULL), CKR_ARGUMENTS_BAD);
	h2 = open_session("rsa-p11");
	assert_rv(F->C_SignInit(h2, &bad_pss, find(h2, CKO_PRIVATE_KEY)),
		  CKR_MECHANISM_PARAM_INVALID); /* salt 20 is not the hash's 32 */
	bad_pss.pParameter = NULL;
	assert_rv(F->C_SignInit(h2, &bad_pss, find(h2, CKO_PRIVATE_KEY)),
		  CKR_MECHANISM_PARAM_INVALID);
	/* A key handle of another session's token is not this session's. */
	assert_rv(F->C_SignInit(h2, &rsa, key), CKR_KEY_HANDLE_INVALID);

	/* Unsupported functions say so. */
	assert_rv(F->C_GenerateRandom(h, buf, 16), CKR_FUNCTION_NOT_SUPPORTED);
	assert_rv(F->C_DestroyObject(h, key), CKR_FUNCTION_NOT_SUPPORTED);
	assert_rv(F->C_InitToken(slots[0], NULL, 0, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	assert_rv(F->C_CloseAllSessions(999), CKR_SLOT_ID_INVALID);
	assert_rv(F->C_CloseAllSessions(slot_of("p256-p11")), CKR_OK);
	assert_rv(F->C_CloseSession(h), CKR_SESSION_HANDLE_INVALID);
	assert_rv(F->C_CloseSession(h2), CKR_OK);
	assert_rv(F->C_Finalize(NULL), CKR_OK);
	assert_rv(F->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
}

/* ---------------------------------------------------------------------- */
/* 2. signatures verify, with the purpose their form says */

static void
verify_digest(EVP_PKEY *k, const EVP_MD *md, int pad, const unsigned char *dg, size_t dg_len,
	      const unsigned char *sig, size_t sig_len)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);

	assert_non_null(c);
	assert_int_equal(EVP_PKEY_verify_init(c), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, md), 1);
	if (pad != 0) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, pad), 1);
		if (pad == RSA_PKCS1_PSS_PADDING)
			assert_int_equal(
			    EVP_PKEY_CTX_set_rsa_pss_saltlen(c, RSA_PSS_SALTLEN_DIGEST), 1);
	}
	assert_int_equal(EVP_PKEY_verify(c, sig, sig_len, dg, dg_len), 1);
	EVP_PKEY_CTX_free(c);
}

static void
verify_data(EVP_PKEY *k, const EVP_MD *md, int pss, const unsigned char *d, size_t len,
	    const unsigned char *sig, size_t sig_len)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pc = NULL;

	assert_non_null(m);
	assert_int_equal(EVP_DigestVerifyInit(m, &pc, md, NULL, k), 1);
	if (pss) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST), 1);
	}
	assert_int_equal(EVP_DigestVerify(m, sig, sig_len, d, len), 1);
	EVP_MD_CTX_free(m);
}

static void
test_sign_verify(void **state)
{
	static const unsigned char di256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
					       0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					       0x01, 0x05, 0x00, 0x04, 0x20 };
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM m_ecdsa = { CKM_ECDSA, NULL, 0 }, m_ecdsa256 = { CKM_ECDSA_SHA256, NULL, 0 },
		     m_rsa = { CKM_RSA_PKCS, NULL, 0 },
		     m_pss = { CKM_RSA_PKCS_PSS, &pss, sizeof(pss) },
		     m_sha_pss = { CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss) },
		     m_sha_rsa = { CKM_SHA256_RSA_PKCS, NULL, 0 };
	unsigned char content[200], dg[32], di[51], sig[512], der[80], junk[100];
	CK_SESSION_HANDLE ec, rsa;
	EVP_PKEY *k_ec, *k_rsa;
	CK_ULONG sl, part;
	size_t clen = tls13_content(content);

	start_main(1);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	k_ec = cert_key("p256.pem");
	k_rsa = cert_key("rsa2048.pem");
	ec = open_session("p256-p11");
	rsa = open_session("rsa-p11");
	SHA256(content, clen, dg);

	/* CKM_ECDSA over a digest: purpose pkcs11-digest, audited with it. */
	sl = sizeof(sig);
	assert_rv(sign(ec, &m_ecdsa, dg, 32, sig, &sl), CKR_OK);
	assert_int_equal(sl, 64);
	verify_digest(k_ec, EVP_sha256(), 0, dg, 32, der, ecdsa_der(sig, sl, der));
	assert_true(audited("sign ok", "purpose=pkcs11-digest mechanism=CKM_ECDSA"));

	/* CKM_ECDSA_SHA256 over a TLS 1.3 content, in two parts: tls13. */
	assert_rv(F->C_SignInit(ec, &m_ecdsa256, find(ec, CKO_PRIVATE_KEY)), CKR_OK);
	assert_rv(F->C_SignUpdate(ec, content, 10), CKR_OK);
	assert_rv(F->C_SignUpdate(ec, content + 10, clen - 10), CKR_OK);
	part = 10;
	assert_rv(F->C_SignFinal(ec, sig, &part), CKR_BUFFER_TOO_SMALL);
	sl = sizeof(sig);
	assert_rv(F->C_SignFinal(ec, sig, &sl), CKR_OK);
	verify_data(k_ec, EVP_sha256(), 0, content, clen, der, ecdsa_der(sig, sl, der));
	assert_true(audited("sign ok", "identity=p256-p11 scheme=ecdsa_secp256r1_sha256 "
				       "purpose=tls13-client-certificate-verify"));
	/* C_Sign after C_SignUpdate mixes the two ways: refused. */
	assert_rv(F->C_SignInit(ec, &m_ecdsa256, find(ec, CKO_PRIVATE_KEY)), CKR_OK);
	assert_rv(F->C_SignUpdate(ec, content, 10), CKR_OK);
	assert_rv(F->C_Sign(ec, content, clen, sig, &sl), CKR_OPERATION_ACTIVE);

	/* Hash-and-sign over data that is neither TLS 1.3 nor 1.2: the
	 * agent's purpose binding refuses it. */
	memset(junk, 'x', sizeof(junk));
	sl = sizeof(sig);
	assert_rv(sign(ec, &m_ecdsa256, junk, sizeof(junk), sig, &sl), CKR_DATA_INVALID);
	assert_true(audited("sign refused", "purpose=tls12-client-certificate-verify"));

	/* RSA: PKCS#1 v1.5 over a DigestInfo, PSS over a digest, PSS over data. */
	memcpy(di, di256, 19);
	memcpy(di + 19, dg, 32);
	sl = sizeof(sig);
	assert_rv(sign(rsa, &m_rsa, di, sizeof(di), sig, &sl), CKR_OK);
	assert_int_equal(sl, 256);
	verify_digest(k_rsa, EVP_sha256(), RSA_PKCS1_PADDING, dg, 32, sig, sl);
	assert_true(audited("sign ok", "scheme=rsa_pkcs1_sha256 purpose=pkcs11-digest "
				       "mechanism=CKM_RSA_PKCS"));
	sl = sizeof(sig);
	assert_rv(sign(rsa, &m_rsa, dg, 32, sig, &sl), CKR_DATA_INVALID); /* no DigestInfo */
	sl = sizeof(sig);
	assert_rv(sign(rsa, &m_pss, dg, 32, sig, &sl), CKR_OK);
	verify_digest(k_rsa, EVP_sha256(), RSA_PKCS1_PSS_PADDING, dg, 32, sig, sl);
	assert_true(audited("sign ok", "mechanism=CKM_RSA_PKCS_PSS"));
	sl = sizeof(sig);
	assert_rv(sign(rsa, &m_sha_pss, content, clen, sig, &sl), CKR_OK);
	verify_data(k_rsa, EVP_sha256(), 1, content, clen, sig, sl);
	assert_true(audited("sign ok", "identity=rsa-p11 scheme=rsa_pss_rsae_sha256 "
				       "purpose=tls13-client-certificate-verify"));
	/* TLS 1.3 forbids PKCS#1 v1.5: the agent says so, the module maps it. */
	sl = sizeof(sig);
	assert_rv(sign(rsa, &m_sha_rsa, content, clen, sig, &sl), CKR_MECHANISM_INVALID);
	EVP_PKEY_free(k_ec);
	EVP_PKEY_free(k_rsa);
}

/* ---------------------------------------------------------------------- */
/* 3. pkcs11-digest only where purposes and peers allow it */

static void
test_digest_refused(void **state)
{
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char dg[32] = { 1 }, sig[80];
	CK_ULONG sl = sizeof(sig);

	start_main(1);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	assert_rv(sign(open_session("p256-tls13"), &m, dg, 32, sig, &sl), CKR_FUNCTION_REJECTED);
	assert_true(audited("sign refused", "identity=p256-tls13"));
	assert_true(audited("identity=p256-tls13", "purpose pkcs11-digest not allowed"));
	assert_true(audited("identity=p256-tls13", "mechanism=CKM_ECDSA"));
	sl = sizeof(sig);
	assert_rv(sign(open_session("p256-nopeers"), &m, dg, 32, sig, &sl), CKR_FUNCTION_REJECTED);
	assert_true(audited("identity=p256-nopeers", "pkcs11-digest needs a peers list"));
	sl = sizeof(sig);
	assert_rv(sign(open_session("p256-otherpeer"), &m, dg, 32, sig, &sl),
		  CKR_FUNCTION_REJECTED);
	assert_true(audited("identity=p256-otherpeer", "may not use identity p256-otherpeer"));
}

/* ---------------------------------------------------------------------- */
/* 4. login states follow the agent */

static void
test_login_states(void **state)
{
	CK_TOKEN_INFO ti;
	CK_SESSION_INFO si;
	CK_SESSION_HANDLE h;
	CK_MECHANISM m = { CKM_ECDSA_SHA256, NULL, 0 };
	unsigned char c[200], sig[80];
	CK_ULONG sl = sizeof(sig);
	size_t clen = tls13_content(c);
	const char *wrong = "999999";

	start_main(0);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	assert_rv(F->C_GetTokenInfo(slot_of("p256-p11"), &ti), CKR_OK);
	assert_true(ti.flags & CKF_LOGIN_REQUIRED);
	assert_true(ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH);
	h = open_session("p256-p11");
	assert_rv(F->C_GetSessionInfo(h, &si), CKR_OK);
	assert_int_equal(si.state, CKS_RO_PUBLIC_SESSION);
	/* A private object is not visible before the login. */
	assert_int_equal(find(h, CKO_PRIVATE_KEY), CK_INVALID_HANDLE);
	assert_int_not_equal(find(h, CKO_CERTIFICATE), CK_INVALID_HANDLE);
	assert_rv(F->C_Logout(h), CKR_USER_NOT_LOGGED_IN);
	assert_rv(F->C_Login(h, CKU_SO, (CK_UTF8CHAR_PTR)fx.pin, strlen(fx.pin)),
		  CKR_USER_TYPE_INVALID);
	assert_rv(F->C_Login(h, CKU_USER, NULL, 4), CKR_ARGUMENTS_BAD);
	assert_rv(F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR) "", 0), CKR_PIN_LEN_RANGE);
	assert_rv(F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR) "12\0004", 4), CKR_PIN_INVALID);
	/* No PIN, and the agent has no askpass program to ask with: cancelled. */
	assert_rv(F->C_Login(h, CKU_USER, NULL, 0), CKR_FUNCTION_CANCELED);
	assert_true(audited("login refused", "prompt result=use of the key not confirmed") ||
		    audited("login refused", "no askpass program"));
	assert_rv(F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)wrong, strlen(wrong)),
		  CKR_PIN_INCORRECT);
	assert_true(agent_logged(&ag, "login refused"));
	assert_rv(F->C_GetTokenInfo(slot_of("p256-p11"), &ti), CKR_OK);
	assert_true(ti.flags & CKF_LOGIN_REQUIRED);
	/* The right PIN goes to the agent's LOGIN. */
	assert_rv(F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)fx.pin, strlen(fx.pin)), CKR_OK);
	assert_true(agent_logged(&ag, "login ok"));
	assert_rv(F->C_GetTokenInfo(slot_of("p256-p11"), &ti), CKR_OK);
	assert_false(ti.flags & CKF_LOGIN_REQUIRED);
	assert_false(ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH);
	assert_rv(F->C_GetSessionInfo(h, &si), CKR_OK);
	assert_int_equal(si.state, CKS_RO_USER_FUNCTIONS);
	assert_rv(F->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)fx.pin, strlen(fx.pin)),
		  CKR_USER_ALREADY_LOGGED_IN);
	assert_rv(sign(h, &m, c, clen, sig, &sl), CKR_OK);
	/* Logged out in the agent (by anyone): the key is gone from view. */
	assert_rv(F->C_Logout(h), CKR_OK);
	assert_rv(F->C_GetTokenInfo(slot_of("p256-p11"), &ti), CKR_OK);
	assert_true(ti.flags & CKF_LOGIN_REQUIRED);
	assert_int_equal(find(h, CKO_PRIVATE_KEY), CK_INVALID_HANDLE);
}

/* ---------------------------------------------------------------------- */
/* 4b. the protected authentication path: the agent asks for the PIN */

static void
test_login_prompt(void **state)
{
	char config[2 * PATH_MAX + 256], good[PATH_MAX], bad[PATH_MAX], wrong[PATH_MAX];
	char script[512];
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE h;

	assert_int_equal(fixture_path(&fx, "askpass-pin", good, sizeof(good)), 0);
	assert_int_equal(fixture_path(&fx, "askpass-no", bad, sizeof(bad)), 0);
	assert_int_equal(fixture_path(&fx, "askpass-wrong", wrong, sizeof(wrong)), 0);
	/* The prompt must name the identity and the program that asked. */
	snprintf(script, sizeof(script),
		 "#!/bin/sh\ncase \"$1\" in *'identity \"p256-p11\"'*test_pkcs11_module*) ;; "
		 "*) exit 3 ;; esac\n[ -z \"$SSH_ASKPASS_PROMPT\" ] || exit 4\necho '%s'\n",
		 fx.pin);
	assert_int_equal(fixture_write_file(good, script, 0755), 0);
	assert_int_equal(fixture_write_file(bad, "#!/bin/sh\nexit 1\n", 0755), 0);
	assert_int_equal(fixture_write_file(wrong, "#!/bin/sh\necho 000000\n", 0755), 0);

	/* The user cancels: no login, CKR_FUNCTION_CANCELED. */
	snprintf(config, sizeof(config),
		 "askpass = %s\n[identity p256-p11]\n"
		 "key = pkcs11:token=mtls-test;id=%%03;type=private\ncertificate = %s/p256.pem\n",
		 bad, fx.dir);
	start(config, 0);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	h = open_session("p256-p11");
	assert_rv(F->C_Login(h, CKU_USER, NULL, 0), CKR_FUNCTION_CANCELED);
	assert_true(audited("login refused", "prompt result=use of the key not confirmed"));
	assert_rv(F->C_Finalize(NULL), CKR_OK);
	fixture_kill_all(&fx);

	/* A wrong PIN from the person: CKR_PIN_INCORRECT, still logged out. */
	snprintf(config, sizeof(config),
		 "askpass = %s\n[identity p256-p11]\n"
		 "key = pkcs11:token=mtls-test;id=%%03;type=private\ncertificate = %s/p256.pem\n",
		 wrong, fx.dir);
	start(config, 0);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	h = open_session("p256-p11");
	assert_rv(F->C_Login(h, CKU_USER, NULL, 0), CKR_PIN_INCORRECT);
	assert_rv(F->C_GetTokenInfo(slot_of("p256-p11"), &ti), CKR_OK);
	assert_true(ti.flags & CKF_LOGIN_REQUIRED);
	assert_rv(F->C_Finalize(NULL), CKR_OK);
	fixture_kill_all(&fx);

	/* The right PIN: logged in, and this process never saw it. */
	snprintf(config, sizeof(config),
		 "askpass = %s\n[identity p256-p11]\n"
		 "key = pkcs11:token=mtls-test;id=%%03;type=private\ncertificate = %s/p256.pem\n",
		 good, fx.dir);
	start(config, 0);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	h = open_session("p256-p11");
	assert_rv(F->C_Login(h, CKU_USER, NULL, 0), CKR_OK);
	assert_true(audited("login ok", "identity=p256-p11 prompt"));
	assert_rv(F->C_GetTokenInfo(slot_of("p256-p11"), &ti), CKR_OK);
	assert_false(ti.flags & CKF_LOGIN_REQUIRED);
	assert_int_not_equal(find(h, CKO_PRIVATE_KEY), CK_INVALID_HANDLE);
}

/* ---------------------------------------------------------------------- */
/* 5. fork: a child signs with the parent's sessions, and re-initialises */

static int
child_sign(CK_SESSION_HANDLE h)
{
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	CK_OBJECT_CLASS class = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t = { CKA_CLASS, &class, sizeof(class) };
	CK_OBJECT_HANDLE key;
	unsigned char dg[32] = { 9 }, sig[80];
	CK_ULONG n = 0, sl = sizeof(sig);

	if (F->C_FindObjectsInit(h, &t, 1) != CKR_OK ||
	    F->C_FindObjects(h, &key, 1, &n) != CKR_OK || F->C_FindObjectsFinal(h) != CKR_OK ||
	    n != 1 || F->C_SignInit(h, &m, key) != CKR_OK ||
	    F->C_Sign(h, dg, 32, sig, &sl) != CKR_OK || sl != 64)
		return 1;
	return 0;
}

static void
test_fork(void **state)
{
	CK_SESSION_HANDLE h;
	CK_SLOT_ID slot;
	pid_t pid;
	int st, before;
	char *log;

	start_main(1);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	h = open_session("p256-p11");
	slot = slot_of("p256-p11");
	assert_int_equal(child_sign(h), 0);
	fflush(NULL);
	/* Child 1 goes on with the parent's session, as prefork servers do. */
	assert_true((pid = fork()) >= 0);
	if (pid == 0)
		_exit(child_sign(h));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Child 2 calls C_Initialize as PKCS#11 says a child must. */
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		CK_SESSION_HANDLE h2;

		if (F->C_Initialize(NULL) != CKR_OK ||
		    F->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h2) != CKR_OK)
			_exit(2);
		_exit(child_sign(h2));
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The parent's connection is still its own. */
	assert_int_equal(child_sign(h), 0);
	/* Four signatures, from three processes. */
	log = agent_log(&ag);
	before = 0;
	for (char *p = log; (p = strstr(p, "sign ok")) != NULL; p++)
		before++;
	free(log);
	assert_int_equal(before, 4);
}

/* ---------------------------------------------------------------------- */
/* 5b. threads: one waiting for the agent does not hold up another */

struct signer {
	CK_SESSION_HANDLE h;
	CK_RV rv;
};

static void *
sign_thread(void *arg)
{
	struct signer *t = arg;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char dg[32] = { 5 }, sig[80];
	CK_ULONG sl = sizeof(sig);

	t->rv = F->C_SignInit(t->h, &m, find(t->h, CKO_PRIVATE_KEY));
	if (t->rv == CKR_OK)
		t->rv = F->C_Sign(t->h, dg, 32, sig, &sl);
	return NULL;
}

static void
test_threads(void **state)
{
	char config[2 * PATH_MAX + 512], askpass[PATH_MAX];
	struct signer t[2];
	pthread_t th[2];
	struct timespec t0, t1;
	double secs;
	int i;

	/* Every signature waits a second for the (scripted) person. */
	assert_int_equal(fixture_path(&fx, "askpass-slow", askpass, sizeof(askpass)), 0);
	assert_int_equal(fixture_write_file(askpass, "#!/bin/sh\nsleep 1\nexit 0\n", 0755), 0);
	snprintf(config, sizeof(config),
		 "askpass = %s\n[identity p256-confirm]\n"
		 "key = pkcs11:token=mtls-test;id=%%03;type=private\ncertificate = %s/p256.pem\n"
		 "purposes = tls13, pkcs11-digest\npeers = uid:%u\nconfirm = yes\n",
		 askpass, fx.dir, (unsigned)getuid());
	start(config, 1);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	for (i = 0; i < 2; i++)
		t[i].h = open_session("p256-confirm");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, sign_thread, &t[i]), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	for (i = 0; i < 2; i++)
		assert_rv(t[i].rv, CKR_OK);
	/* Two seconds or more: the second thread waited for the first. */
	if (secs >= 1.9)
		fail_msg("two signatures of one second each took %.2f s: not in parallel", secs);
}

/* ---------------------------------------------------------------------- */
/* 6. the agent locked */

static void
test_agent_locked(void **state)
{
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char dg[32] = { 3 }, sig[80];
	CK_SESSION_HANDLE h;
	CK_ULONG sl = sizeof(sig);
	CK_OBJECT_HANDLE key;
	mtls_agent *a;

	start_main(1);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	h = open_session("p256-p11");
	key = find(h, CKO_PRIVATE_KEY);
	assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
	assert_int_equal(mtls_agent_lock(a, "lock-pass"), 0);
	/* No login of any kind while locked, the agent's own prompt included. */
	assert_int_equal(mtls_agent_login_prompt(a, "p256-p11", NULL), MTLS_ERR_AGENT_LOCKED);
	assert_rv(F->C_SignInit(h, &m, key), CKR_OK);
	assert_rv(F->C_Sign(h, dg, 32, sig, &sl), CKR_FUNCTION_REJECTED);
	assert_true(audited("sign refused", "agent locked") || audited("sign refused", "locked"));
	assert_int_equal(mtls_agent_unlock(a, "lock-pass"), 0);
	assert_rv(F->C_SignInit(h, &m, key), CKR_OK);
	assert_rv(F->C_Sign(h, dg, 32, sig, &sl), CKR_OK);
	mtls_agent_free(a);
}

/* ---------------------------------------------------------------------- */
/* 7. the token pulled (the shim plays the reader) */

static void
test_token_absent(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	char pulled[PATH_MAX], env_absent[PATH_MAX + 32];
	const char *env[] = { env_absent, NULL };
	struct agent_opts o = { 0 };
	CK_MECHANISM m = { CKM_ECDSA_SHA256, NULL, 0 };
	unsigned char c[200], sig[80];
	CK_SESSION_HANDLE h;
	CK_OBJECT_HANDLE key;
	CK_TOKEN_INFO ti;
	CK_SLOT_ID slot, slots[16];
	CK_ULONG sl = sizeof(sig), n = 16, n_all = 16;
	size_t clen = tls13_content(c);
	mtls_agent *a;
	int retries, i;
	FILE *f;

	assert_int_equal(fixture_path(&fx, "pulled", pulled, sizeof(pulled)), 0);
	(void)unlink(pulled);
	snprintf(env_absent, sizeof(env_absent), "MTLS_SHIM_ABSENT_FILE=%s", pulled);
	o.args = args;
	o.env = env;
	if (agent_start_opts(&fx, &o, &ag) != 0)
		fail_msg("agent did not start");
	setenv("MTLS_AGENT_SOCK", ag.sock, 1);
	assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
	assert_int_equal(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_rv(F->C_Initialize(NULL), CKR_OK);
	slot = slot_of("p256");
	h = open_session("p256");
	key = find(h, CKO_PRIVATE_KEY);
	assert_rv(sign(h, &m, c, clen, sig, &sl), CKR_OK);

	assert_non_null(f = fopen(pulled, "w"));
	fclose(f);
	assert_rv(F->C_SignInit(h, &m, key), CKR_OK);
	sl = sizeof(sig);
	assert_rv(F->C_Sign(h, c, clen, sig, &sl), CKR_DEVICE_REMOVED);
	assert_true(audited("sign refused", "identity=p256"));
	/* Once the agent has noticed, the token is absent from the slot list. */
	for (i = 0; i < 40; i++) {
		if (F->C_GetTokenInfo(slot, &ti) == CKR_TOKEN_NOT_PRESENT)
			break;
		usleep(100 * 1000);
	}
	assert_rv(F->C_GetTokenInfo(slot, &ti), CKR_TOKEN_NOT_PRESENT);
	assert_rv(F->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
	assert_rv(F->C_GetSlotList(CK_FALSE, slots, &n_all), CKR_OK);
	assert_true(n < n_all);
	assert_rv(F->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h),
		  CKR_TOKEN_NOT_PRESENT);
	assert_int_equal(unlink(pulled), 0);
	mtls_agent_free(a);
}

/* ---------------------------------------------------------------------- */
/* 8. the agent never loads its own front end */

static void
test_agent_refuses_module(void **state)
{
	const char *path = getenv("MTLS_PKCS11_MODULE");
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	const char *args[] = { "--module", path, "--module-dirs", dir, NULL };
	struct agent_opts o = { 0 };
	struct mtls_agent_identity *ids = NULL;
	size_t n = 0;
	mtls_agent *a;
	char *log;

	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	o.args = args;
	if (agent_start_opts(&fx, &o, &ag) == 0) {
		assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
		if (mtls_agent_list(a, &ids, &n) != 0)
			n = 0;
		mtls_agent_identities_free(ids, n);
		mtls_agent_free(a);
		assert_int_equal(n, 0);
	}
	/* Started or not, the module said no to its own agent's helper. */
	log = agent_log(&ag);
	if (strstr(log, "C_Initialize: 0x5") == NULL && strstr(log, "general error") == NULL)
		fail_msg("the agent's log does not show the module refusing:\n%s", log);
	free(log);
}

/*
 * 9. ... nor through p11-kit-proxy, the agent's default module, when the
 * module is registered with p11-kit without its disable-in line: the
 * helper's environment keeps XDG_RUNTIME_DIR, so the module would find the
 * agent's default socket there and offer the agent's identities back to it
 * as tokens.  The agent must keep listing the SoftHSM2 token's identities
 * only.  p11-kit reads a user's ~/.config/pkcs11/modules, but for root only
 * the system's: root (CI) registers in /etc/pkcs11/modules for the test.
 */
static void
test_refused_through_proxy(void **state)
{
	const char *path = getenv("MTLS_PKCS11_MODULE");
	char *reg = registration, xdg[PATH_MAX + 16], env_xdg[PATH_MAX + 32], sock[PATH_MAX + 64];
	char text[PATH_MAX + 16], home[PATH_MAX], env_home[PATH_MAX + 8], dir[PATH_MAX + 64];
	const char *args[] = { "--socket", sock, "--token", "pkcs11:", NULL };
	const char *env[] = { env_xdg, env_home, NULL };
	struct agent_opts o = { 0 };
	struct mtls_agent_identity *ids = NULL;
	size_t n = 0, i;
	mtls_agent *a;

	if (access("/usr/share/p11-kit/modules/softhsm2.module", R_OK) != 0 &&
	    access("/etc/pkcs11/modules/softhsm2.module", R_OK) != 0)
		fail_msg("SoftHSM2 is not registered with p11-kit (install softhsm2)");
	snprintf(text, sizeof(text), "module: %s\n", path);
	if (getuid() == 0) {
		snprintf(reg, sizeof(registration),
			 "/etc/pkcs11/modules/zz-mtls-agent-pkcs11-test-%ld.module",
			 (long)getpid());
		(void)mkdir("/etc/pkcs11", 0755);
		(void)mkdir("/etc/pkcs11/modules", 0755);
		env[1] = NULL;
	} else {
		assert_int_equal(fixture_path(&fx, "home", home, sizeof(home)), 0);
		snprintf(env_home, sizeof(env_home), "HOME=%s", home);
		snprintf(dir, sizeof(dir), "%s/.config", home);
		(void)mkdir(home, 0700);
		(void)mkdir(dir, 0700);
		snprintf(dir, sizeof(dir), "%s/.config/pkcs11", home);
		(void)mkdir(dir, 0700);
		snprintf(dir, sizeof(dir), "%s/.config/pkcs11/modules", home);
		(void)mkdir(dir, 0700);
		snprintf(reg, sizeof(registration), "%s/mtls-agent-pkcs11.module", dir);
	}
	assert_int_equal(fixture_write_file(reg, text, 0644), 0);
	assert_int_equal(fixture_path(&fx, "xdg", xdg, sizeof(xdg)), 0);
	(void)mkdir(xdg, 0700);
	snprintf(env_xdg, sizeof(env_xdg), "XDG_RUNTIME_DIR=%s", xdg);
	snprintf(sock, sizeof(sock), "%s/mtls-agent/agent.sock", xdg);
	o.args = args;
	o.env = env;
	o.default_module = 1;
	if (agent_start_opts(&fx, &o, &ag) != 0)
		fail_msg("agent did not start with p11-kit-proxy");
	/* Long enough for the watcher to re-read the tokens (every second). */
	sleep(3);
	assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
	assert_int_equal(mtls_agent_list(a, &ids, &n), 0);
	(void)unlink(reg);
	registration[0] = '\0';
	assert_int_equal(n, 4);
	for (i = 0; i < n; i++)
		if (strcmp(ids[i].token_label, fx.token) != 0)
			fail_msg("identity %s comes from token %s, not the SoftHSM2 one",
				 ids[i].name, ids[i].token_label);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	assert_true(agent_alive(&ag));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_arguments, teardown),
		cmocka_unit_test_teardown(test_sign_verify, teardown),
		cmocka_unit_test_teardown(test_digest_refused, teardown),
		cmocka_unit_test_teardown(test_login_states, teardown),
		cmocka_unit_test_teardown(test_login_prompt, teardown),
		cmocka_unit_test_teardown(test_fork, teardown),
		cmocka_unit_test_teardown(test_threads, teardown),
		cmocka_unit_test_teardown(test_agent_locked, teardown),
		cmocka_unit_test_teardown(test_token_absent, teardown),
		cmocka_unit_test_teardown(test_agent_refuses_module, teardown),
		cmocka_unit_test_teardown(test_refused_through_proxy, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
