/*
 * mtls-agentctl key-file: a PEM key file that names an agent identity, for
 * programs that only take a file name (curl, python's ssl, nginx upstream,
 * HAProxy...).  The file holds no key: only the identity's mtls-agent: URI
 * under its own PEM label, which the provider's decoder turns into an
 * agent-backed key when it is loaded through openssl.cnf
 * (mtls-agent-provider(7)).  With --cert the certificate and its chain
 * follow, so one file can serve as both.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "ctl.h"

/* The label the provider's decoder looks for (provider_decoder.c). */
#define KEY_FILE_LABEL "MTLS AGENT KEY"
#define SYNOPSIS       "key-file NAME [--cert]"

/* Percent-escapes everything but unreserved URI characters. */
static int
uri_append(char *dst, size_t len, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*pos + 4 > len)
			return -1;
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p) != NULL) {
			dst[(*pos)++] = (char)*p;
		} else {
			dst[(*pos)++] = '%';
			dst[(*pos)++] = hex[*p >> 4];
			dst[(*pos)++] = hex[*p & 15];
		}
	}
	dst[*pos] = '\0';
	return 0;
}

int
cmd_key_file(int argc, char **argv)
{
	static const struct option opts[] = { { "cert", no_argument, NULL, 'c' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_identity *ids = NULL, *id = NULL;
	char uri[3 * 2 * 4096 + 64];
	size_t n = 0, i, pos;
	mtls_agent *a = NULL;
	int c, r, ret, with_cert = 0;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (c == 'c')
			with_cert = 1;
		else if (!common_option(c, optarg))
			return bad_option("key-file", argv, SYNOPSIS);
	}
	if (optind + 1 != argc)
		return usage_error("key-file", "name one identity (usage: " SYNOPSIS ")");
	if (socket_path != NULL && socket_path[0] != '/')
		return usage_error("key-file", "the socket path in a key file must be absolute");
	if ((ret = connect_agent("key-file", &a)) != 0)
		return ret;
	/* Only a name the agent offers: a typo would otherwise surface as a
	 * failed TLS handshake much later. */
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("key-file", r, NULL);
		goto out;
	}
	for (i = 0; i < n && id == NULL; i++)
		if (strcmp(ids[i].name, argv[optind]) == 0)
			id = &ids[i];
	if (id == NULL) {
		errmsg("key-file", "the agent has no identity named '%s'", safe(argv[optind]));
		ret = EXIT_FAILED;
		goto out;
	}
	pos = strlen(strcpy(uri, "mtls-agent:"));
	r = uri_append(uri, sizeof(uri), &pos, id->name);
	if (r == 0 && socket_path != NULL) {
		r = pos + 8 < sizeof(uri) ? 0 : -1;
		if (r == 0) {
			memcpy(uri + pos, "?socket=", 9);
			pos += 8;
			r = uri_append(uri, sizeof(uri), &pos, socket_path);
		}
	}
	if (r != 0) {
		errmsg("key-file", "identity name or socket path too long");
		ret = EXIT_FAILED;
		goto out;
	}
	if (PEM_write(stdout, KEY_FILE_LABEL, "", (unsigned char *)uri, (long)pos) <= 0 ||
	    (with_cert && id->cert_der != NULL &&
	     PEM_write(stdout, "CERTIFICATE", "", id->cert_der, (long)id->cert_der_len) <= 0)) {
		errmsg("key-file", "cannot write the key file");
		ret = EXIT_FAILED;
		goto out;
	}
	for (i = 0; with_cert && i < id->n_chain; i++) {
		if (PEM_write(stdout, "CERTIFICATE", "", id->chain_der[i],
			      (long)id->chain_der_len[i]) <= 0) {
			errmsg("key-file", "cannot write the key file");
			ret = EXIT_FAILED;
			goto out;
		}
	}
	if (fflush(stdout) != 0) {
		errmsg("key-file", "cannot write the key file");
		ret = EXIT_FAILED;
	}
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}
