/*
 * module.c - mtls-agent-pkcs11.so: a PKCS#11 2.40 module whose tokens are
 * the agent's identities.  General functions, slots and tokens, sessions,
 * login; objects.c holds the objects, sign.c the signatures.
 *
 * Nothing here touches a key: every signature is a SIGN request to the
 * agent, which decides (peers, purposes, confirmation) and audits.  A
 * process that forks keeps working in the child without anything to do:
 * libmtls-agent notices the fork and opens the child's own connection on
 * its next call, and C_Initialize in a child (the PKCS#11 way) starts
 * afresh instead of answering CKR_CRYPTOKI_ALREADY_INITIALIZED.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "module.h"
#include "secmem.h"

struct p11_state g;
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
unsigned long g_generation;
static pid_t g_pid; /* process that called C_Initialize */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

#define MANUFACTURER "mtls-agent"
#define DEBUG_ENV    "MTLS_AGENT_PKCS11_DEBUG"
/* Programs that must never load this module: the agent and its helper
 * would sign through themselves (and wait for themselves forever). */
static const char *const refused_programs[] = { "mtls-agent", "mtls-agent-p11" };

void
p11_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	syslog(LOG_WARNING, "mtls-agent-pkcs11: %s", line);
	if (getenv(DEBUG_ENV) != NULL)
		fprintf(stderr, "mtls-agent-pkcs11: %s\n", line);
}

CK_RV
p11_rv(int err)
{
	switch (err) {
	case 0: return CKR_OK;
	case MTLS_ERR_ALLOC: return CKR_HOST_MEMORY;
	case MTLS_ERR_LOGIN_REQUIRED: return CKR_USER_NOT_LOGGED_IN;
	case MTLS_ERR_PIN_INCORRECT: return CKR_PIN_INCORRECT;
	case MTLS_ERR_PIN_LOCKED: return CKR_PIN_LOCKED;
	case MTLS_ERR_PIN_INVALID: return CKR_PIN_INVALID;
	case MTLS_ERR_TOKEN_ABSENT:
	case MTLS_ERR_NO_IDENTITY: return CKR_DEVICE_REMOVED;
	/* The agent (or the person it asked) said no: "rejected by the user"
	 * is the closest PKCS#11 has. */
	case MTLS_ERR_POLICY_DENIED:
	case MTLS_ERR_PEER_DENIED:
	case MTLS_ERR_CONFIRM_DENIED:
	case MTLS_ERR_RATE_LIMITED:
	case MTLS_ERR_AGENT_LOCKED: return CKR_FUNCTION_REJECTED;
	case MTLS_ERR_CONTENT_REJECTED: return CKR_DATA_INVALID;
	case MTLS_ERR_UNSUPPORTED_SCHEME: return CKR_MECHANISM_INVALID;
	case MTLS_ERR_FRAME_TOO_LARGE: return CKR_DATA_LEN_RANGE;
	case MTLS_ERR_NO_SOCKET:
	case MTLS_ERR_CONNECT:
	case MTLS_ERR_IO:
	case MTLS_ERR_CONNECTION_CLOSED:
	case MTLS_ERR_TIMEOUT:
	case MTLS_ERR_BUSY:
	case MTLS_ERR_TOKEN: return CKR_DEVICE_ERROR;
	default: return CKR_FUNCTION_FAILED;
	}
}

void
p11_pad(CK_UTF8CHAR *dst, size_t width, const char *src)
{
	size_t n = strlen(src);

	memset(dst, ' ', width);
	memcpy(dst, src, n < width ? n : width);
}

/* A thread that forks while another holds the lock would leave the child
 * a lock nobody can release: forks wait for it. */
static void
atfork_prepare(void)
{
	pthread_mutex_lock(&g_lock);
}

static void
atfork_release(void)
{
	pthread_mutex_unlock(&g_lock);
}

static void
atfork_setup(void)
{
	if (pthread_atfork(atfork_prepare, atfork_release, atfork_release) != 0)
		p11_log("pthread_atfork failed: a fork during a call may hang the child");
}

