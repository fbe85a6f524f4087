/*
 * helper_bench - what the hop to mtls-agent-p11 costs: signatures per
 * second on the same token with the key used in this process (raw
 * PKCS#11, one session per thread) and through the helper (helper_call()
 * SIGN on one channel per thread), for 1..N threads.
 *
 *   helper_bench MODULE TOKEN-LABEL KEY-LABEL THREADS SECONDS [HELPER-CPU]
 *
 * The PIN is read from $MTLS_TEST_PIN.  Both variants send the same
 * 32-byte digest (ECDSA) or SHA-256 DigestInfo (RSA PKCS#1 v1.5), so the
 * difference is the hop alone: a frame each way and the wake-ups.  With
 * HELPER-CPU the helper is pinned to that CPU (the caller pins this
 * process with taskset); without, it inherits this process's affinity.
 * Prints "raw RATE", "helper RATE" (signatures/s) and "helper_rss KiB".
 */
#define _GNU_SOURCE
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "helper.h"

#define THREADS_MAX 64

static CK_FUNCTION_LIST_PTR fl;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE raw_key;
static uint64_t helper_key;
static CK_KEY_TYPE key_type;
static struct helper *hp;
static double seconds;

static void
die(const char *what, unsigned long rv)
{
	fprintf(stderr, "helper_bench: %s (0x%lx)\n", what, rv);
	exit(1);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* SHA-256 DigestInfo prefix (RFC 8017 section 9.2, note 1). */
static const unsigned char sha256_prefix[19] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
						 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
						 0x01, 0x05, 0x00, 0x04, 0x20 };

static size_t
data(unsigned char *d)
{
	if (key_type == CKK_RSA) {
		memcpy(d, sha256_prefix, 19);
		memset(d + 19, 0x42, 32);
		return 19 + 32;
	}
	memset(d, 0x42, 32);
	return 32;
}

