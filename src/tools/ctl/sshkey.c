/*
 * mtls-agentctl ssh-pubkey: the identities' public keys as OpenSSH
 * authorized_keys lines (what ssh-add -L prints through the agent's SSH
 * socket), from the certificates LIST returns.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "ctl.h"
#include "msg_ssh_key.h"
#include "wbuf.h"

/* Prints one identity's line; 0, or 1 when its key has no SSH form. */
static int
print_line(const struct mtls_agent_identity *id)
{
	const unsigned char *p = id->cert_der;
	char comment[512], *line = NULL;
	struct wbuf *b = NULL;
	X509 *x = NULL;
	int r = 1;

	if (p == NULL || (x = d2i_X509(NULL, &p, (long)id->cert_der_len)) == NULL)
		goto out;
	if ((b = wbuf_new()) == NULL || ssh_key_blob_put(b, X509_get0_pubkey(x)) != 0)
		goto out;
	/* The comment ssh-add -L shows: the certificate's subject. */
	if (X509_NAME_oneline(X509_get_subject_name(x), comment, sizeof(comment)) == NULL)
		snprintf(comment, sizeof(comment), "%s", id->name);
	if (ssh_pubkey_line(wbuf_ptr(b), wbuf_len(b), comment, &line) != 0)
		goto out;
	printf("%s\n", safe(line));
	r = 0;
out:
	free(line);
	wbuf_free(b);
	X509_free(x);
	return r;
}

int
cmd_ssh_pubkey(int argc, char **argv)
{
	static const struct option opts[] = { { NULL, 0, NULL, 0 } };
	struct mtls_agent_identity *ids = NULL;
	const char *want = NULL;
	mtls_agent *a = NULL;
	size_t n = 0, i, shown = 0;
	int ch, r, ret;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1)
		return usage_error("ssh-pubkey", "unknown option");
	if (argc - optind > 1)
		return usage_error("ssh-pubkey", "at most one IDENTITY");
	if (argc - optind == 1)
		want = argv[optind];
	if ((ret = connect_agent("ssh-pubkey", &a)) != 0)
		return ret;
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("ssh-pubkey", r, NULL);
		goto out;
	}
	ret = EXIT_OK;
	for (i = 0; i < n; i++) {
		if (want != NULL && strcmp(ids[i].name, want) != 0)
			continue;
		if (print_line(&ids[i]) == 0) {
			shown++;
		} else if (want != NULL) {
			errmsg("ssh-pubkey",
			       "identity %s: its key has no SSH form (RSA, ECDSA P-256 and P-384 "
			       "have)",
			       safe(want));
			ret = EXIT_FAILED;
		}
		if (want != NULL)
			break;
	}
	if (want != NULL && i == n) {
		errmsg("ssh-pubkey", "no identity named %s", safe(want));
		ret = EXIT_FAILED;
	} else if (want == NULL && shown == 0) {
		errmsg("ssh-pubkey", "no identity has an SSH key");
		ret = EXIT_FAILED;
	}
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}
