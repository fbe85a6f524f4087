/*
 * sign_bench.c - signatures per second, one or more client threads.
 *
 *   sign_bench --backend pkcs11 --module SO --token LABEL --pin PIN
 *              --alg rsa2048|p256 [--threads N] [--seconds S | --count N]
 *   sign_bench --backend agent --socket PATH --identity NAME
 *              --alg rsa2048|p256 [--threads N] [--seconds S | --count N]
 *
 * pkcs11: the module is dlopen()ed and driven through its function list,
 * nothing in between: one session per thread, C_SignInit + C_Sign on a
 * 32-byte digest (RSA: CKM_RSA_PKCS_PSS with SHA-256 and a 32-byte salt,
 * as rsa_pss_rsae_sha256; P-256: CKM_ECDSA).  Point --module at
 * p11-kit-client.so (with P11_KIT_SERVER_ADDRESS) for p11-kit remoting.
 *
 * agent: one libmtls-agent handle per thread, each signature a TLS 1.3
 * client CertificateVerify content (the agent checks it and hashes it).
 * With --refused and an --identity the agent does not have, each request
 * is answered NO_IDENTITY without touching the token: the rate of round
 * trips through socket, decoding, policy and audit line alone.
 *
 * Prints one line: "rate <signatures/s> count <n> seconds <s>".
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "mtls-agent.h"

static const char *opt_backend, *opt_module, *opt_token, *opt_pin, *opt_socket, *opt_ident;
static int opt_rsa = -1;
static unsigned int opt_threads = 1;
static double opt_seconds = 3.0;
static int opt_refused; /* agent: count NO_IDENTITY replies (round-trip cost) */
static unsigned long opt_count;

static CK_FUNCTION_LIST_PTR p11;
static CK_SLOT_ID slot;
static CK_BYTE key_id[1];

static volatile int stop;
static unsigned long next_ticket; /* --count: signatures handed out */
static pthread_barrier_t start_barrier;

struct worker {
	pthread_t th;
	unsigned long done;
	int failed;
};

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* With --count, each signature takes a ticket; none left: stop. */
static int
more(void)
{
	if (opt_count == 0)
		return !__atomic_load_n(&stop, __ATOMIC_RELAXED);
	return __atomic_fetch_add(&next_ticket, 1, __ATOMIC_RELAXED) < opt_count;
}

static void __attribute__((noreturn)) die(const char *what, const char *arg, unsigned long rv)
{
	fprintf(stderr, "sign_bench: %s %s", what, arg != NULL ? arg : "");
	if (rv != 0)
		fprintf(stderr, " (PKCS#11 error 0x%lx)", rv);
	fputc('\n', stderr);
	exit(1);
}

/* --- raw PKCS#11 ---------------------------------------------------------- */