static void *
raw_thread(void *arg)
{
	CK_MECHANISM m = { key_type == CKK_RSA ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0 };
	unsigned char d[64], sig[1024];
	CK_SESSION_HANDLE s;
	size_t len = data(d);
	long *count = arg;
	double end;
	CK_ULONG sl;
	CK_RV rv;

	if ((rv = fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		die("C_OpenSession", rv);
	end = now() + seconds;
	while (now() < end) {
		sl = sizeof(sig);
		if ((rv = fl->C_SignInit(s, &m, raw_key)) != CKR_OK ||
		    (rv = fl->C_Sign(s, d, len, sig, &sl)) != CKR_OK)
			die("C_Sign", rv);
		(*count)++;
	}
	fl->C_CloseSession(s);
	return NULL;
}

static void *
helper_thread(void *arg)
{
	unsigned char d[64];
	struct msg_p11_sign_req sr = { .slot = slot,
				       .key = helper_key,
				       .mech =
					   key_type == CKK_RSA ? P11_MECH_RSA_PKCS : P11_MECH_ECDSA,
				       .data = d };
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_error fail;
	long *count = arg;
	double end;

	sr.data_len = data(d);
	if (req == NULL || reply == NULL || msg_p11_sign_req_put(req, &sr) != 0)
		die("request", 0);
	end = now() + seconds;
	while (now() < end) {
		wbuf_reset(reply);
		if (helper_call(hp, req, reply, &fail, NULL) != 0)
			die(fail.message != NULL ? fail.message : "helper SIGN", fail.rv);
		(*count)++;
	}
	wbuf_free(req);
	wbuf_free(reply);
	return NULL;
}

static double
run(void *(*fn)(void *), int n)
{
	pthread_t th[THREADS_MAX];
	long counts[THREADS_MAX] = { 0 }, total = 0;
	int i;

	for (i = 0; i < n; i++)
		if (pthread_create(&th[i], NULL, fn, &counts[i]) != 0)
			die("pthread_create", 0);
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		total += counts[i];
	}
	return (double)total / seconds;
}

static void
raw_setup(const char *module, const char *token, const char *key_label, const char *pin)
{
	CK_C_INITIALIZE_ARGS ia = { .flags = CKF_OS_LOCKING_OK };
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[2] = { { CKA_CLASS, &cls, sizeof(cls) },
			      { CKA_LABEL, (void *)key_label, strlen(key_label) } };
	CK_ATTRIBUTE kt = { CKA_KEY_TYPE, &key_type, sizeof(key_type) };
	CK_C_GetFunctionList get;
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i, found = 0;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s;
	void *dl;

	if ((dl = dlopen(module, RTLD_NOW)) == NULL ||
	    (get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) == NULL ||
	    get(&fl) != CKR_OK || fl->C_Initialize(&ia) != CKR_OK ||
	    fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		die("module", 0);
	for (i = 0; i < n; i++)
		if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    strncmp((char *)ti.label, token, strlen(token)) == 0 &&
		    (ti.label[strlen(token)] == ' ' || strlen(token) == 32))
			slot = slots[i];
	if (fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK ||
	    fl->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK ||
	    fl->C_FindObjectsInit(s, t, 2) != CKR_OK ||
	    fl->C_FindObjects(s, &raw_key, 1, &found) != CKR_OK || found != 1 ||
	    fl->C_GetAttributeValue(s, raw_key, &kt, 1) != CKR_OK)
		die("login or key", 0);
	fl->C_FindObjectsFinal(s);
	/* s stays open: it holds the login. */
}

static void
helper_setup(const char *module, const char *key_label, const char *pin, int threads)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_login_req lr = { .slot = slot, .pin = (char *)pin };
	struct msg_p11_slot_req sr = { .slot = slot };
	struct msg_p11_objects_resp objs;
	struct msg_p11_error fail;
	char err[256];
	size_t i;

	if (helper_start(NULL, module, (unsigned int)threads, 10000, &hp, err, sizeof(err)) != 0)
		die(err, 0);
	if (msg_p11_login_req_put(req, &lr) != 0 || helper_call(hp, req, reply, &fail, NULL) != 0)
		die("helper login", 0);
	wbuf_reset(req);
	wbuf_reset(reply);
	if (msg_p11_slot_req_put(req, P11_OBJECTS, &sr) != 0 ||
	    helper_call(hp, req, reply, &fail, NULL) != 0 ||
	    msg_p11_objects_resp_get(reply, &objs) != 0)
		die("helper objects", 0);
	for (i = 0; i < objs.n; i++)
		if (objs.o[i].kind != P11_OBJ_CERT && strcmp(objs.o[i].label, key_label) == 0)
			helper_key = objs.o[i].handle;
	msg_p11_objects_resp_clear(&objs);
	wbuf_free(req);
	wbuf_free(reply);
}

static long
rss_kib(int pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int
main(int argc, char **argv)
{
	const char *pin = getenv("MTLS_TEST_PIN");
	int threads;

	if (argc < 6 || argc > 7 || pin == NULL) {
		fprintf(stderr, "usage: helper_bench MODULE TOKEN KEY THREADS SECONDS [HELPER-CPU]"
				" (PIN in $MTLS_TEST_PIN)\n");
		return 2;
	}
	threads = atoi(argv[4]);
	seconds = atof(argv[5]);
	if (threads < 1 || threads > THREADS_MAX || seconds <= 0)
		return 2;
	raw_setup(argv[1], argv[2], argv[3], pin);
	helper_setup(argv[1], argv[3], pin, threads);
	if (argc == 7) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(atoi(argv[6]), &set);
		if (sched_setaffinity(helper_pid(hp), sizeof(set), &set) != 0)
			die("sched_setaffinity", 0);
	}
	printf("helper_rss %ld\n", rss_kib(helper_pid(hp)));
	printf("raw %.0f\n", run(raw_thread, threads));
	printf("helper %.0f\n", run(helper_thread, threads));
	helper_free(hp);
	return 0;
}
