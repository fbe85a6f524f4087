/*
 * mtls-agentctl lock, unlock: the agent's passphrase lock.
 */
#include "config.h"

#include <getopt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "secmem.h"

static int
lock_command(int argc, char **argv, int unlock)
{
	static const struct option opts[] = { { "stdin", no_argument, NULL, 'i' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *cmd = unlock ? "unlock" : "lock";
	char *pass = NULL, *check = NULL;
	struct secret_src src = { cmd, -1, "" };
	int c, r, ret, from_stdin = 0;
	mtls_agent *a = NULL;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'i': from_stdin = 1; break;
		default:
			return bad_option(cmd, argv,
					  unlock ? "unlock [--stdin]" : "lock [--stdin]");
		}
	}
	if (optind != argc)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent(cmd, &a)) != 0)
		return ret;
	if ((pass = mtls_secure_alloc(PIN_MAX + 2)) == NULL ||
	    (check = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error(cmd, MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if ((ret = secret_src_open(&src, cmd, from_stdin, NULL)) != 0)
		goto out;
	if (unlock)
		ret = read_secret(&src, "Passphrase to unlock the agent: ", "passphrase", pass);
	else
		ret = read_new_secret(&src, "Passphrase to lock the agent: ",
				      "Retype the passphrase: ", "passphrase", pass, check);
	if (ret != 0)
		goto out;
	mtls_secure_free(check);
	check = NULL;
	if (*pass == '\0') {
		/* The library would call it a malformed PIN. */
		errmsg(cmd, "empty passphrase");
		ret = EXIT_FAILED;
		goto out;
	}
	r = unlock ? mtls_agent_unlock(a, pass) : mtls_agent_lock(a, pass);
	mtls_secure_free(pass);
	pass = NULL;
	if (r != 0) {
		ret = agent_error(cmd, r, NULL);
		goto out;
	}
	if (!quiet)
		printf(unlock ? "agent unlocked\n" : "agent locked\n");
	ret = EXIT_OK;
out:
	mtls_secure_free(pass);
	mtls_secure_free(check);
	mtls_agent_free(a);
	return ret;
}

int
cmd_lock(int argc, char **argv)
{
	return lock_command(argc, argv, 0);
}

int
cmd_unlock(int argc, char **argv)
{
	return lock_command(argc, argv, 1);
}
