/*
 * module.c - loads the one PKCS#11 module this helper holds, and
 * re-initialises it (REINIT: what SoftHSM2 needs to see a returning token).
 *
 * The agent has checked the path against module-dirs before it exec'd us;
 * we load exactly that path (RTLD_NOW: a module with a missing symbol fails
 * here, not in the middle of a signature).
 */
#include "config.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "p11.h"

static CK_RV
initialize(CK_FUNCTION_LIST_PTR f)
{
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;

	/* Several channels call in at once: the module must lock itself. */
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = f->C_Initialize(&args);
	return rv == CKR_CRYPTOKI_ALREADY_INITIALIZED ? CKR_OK : rv;
}

int
p11_module_load(struct p11_module *m, const char *path, char *err, size_t err_len)
{
	CK_C_GetFunctionList get;
	CK_RV rv;

	memset(m, 0, sizeof(*m));
	if (pthread_rwlock_init(&m->reinit, NULL) != 0) {
		snprintf(err, err_len, "out of memory");
		return MTLS_ERR_ALLOC;
	}
	if ((m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(err, err_len, "%s: %s", path, dlerror());
		return MTLS_ERR_CONFIG;
	}
	if ((get = (CK_C_GetFunctionList)dlsym(m->dl, "C_GetFunctionList")) == NULL) {
		snprintf(err, err_len, "%s: no C_GetFunctionList", path);
		goto fail;
	}
	if ((rv = get(&m->f)) != CKR_OK || m->f == NULL) {
		snprintf(err, err_len, "%s: C_GetFunctionList: 0x%lx", path, (unsigned long)rv);
		goto fail;
	}
	if ((rv = initialize(m->f)) != CKR_OK) {
		snprintf(err, err_len, "%s: C_Initialize: 0x%lx", path, (unsigned long)rv);
		goto fail;
	}
	return 0;
fail:
	dlclose(m->dl);
	m->dl = NULL;
	m->f = NULL;
	return MTLS_ERR_TOKEN;
}

void
p11_module_unload(struct p11_module *m)
{
	if (m->f != NULL)
		(void)m->f->C_Finalize(NULL);
	/* Not dlclose'd: a module's threads may still run its code. */
	m->f = NULL;
}

int
p11_module_reinit(struct p11_state *st, struct p11_fail *fail)
{
	CK_RV rv;
	size_t i;

	/* Waits for the calls in flight on other channels; the agent sends
	 * REINIT only when the module fails them all anyway. */
	pthread_rwlock_wrlock(&st->mod.reinit);
	(void)st->mod.f->C_Finalize(NULL);
	rv = initialize(st->mod.f);
	pthread_mutex_lock(&st->lock);
	for (i = 0; i < st->n_slots; i++) {
		st->slots[i].login = CK_INVALID_HANDLE;
		st->slots[i].logged_in = 0;
	}
	st->n_slots = 0;
	/* Handles of the old sessions may be handed out again: every
	 * channel forgets its own before its next call (serve.c). */
	st->epoch++;
	pthread_mutex_unlock(&st->lock);
	pthread_rwlock_unlock(&st->mod.reinit);
	if (rv != CKR_OK)
		return p11_fail_rv(fail, rv, "C_Initialize");
	return 0;
}

int
p11_fail_rv(struct p11_fail *fail, CK_RV rv, const char *what)
{
	fail->rv = rv;
	fail->retries = -1;
	switch (rv) {
	case CKR_USER_NOT_LOGGED_IN: fail->code = MTLS_ERR_LOGIN_REQUIRED; break;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
	case CKR_SLOT_ID_INVALID: fail->code = MTLS_ERR_TOKEN_ABSENT; break;
	case CKR_PIN_INCORRECT: fail->code = MTLS_ERR_PIN_INCORRECT; break;
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
		fail->code = MTLS_ERR_PIN_LOCKED;
		fail->retries = rv == CKR_PIN_LOCKED ? 0 : -1;
		break;
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE: fail->code = MTLS_ERR_PIN_INVALID; break;
	case CKR_HOST_MEMORY: fail->code = MTLS_ERR_ALLOC; break;
	default: fail->code = MTLS_ERR_TOKEN; break;
	}
	snprintf(fail->message, sizeof(fail->message), "%s: PKCS#11 error 0x%lx", what,
		 (unsigned long)rv);
	return fail->code;
}
