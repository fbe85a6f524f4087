/*
 * module_floor - the memory floor of any process that holds a logged-in
 * token through a PKCS#11 module: it dlopen()s the module, initializes it,
 * opens a session on the token and logs in, says "ready" and waits for
 * SIGTERM; bench/run.sh reads its VmRSS as the reference of row 5.  It
 * links nothing but libc, so everything it maps is the module's own.
 *
 *   module_floor MODULE TOKEN-LABEL   (the user PIN on stdin)
 */
#include "config.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static void
die(const char *what, const char *arg, CK_RV rv)
{
	fprintf(stderr, "module_floor: %s %s", what, arg != NULL ? arg : "");
	if (rv != 0)
		fprintf(stderr, " (PKCS#11 error 0x%lx)", rv);
	fputc('\n', stderr);
	exit(1);
}

int
main(int argc, char **argv)
{
	CK_C_INITIALIZE_ARGS ia = { .flags = CKF_OS_LOCKING_OK };
	CK_FUNCTION_LIST_PTR fl;
	CK_C_GetFunctionList getfl;
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_SESSION_HANDLE s;
	CK_TOKEN_INFO ti;
	char pin[256];
	sigset_t set;
	size_t len, plen;
	void *h;
	CK_RV rv;
	int sig;

	if (argc != 3)
		die("usage: module_floor MODULE TOKEN-LABEL (PIN on stdin)", NULL, 0);
	len = strlen(argv[2]);
	if (fgets(pin, sizeof(pin), stdin) == NULL)
		die("no PIN on stdin", NULL, 0);
	plen = strcspn(pin, "\n");
	/* SIGTERM is waited for, not handled. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if ((h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) == NULL)
		die("cannot dlopen", argv[1], 0);
	if ((getfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) == NULL ||
	    getfl(&fl) != CKR_OK)
		die("no C_GetFunctionList in", argv[1], 0);
	if ((rv = fl->C_Initialize(&ia)) != CKR_OK)
		die("C_Initialize failed:", argv[1], rv);
	if ((rv = fl->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
		die("C_GetSlotList failed:", argv[1], rv);
	for (i = 0; i < n; i++) {
		if (fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (len <= sizeof(ti.label) && memcmp(ti.label, argv[2], len) == 0 &&
		    (len == sizeof(ti.label) || ti.label[len] == ' '))
			break;
	}
	if (i == n)
		die("token not found:", argv[2], 0);
	if ((rv = fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		die("C_OpenSession failed:", argv[2], rv);
	if ((rv = fl->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, plen)) != CKR_OK)
		die("C_Login failed:", argv[2], rv);
	memset(pin, 0, sizeof(pin));
	printf("ready\n");
	fflush(stdout);
	sigwait(&set, &sig);
	fl->C_Logout(s);
	fl->C_CloseSession(s);
	fl->C_Finalize(NULL);
	return 0;
}