static int
refused_program(void)
{
	size_t i;

	for (i = 0; i < sizeof(refused_programs) / sizeof(refused_programs[0]); i++)
		if (strcmp(program_invocation_short_name, refused_programs[i]) == 0)
			return 1;
	return 0;
}

/* --- slots ---------------------------------------------------------------- */

int
p11_slot_logged_in(const struct p11_slot *sl)
{
	return sl->listed && (sl->flags & MTLS_AGENT_ID_TOKEN_PRESENT) &&
	       (sl->flags & MTLS_AGENT_ID_LOGGED_IN);
}

static int
slot_present(const struct p11_slot *sl)
{
	return sl->listed && (sl->flags & MTLS_AGENT_ID_TOKEN_PRESENT);
}

static struct p11_slot *
slot_get(CK_SLOT_ID id)
{
	return id < g.n_slots ? &g.slots[id] : NULL;
}

/* The slot of id if its token is there now: CKR_OK, else why not. */
static CK_RV
slot_with_token(CK_SLOT_ID id, struct p11_slot **sl)
{
	if ((*sl = slot_get(id)) == NULL)
		return CKR_SLOT_ID_INVALID;
	return slot_present(*sl) ? CKR_OK : CKR_TOKEN_NOT_PRESENT;
}

/*
 * Asks the agent for its identities and brings the slots up to date.  A
 * slot keeps its number for the life of the module (applications hold
 * slot IDs); a new identity gets a new slot, one that went away stays as a
 * slot whose token is absent.  If the agent cannot be asked (not running,
 * locked), the slots stay as they were, marked absent.
 */
static void
refresh(void)
{
	struct mtls_agent_identity *ids = NULL;
	size_t n = 0, i, j;
	int r;

	if (g.agent == NULL && (r = mtls_agent_connect(NULL, &g.agent)) != 0) {
		p11_log("cannot reach the agent: %s", mtls_agent_strerror(r));
		goto absent;
	}
	if ((r = mtls_agent_list(g.agent, &ids, &n)) != 0) {
		p11_log("listing the agent's identities failed: %s%s%s", mtls_agent_strerror(r),
			*mtls_agent_last_message() ? ": " : "", mtls_agent_last_message());
		goto absent;
	}
	for (j = 0; j < g.n_slots; j++)
		g.slots[j].listed = 0;
	for (i = 0; i < n; i++) {
		if (ids[i].cert_der == NULL)
			continue; /* nothing to show an application */
		for (j = 0; j < g.n_slots; j++)
			if (strcmp(g.slots[j].name, ids[i].name) == 0)
				break;
		if (j == g.n_slots) {
			if (g.n_slots == P11_MAX_SLOTS)
				continue;
			g.n_slots++;
		}
		/* A reloaded agent may have given the name another key. */
		if ((r = p11_slot_fill(&g.slots[j], &ids[i])) != 0) {
			p11_log("identity %s: %s", ids[i].name, mtls_agent_strerror(r));
			if (g.slots[j].name == NULL)
				g.n_slots--;
			continue;
		}
	}
	mtls_agent_identities_free(ids, n);
	return;
absent:
	for (j = 0; j < g.n_slots; j++)
		g.slots[j].listed = 0;
}

/* --- sessions -------------------------------------------------------------- */

struct p11_session *
p11_session_get(CK_SESSION_HANDLE h)
{
	size_t i;

	if (h == CK_INVALID_HANDLE)
		return NULL;
	for (i = 0; i < P11_MAX_SESSIONS; i++)
		if (g.sessions[i].handle == h)
			return &g.sessions[i];
	return NULL;
}

struct p11_slot *
p11_session_slot(const struct p11_session *s)
{
	return slot_get(s->slot);
}

static void
session_close(struct p11_session *s)
{
	p11_sign_clear(&s->sign);
	mtls_agent_free(s->agent);
	memset(s, 0, sizeof(*s));
}