static void
p11_setup(void)
{
	CK_C_GetFunctionList getfl;
	CK_C_INITIALIZE_ARGS ia = { .flags = CKF_OS_LOCKING_OK };
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	void *h;
	CK_RV rv;
	size_t len = strlen(opt_token);

	if ((h = dlopen(opt_module, RTLD_NOW | RTLD_LOCAL)) == NULL)
		die("cannot dlopen", opt_module, 0);
	if ((getfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList")) == NULL ||
	    getfl(&p11) != CKR_OK)
		die("no C_GetFunctionList in", opt_module, 0);
	if ((rv = p11->C_Initialize(&ia)) != CKR_OK)
		die("C_Initialize failed:", opt_module, rv);
	if ((rv = p11->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
		die("C_GetSlotList failed:", opt_module, rv);
	for (i = 0; i < n; i++) {
		if (p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (len <= sizeof(ti.label) && memcmp(ti.label, opt_token, len) == 0 &&
		    (len == sizeof(ti.label) || ti.label[len] == ' '))
			break;
	}
	if (i == n)
		die("token not found:", opt_token, 0);
	slot = slots[i];
	key_id[0] = opt_rsa ? 0x01 : 0x03; /* the fixture's rsa2048 and p256 */
}

static CK_OBJECT_HANDLE
p11_find_key(CK_SESSION_HANDLE s)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, key_id, sizeof(key_id) },
	};
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	CK_ULONG found = 0;
	CK_RV rv;

	if ((rv = p11->C_FindObjectsInit(s, tmpl, 2)) != CKR_OK ||
	    (rv = p11->C_FindObjects(s, &key, 1, &found)) != CKR_OK)
		die("C_FindObjects failed", NULL, rv);
	p11->C_FindObjectsFinal(s);
	if (found != 1)
		die("no private key with id", opt_rsa ? "01" : "03", 0);
	return key;
}

static void *
p11_worker(void *arg)
{
	struct worker *w = arg;
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM mech;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_BYTE digest[32], sig[512];
	CK_ULONG sig_len;
	CK_RV rv;

	memset(digest, 0x5a, sizeof(digest));
	if (opt_rsa) {
		mech.mechanism = CKM_RSA_PKCS_PSS;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	} else {
		mech.mechanism = CKM_ECDSA;
		mech.pParameter = NULL;
		mech.ulParameterLen = 0;
	}
	if ((rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		die("C_OpenSession failed:", opt_module, rv);
	/* Login state is per application: the first thread logs in. */
	rv = p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)opt_pin, strlen(opt_pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login failed:", opt_module, rv);
	key = p11_find_key(s);
	pthread_barrier_wait(&start_barrier);
	while (more()) {
		sig_len = sizeof(sig);
		if ((rv = p11->C_SignInit(s, &mech, key)) != CKR_OK ||
		    (rv = p11->C_Sign(s, digest, sizeof(digest), sig, &sig_len)) != CKR_OK) {
			fprintf(stderr, "sign_bench: C_Sign: 0x%lx\n", rv);
			w->failed = 1;
			break;
		}
		w->done++;
	}
	p11->C_CloseSession(s);
	return NULL;
}

/* --- libmtls-agent -------------------------------------------------------- */

static void *
agent_worker(void *arg)
{
	/* RFC 8446 4.4.3: 64 spaces, the context string, 0, the transcript hash. */
	static const char ctx[] = "TLS 1.3, client CertificateVerify";
	unsigned char content[64 + sizeof(ctx) + 32], *sig = NULL;
	uint16_t scheme =
	    opt_rsa ? MTLS_AGENT_RSA_PSS_RSAE_SHA256 : MTLS_AGENT_ECDSA_SECP256R1_SHA256;
	struct worker *w = arg;
	mtls_agent *a = NULL;
	size_t sig_len;
	int r;

	memset(content, 0x20, 64);
	memcpy(content + 64, ctx, sizeof(ctx)); /* with its NUL */
	memset(content + 64 + sizeof(ctx), 0x5a, 32);
	if ((r = mtls_agent_connect(opt_socket, &a)) != 0) {
		fprintf(stderr, "sign_bench: connect: %s\n", mtls_agent_strerror(r));
		exit(1);
	}
	pthread_barrier_wait(&start_barrier);
	while (more()) {
		r = mtls_agent_sign(a, opt_ident, scheme, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
				    content, sizeof(content), &sig, &sig_len);
		if (r == MTLS_ERR_NO_IDENTITY && opt_refused) {
			w->done++;
			continue;
		}
		if (r != 0) {
			fprintf(stderr, "sign_bench: sign: %s (%s)\n", mtls_agent_strerror(r),
				mtls_agent_last_message());
			w->failed = 1;
			break;
		}
		free(sig);
		w->done++;
	}
	mtls_agent_free(a);
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr,
		"usage: sign_bench --backend pkcs11|agent --alg rsa2048|p256 [--threads N]\n"
		"         [--seconds S | --count N] (pkcs11: --module SO --token LABEL --pin PIN;\n"
		"         agent: --socket PATH --identity NAME)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "backend", 1, NULL, 'b' }, { "module", 1, NULL, 'm' },
		{ "token", 1, NULL, 't' },   { "pin", 1, NULL, 'p' },
		{ "socket", 1, NULL, 's' },  { "identity", 1, NULL, 'i' },
		{ "alg", 1, NULL, 'a' },     { "threads", 1, NULL, 'n' },
		{ "seconds", 1, NULL, 'S' }, { "count", 1, NULL, 'c' },
		{ "refused", 0, NULL, 'r' }, { NULL, 0, NULL, 0 },
	};
	struct worker *w;
	unsigned long total = 0;
	unsigned int i;
	double t0, t1;
	int c, agent, failed = 0;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'b': opt_backend = optarg; break;
		case 'm': opt_module = optarg; break;
		case 't': opt_token = optarg; break;
		case 'p': opt_pin = optarg; break;
		case 's': opt_socket = optarg; break;
		case 'i': opt_ident = optarg; break;
		case 'a':
			if (strcmp(optarg, "rsa2048") == 0)
				opt_rsa = 1;
			else if (strcmp(optarg, "p256") == 0)
				opt_rsa = 0;
			else
				usage();
			break;
		case 'n': opt_threads = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'S': opt_seconds = strtod(optarg, NULL); break;
		case 'c': opt_count = strtoul(optarg, NULL, 10); break;
		case 'r': opt_refused = 1; break;
		default: usage();
		}
	}
	if (opt_backend == NULL || opt_rsa < 0 || opt_threads == 0 || opt_threads > 256 ||
	    opt_seconds <= 0)
		usage();
	agent = strcmp(opt_backend, "agent") == 0;
	if (agent) {
		if (opt_ident == NULL)
			usage();
	} else if (strcmp(opt_backend, "pkcs11") == 0) {
		if (opt_module == NULL || opt_token == NULL || opt_pin == NULL)
			usage();
		p11_setup();
	} else {
		usage();
	}
	if ((w = calloc(opt_threads, sizeof(*w))) == NULL)
		return 1;
	pthread_barrier_init(&start_barrier, NULL, opt_threads + 1);
	for (i = 0; i < opt_threads; i++)
		if (pthread_create(&w[i].th, NULL, agent ? agent_worker : p11_worker, &w[i]) != 0)
			return 1;
	/* Sessions are open and logged in, handles connected: go. */
	pthread_barrier_wait(&start_barrier);
	t0 = now();
	if (opt_count == 0) {
		struct timespec d = { (time_t)opt_seconds,
				      (long)((opt_seconds - (double)(time_t)opt_seconds) * 1e9) };

		while (nanosleep(&d, &d) != 0 && errno == EINTR)
			;
		__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	}
	for (i = 0; i < opt_threads; i++) {
		pthread_join(w[i].th, NULL);
		total += w[i].done;
		failed |= w[i].failed;
	}
	t1 = now();
	if (!agent)
		p11->C_Finalize(NULL);
	if (failed)
		return 1;
	printf("rate %.1f count %lu seconds %.3f\n", (double)total / (t1 - t0), total, t1 - t0);
	free(w);
	return 0;
}