static void
state_free(void)
{
	size_t i;

	for (i = 0; i < P11_MAX_SESSIONS; i++)
		if (g.sessions[i].handle != 0)
			session_close(&g.sessions[i]);
	for (i = 0; i < g.n_slots; i++)
		p11_slot_clear(&g.slots[i]);
	mtls_agent_free(g.agent);
	memset(&g, 0, sizeof(g));
	g_generation++;
}

/* Every function but C_GetFunctionList and C_Initialize starts here. */
#define LOCK_INITIALIZED()                                                                         \
	do {                                                                                       \
		pthread_mutex_lock(&g_lock);                                                       \
		if (!g.initialized) {                                                              \
			pthread_mutex_unlock(&g_lock);                                             \
			return CKR_CRYPTOKI_NOT_INITIALIZED;                                       \
		}                                                                                  \
	} while (0)

/* Looks the session up into `s`, or returns CKR_SESSION_HANDLE_INVALID. */
#define SESSION(s, h)                                                                              \
	do {                                                                                       \
		if (((s) = p11_session_get(h)) == NULL) {                                          \
			rv = CKR_SESSION_HANDLE_INVALID;                                           \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

/* --- general ---------------------------------------------------------------- */

static CK_RV
p11c_Initialize(CK_VOID_PTR pInitArgs)
{
	CK_C_INITIALIZE_ARGS_PTR a = pInitArgs;
	CK_RV rv = CKR_OK;
	int some, all;

	if (a != NULL) {
		if (a->pReserved != NULL)
			return CKR_ARGUMENTS_BAD;
		some = a->CreateMutex != NULL || a->DestroyMutex != NULL || a->LockMutex != NULL ||
		       a->UnlockMutex != NULL;
		all = a->CreateMutex != NULL && a->DestroyMutex != NULL && a->LockMutex != NULL &&
		      a->UnlockMutex != NULL;
		if (some && !all)
			return CKR_ARGUMENTS_BAD;
		/* We lock with pthreads only. */
		if (all && !(a->flags & CKF_OS_LOCKING_OK))
			return CKR_CANT_LOCK;
	}
	if (refused_program()) {
		p11_log("refusing to load into %s: the agent must not sign through itself",
			program_invocation_short_name);
		return CKR_GENERAL_ERROR;
	}
	pthread_once(&atfork_once, atfork_setup);
	pthread_mutex_lock(&g_lock);
	if (g.initialized) {
		if (g_pid == getpid()) {
			rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
			goto out;
		}
		/* A child of the process that initialised us: start afresh
		 * (the parent's sessions are the parent's). */
		state_free();
	}
	g.initialized = 1;
	g.next_handle = 1;
	g_pid = getpid();
	refresh();
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_Finalize(CK_VOID_PTR pReserved)
{
	if (pReserved != NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	state_free();
	pthread_mutex_unlock(&g_lock);
	return CKR_OK;
}

static CK_RV
p11c_GetInfo(CK_INFO_PTR pInfo)
{
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	memset(pInfo, 0, sizeof(*pInfo));
	pInfo->cryptokiVersion.major = 2;
	pInfo->cryptokiVersion.minor = 40;
	p11_pad(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), MANUFACTURER);
	p11_pad(pInfo->libraryDescription, sizeof(pInfo->libraryDescription),
		"mtls-agent identities");
	pInfo->libraryVersion.major = 0;
	pInfo->libraryVersion.minor = 1;
	pthread_mutex_unlock(&g_lock);
	return CKR_OK;
}

/* --- slots and tokens ---------------------------------------------------- */

static CK_RV
p11c_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount)
{
	CK_ULONG n = 0, i;
	CK_RV rv = CKR_OK;

	if (pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	/* Asked again only for the count, so that the list an application
	 * then fetches is the one it just sized. */
	if (pSlotList == NULL)
		refresh();
	for (i = 0; i < g.n_slots; i++) {
		if (tokenPresent && !slot_present(&g.slots[i]))
			continue;
		if (pSlotList != NULL && n < *pulCount)
			pSlotList[n] = i;
		n++;
	}
	if (pSlotList != NULL && n > *pulCount)
		rv = CKR_BUFFER_TOO_SMALL;
	*pulCount = n;
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo)
{
	struct p11_slot *sl;
	char desc[64];
	CK_RV rv = CKR_OK;

	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	if ((sl = slot_get(slotID)) == NULL) {
		rv = CKR_SLOT_ID_INVALID;
		goto out;
	}
	refresh();
	memset(pInfo, 0, sizeof(*pInfo));
	snprintf(desc, sizeof(desc), "mtls-agent identity %s", sl->name);
	p11_pad(pInfo->slotDescription, sizeof(pInfo->slotDescription), desc);
	p11_pad(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), MANUFACTURER);
	pInfo->flags = CKF_REMOVABLE_DEVICE | (slot_present(sl) ? CKF_TOKEN_PRESENT : 0);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo)
{
	struct p11_slot *sl;
	CK_RV rv = CKR_OK;

	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	if ((sl = slot_get(slotID)) == NULL) {
		rv = CKR_SLOT_ID_INVALID;
		goto out;
	}
	refresh();
	if (!slot_present(sl)) {
		rv = CKR_TOKEN_NOT_PRESENT;
		goto out;
	}
	memset(pInfo, 0, sizeof(*pInfo));
	p11_pad(pInfo->label, sizeof(pInfo->label), sl->name);
	p11_pad(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), MANUFACTURER);
	p11_pad(pInfo->model, sizeof(pInfo->model),
		sl->key_type == MTLS_AGENT_KEY_RSA ? "RSA identity" : "EC identity");
	p11_pad(pInfo->serialNumber, sizeof(pInfo->serialNumber), sl->serial_hex);
	pInfo->flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_WRITE_PROTECTED;
	/* Logged in at the agent: the key is usable with no C_Login, so a
	 * browser never shows a PIN dialog for it. */
	if (!p11_slot_logged_in(sl))
		pInfo->flags |= CKF_LOGIN_REQUIRED | CKF_PROTECTED_AUTHENTICATION_PATH;
	if (sl->flags & MTLS_AGENT_ID_PIN_COUNT_LOW)
		pInfo->flags |= CKF_USER_PIN_COUNT_LOW;
	if (sl->flags & MTLS_AGENT_ID_PIN_FINAL_TRY)
		pInfo->flags |= CKF_USER_PIN_FINAL_TRY;
	if (sl->flags & MTLS_AGENT_ID_PIN_LOCKED)
		pInfo->flags |= CKF_USER_PIN_LOCKED;
	pInfo->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
	pInfo->ulSessionCount = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulMaxRwSessionCount = 0;
	pInfo->ulRwSessionCount = 0;
	pInfo->ulMaxPinLen = MTLS_AGENT_PIN_MAX;
	pInfo->ulMinPinLen = 1;
	pInfo->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->hardwareVersion.major = 0;
	pInfo->firmwareVersion.major = 0;
	memset(pInfo->utcTime, ' ', sizeof(pInfo->utcTime));
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList,
		      CK_ULONG_PTR pulCount)
{
	struct p11_slot *sl;
	CK_RV rv;

	if (pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	if ((rv = slot_with_token(slotID, &sl)) == CKR_OK)
		rv = p11_mechanisms(sl, pMechanismList, pulCount);
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo)
{
	struct p11_slot *sl;
	CK_RV rv;

	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	if ((rv = slot_with_token(slotID, &sl)) == CKR_OK)
		rv = p11_mechanism_info(sl, type, pInfo);
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* --- sessions -------------------------------------------------------------- */

static CK_RV
p11c_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,
		 CK_SESSION_HANDLE_PTR phSession)
{
	struct p11_slot *sl;
	struct p11_session *s = NULL;
	CK_RV rv = CKR_OK;
	size_t i;

	if (phSession == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	if ((sl = slot_get(slotID)) == NULL) {
		rv = CKR_SLOT_ID_INVALID;
		goto out;
	}
	if (!(flags & CKF_SERIAL_SESSION)) {
		rv = CKR_SESSION_PARALLEL_NOT_SUPPORTED;
		goto out;
	}
	refresh();
	if (!slot_present(sl)) {
		rv = CKR_TOKEN_NOT_PRESENT;
		goto out;
	}
	/* The agent's tokens are never written through this module. */
	if (flags & CKF_RW_SESSION) {
		rv = CKR_TOKEN_WRITE_PROTECTED;
		goto out;
	}
	for (i = 0; i < P11_MAX_SESSIONS && s == NULL; i++)
		if (g.sessions[i].handle == 0)
			s = &g.sessions[i];
	if (s == NULL) {
		rv = CKR_SESSION_COUNT;
		goto out;
	}
	memset(s, 0, sizeof(*s));
	s->handle = g.next_handle++;
	if (g.next_handle == CK_INVALID_HANDLE)
		g.next_handle = 1;
	s->slot = slotID;
	s->flags = flags;
	*phSession = s->handle;
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_CloseSession(CK_SESSION_HANDLE hSession)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	session_close(s);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_CloseAllSessions(CK_SLOT_ID slotID)
{
	CK_RV rv = CKR_OK;
	size_t i;

	LOCK_INITIALIZED();
	if (slot_get(slotID) == NULL) {
		rv = CKR_SLOT_ID_INVALID;
		goto out;
	}
	for (i = 0; i < P11_MAX_SESSIONS; i++)
		if (g.sessions[i].handle != 0 && g.sessions[i].slot == slotID)
			session_close(&g.sessions[i]);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo)
{
	struct p11_session *s;
	struct p11_slot *sl;
	CK_RV rv = CKR_OK;

	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	SESSION(s, hSession);
	sl = p11_session_slot(s);
	memset(pInfo, 0, sizeof(*pInfo));
	pInfo->slotID = s->slot;
	pInfo->flags = s->flags;
	pInfo->state =
	    sl != NULL && p11_slot_logged_in(sl) ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION;
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* --- login ------------------------------------------------------------------ */

/*
 * The PIN goes to the agent's LOGIN, which hands it to the token; the
 * agent then holds the login for every client.  With no PIN (the protected
 * authentication path the token reports) the agent asks the person itself,
 * through its askpass program (LOGIN_PROMPT), and this process never sees
 * the PIN.
 */
static CK_RV
p11c_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
	   CK_ULONG ulPinLen)
{
	struct p11_session *s;
	struct p11_slot *sl;
	char *pin = NULL;
	CK_RV rv = CKR_OK;
	int r, retries = -1;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if (userType != CKU_USER) {
		rv = CKR_USER_TYPE_INVALID; /* no SO, no context-specific login */
		goto out;
	}
	if (pPin == NULL && ulPinLen != 0) {
		rv = CKR_ARGUMENTS_BAD;
		goto out;
	}
	refresh();
	if ((sl = p11_session_slot(s)) == NULL || !slot_present(sl)) {
		rv = CKR_DEVICE_REMOVED;
		goto out;
	}
	if (p11_slot_logged_in(sl)) {
		rv = CKR_USER_ALREADY_LOGGED_IN;
		goto out;
	}
	if (pPin == NULL) {
		if ((r = mtls_agent_login_prompt(g.agent, sl->name, &retries)) != 0) {
			p11_log("login to identity %s (the agent asking for the PIN): %s%s%s",
				sl->name, mtls_agent_strerror(r),
				*mtls_agent_last_message() ? ": " : "", mtls_agent_last_message());
			/* Nobody answered the agent's question: the user's cancel. */
			rv = r == MTLS_ERR_CONFIRM_DENIED ? CKR_FUNCTION_CANCELED : p11_rv(r);
			goto out;
		}
		refresh();
		goto out;
	}
	if (ulPinLen == 0 || ulPinLen > MTLS_AGENT_PIN_MAX) {
		rv = CKR_PIN_LEN_RANGE;
		goto out;
	}
	if (memchr(pPin, '\0', ulPinLen) != NULL) {
		rv = CKR_PIN_INVALID;
		goto out;
	}
	if ((pin = mtls_secure_alloc(ulPinLen + 1)) == NULL) {
		rv = CKR_HOST_MEMORY;
		goto out;
	}
	memcpy(pin, pPin, ulPinLen);
	pin[ulPinLen] = '\0';
	if ((r = mtls_agent_login(g.agent, sl->name, pin, &retries)) != 0) {
		p11_log("login to identity %s: %s%s%s", sl->name, mtls_agent_strerror(r),
			*mtls_agent_last_message() ? ": " : "", mtls_agent_last_message());
		rv = p11_rv(r);
		goto out;
	}
	refresh();
out:
	mtls_secure_free(pin);
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* Logs the identity's token out in the agent, for every client. */
static CK_RV
p11c_Logout(CK_SESSION_HANDLE hSession)
{
	struct p11_session *s;
	struct p11_slot *sl;
	CK_RV rv = CKR_OK;
	int r;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	refresh();
	if ((sl = p11_session_slot(s)) == NULL || !slot_present(sl)) {
		rv = CKR_DEVICE_REMOVED;
		goto out;
	}
	if (!p11_slot_logged_in(sl)) {
		rv = CKR_USER_NOT_LOGGED_IN;
		goto out;
	}
	if ((r = mtls_agent_logout(g.agent, sl->name)) != 0) {
		p11_log("logout of identity %s: %s", sl->name, mtls_agent_strerror(r));
		rv = p11_rv(r);
		goto out;
	}
	refresh();
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* --- objects ---------------------------------------------------------------- */

static CK_RV
p11c_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
		       CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	struct p11_session *s;
	struct p11_slot *sl;
	enum p11_obj_kind kind;
	CK_RV rv = CKR_OK;

	if (pTemplate == NULL && ulCount != 0)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if (p11_object_lookup(s, hObject, &sl, &kind) != 0) {
		rv = CKR_OBJECT_HANDLE_INVALID;
		goto out;
	}
	rv = p11_get_attributes(sl, kind, pTemplate, ulCount);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_FindObjectsInit(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	if (pTemplate == NULL && ulCount != 0)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if (s->finding) {
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	rv = p11_find_init(s, pTemplate, ulCount);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_FindObjects(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject,
		 CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;
	CK_ULONG n = 0;

	if (phObject == NULL || pulObjectCount == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if (!s->finding) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
		goto out;
	}
	while (n < ulMaxObjectCount && s->next_found < s->n_found)
		phObject[n++] = s->found[s->next_found++];
	*pulObjectCount = n;
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_FindObjectsFinal(CK_SESSION_HANDLE hSession)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if (!s->finding) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
		goto out;
	}
	s->finding = 0;
	s->n_found = s->next_found = 0;
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* --- signatures (sign.c does the work) ------------------------------------- */

static CK_RV
p11c_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	if (pMechanism == NULL)
		return CKR_ARGUMENTS_BAD;
	LOCK_INITIALIZED();
	SESSION(s, hSession);
	rv = p11_sign_init(s, pMechanism, hKey);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* C_Sign, C_SignUpdate, C_SignFinal: the operation must be going; bad
 * arguments end it (as a failed call ends an operation in PKCS#11). */
static CK_RV
sign_going(struct p11_session *s, int args_bad)
{
	if (!s->sign.active)
		return CKR_OPERATION_NOT_INITIALIZED;
	if (args_bad) {
		p11_sign_clear(&s->sign);
		return CKR_ARGUMENTS_BAD;
	}
	return CKR_OK;
}

static CK_RV
p11c_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
	  CK_ULONG_PTR pulSignatureLen)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if ((rv = sign_going(s, (pData == NULL && ulDataLen != 0) || pulSignatureLen == NULL)) !=
	    CKR_OK)
		goto out;
	/* Single-part: the data must come in this one call.  On the
	 * size-query call (and CKR_BUFFER_TOO_SMALL) the data is not kept,
	 * since the application passes it again. */
	if (s->sign.len != 0) {
		p11_sign_clear(&s->sign);
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	if ((rv = p11_sign_update(s, pData, ulDataLen)) != CKR_OK)
		goto out;
	rv = p11_sign_final(s, pSignature, pulSignatureLen);
	/* Still going (size query, short buffer; these never let go of the
	 * lock): the data comes again with the next C_Sign. */
	if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && pSignature == NULL))
		s->sign.len = 0;
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if ((rv = sign_going(s, pPart == NULL && ulPartLen != 0)) == CKR_OK)
		rv = p11_sign_update(s, pPart, ulPartLen);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

static CK_RV
p11c_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	struct p11_session *s;
	CK_RV rv = CKR_OK;

	LOCK_INITIALIZED();
	SESSION(s, hSession);
	if ((rv = sign_going(s, pulSignatureLen == NULL)) == CKR_OK)
		rv = p11_sign_final(s, pSignature, pulSignatureLen);
out:
	pthread_mutex_unlock(&g_lock);
	return rv;
}

/* --- everything else ---------------------------------------------------------- */

/* clang-format off */
#define NOT_SUPPORTED(name, params) \
	static CK_RV name params { return CKR_FUNCTION_NOT_SUPPORTED; }
NOT_SUPPORTED(p11c_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d))
NOT_SUPPORTED(p11c_InitPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c))
NOT_SUPPORTED(p11c_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d, CK_ULONG e))
NOT_SUPPORTED(p11c_GetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c))
NOT_SUPPORTED(p11c_SetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e))
NOT_SUPPORTED(p11c_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d))
NOT_SUPPORTED(p11c_CopyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
NOT_SUPPORTED(p11c_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
NOT_SUPPORTED(p11c_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ULONG_PTR c))
NOT_SUPPORTED(p11c_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d))
NOT_SUPPORTED(p11c_EncryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
NOT_SUPPORTED(p11c_Encrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_EncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_EncryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c))
NOT_SUPPORTED(p11c_DecryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
NOT_SUPPORTED(p11c_Decrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_DecryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_DecryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c))
NOT_SUPPORTED(p11c_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b))
NOT_SUPPORTED(p11c_Digest, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_DigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
NOT_SUPPORTED(p11c_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
NOT_SUPPORTED(p11c_DigestFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c))
NOT_SUPPORTED(p11c_SignRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
NOT_SUPPORTED(p11c_SignRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_VerifyInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
NOT_SUPPORTED(p11c_Verify, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG e))
NOT_SUPPORTED(p11c_VerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
NOT_SUPPORTED(p11c_VerifyFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
NOT_SUPPORTED(p11c_VerifyRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
NOT_SUPPORTED(p11c_VerifyRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_DigestEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_DecryptDigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_SignEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_DecryptVerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
NOT_SUPPORTED(p11c_GenerateKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
NOT_SUPPORTED(p11c_GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f, CK_OBJECT_HANDLE_PTR x7, CK_OBJECT_HANDLE_PTR x8))
NOT_SUPPORTED(p11c_WrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f))
NOT_SUPPORTED(p11c_UnwrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e, CK_ATTRIBUTE_PTR f, CK_ULONG x7, CK_OBJECT_HANDLE_PTR x8))
NOT_SUPPORTED(p11c_DeriveKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e, CK_OBJECT_HANDLE_PTR f))
NOT_SUPPORTED(p11c_SeedRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
NOT_SUPPORTED(p11c_GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
NOT_SUPPORTED(p11c_GetFunctionStatus, (CK_SESSION_HANDLE a))
NOT_SUPPORTED(p11c_CancelFunction, (CK_SESSION_HANDLE a))
NOT_SUPPORTED(p11c_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c))
/* clang-format on */

static CK_FUNCTION_LIST function_list = {
	.version = { 2, 40 },
	.C_Initialize = p11c_Initialize,
	.C_Finalize = p11c_Finalize,
	.C_GetInfo = p11c_GetInfo,
	.C_GetFunctionList = C_GetFunctionList,
	.C_GetSlotList = p11c_GetSlotList,
	.C_GetSlotInfo = p11c_GetSlotInfo,
	.C_GetTokenInfo = p11c_GetTokenInfo,
	.C_GetMechanismList = p11c_GetMechanismList,
	.C_GetMechanismInfo = p11c_GetMechanismInfo,
	.C_InitToken = p11c_InitToken,
	.C_InitPIN = p11c_InitPIN,
	.C_SetPIN = p11c_SetPIN,
	.C_OpenSession = p11c_OpenSession,
	.C_CloseSession = p11c_CloseSession,
	.C_CloseAllSessions = p11c_CloseAllSessions,
	.C_GetSessionInfo = p11c_GetSessionInfo,
	.C_GetOperationState = p11c_GetOperationState,
	.C_SetOperationState = p11c_SetOperationState,
	.C_Login = p11c_Login,
	.C_Logout = p11c_Logout,
	.C_CreateObject = p11c_CreateObject,
	.C_CopyObject = p11c_CopyObject,
	.C_DestroyObject = p11c_DestroyObject,
	.C_GetObjectSize = p11c_GetObjectSize,
	.C_GetAttributeValue = p11c_GetAttributeValue,
	.C_SetAttributeValue = p11c_SetAttributeValue,
	.C_FindObjectsInit = p11c_FindObjectsInit,
	.C_FindObjects = p11c_FindObjects,
	.C_FindObjectsFinal = p11c_FindObjectsFinal,
	.C_EncryptInit = p11c_EncryptInit,
	.C_Encrypt = p11c_Encrypt,
	.C_EncryptUpdate = p11c_EncryptUpdate,
	.C_EncryptFinal = p11c_EncryptFinal,
	.C_DecryptInit = p11c_DecryptInit,
	.C_Decrypt = p11c_Decrypt,
	.C_DecryptUpdate = p11c_DecryptUpdate,
	.C_DecryptFinal = p11c_DecryptFinal,
	.C_DigestInit = p11c_DigestInit,
	.C_Digest = p11c_Digest,
	.C_DigestUpdate = p11c_DigestUpdate,
	.C_DigestKey = p11c_DigestKey,
	.C_DigestFinal = p11c_DigestFinal,
	.C_SignInit = p11c_SignInit,
	.C_Sign = p11c_Sign,
	.C_SignUpdate = p11c_SignUpdate,
	.C_SignFinal = p11c_SignFinal,
	.C_SignRecoverInit = p11c_SignRecoverInit,
	.C_SignRecover = p11c_SignRecover,
	.C_VerifyInit = p11c_VerifyInit,
	.C_Verify = p11c_Verify,
	.C_VerifyUpdate = p11c_VerifyUpdate,
	.C_VerifyFinal = p11c_VerifyFinal,
	.C_VerifyRecoverInit = p11c_VerifyRecoverInit,
	.C_VerifyRecover = p11c_VerifyRecover,
	.C_DigestEncryptUpdate = p11c_DigestEncryptUpdate,
	.C_DecryptDigestUpdate = p11c_DecryptDigestUpdate,
	.C_SignEncryptUpdate = p11c_SignEncryptUpdate,
	.C_DecryptVerifyUpdate = p11c_DecryptVerifyUpdate,
	.C_GenerateKey = p11c_GenerateKey,
	.C_GenerateKeyPair = p11c_GenerateKeyPair,
	.C_WrapKey = p11c_WrapKey,
	.C_UnwrapKey = p11c_UnwrapKey,
	.C_DeriveKey = p11c_DeriveKey,
	.C_SeedRandom = p11c_SeedRandom,
	.C_GenerateRandom = p11c_GenerateRandom,
	.C_GetFunctionStatus = p11c_GetFunctionStatus,
	.C_CancelFunction = p11c_CancelFunction,
	.C_WaitForSlotEvent = p11c_WaitForSlotEvent,
};

/* The one exported symbol. */
__attribute__((visibility("default"))) CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	if (ppFunctionList == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppFunctionList = &function_list;
	return CKR_OK;
}
