/*
 * mtls-agentctl change-pin, unblock-pin.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "secmem.h"

static int
set_pin_command(int argc, char **argv, int unblock)
{
	const char *cmd = unblock ? "unblock-pin" : "change-pin";
	const char *identity = NULL, *pin_file = NULL;
	char *old = NULL, *new_pin = NULL, *check = NULL;
	static const char *const what_change[] = { "Current PIN", "New PIN", "Retype the new PIN" };
	static const char *const what_unblock[] = { "PUK (SO PIN)", "New PIN",
						    "Retype the new PIN" };
	char *prompts[3] = { NULL, NULL, NULL };
	struct secret_src src = { cmd, -1, "" };
	int r, ret, from_stdin = 0, retries = -1;
	mtls_agent *a = NULL;
	char extra[64];

	if ((ret = pin_command_line(argc, argv, cmd, &identity, &from_stdin, &pin_file)) != 0)
		return ret;

	/* Find out the agent is there before asking anyone for a PIN. */
	if ((ret = connect_agent(cmd, &a)) != 0)
		return ret;
	if ((old = mtls_secure_alloc(PIN_MAX + 2)) == NULL ||
	    (new_pin = mtls_secure_alloc(PIN_MAX + 2)) == NULL ||
	    (check = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error(cmd, MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if ((ret = secret_src_open(&src, cmd, from_stdin, pin_file)) != 0)
		goto out;
	if (src.fd == -1 &&
	    (r = prompts_for(a, identity, unblock ? what_unblock : what_change, prompts, 3)) != 0) {
		ret = agent_error(cmd, r, NULL);
		goto out;
	}
	if ((ret = read_secret(&src, prompts[0], unblock ? "PUK" : "PIN", old)) != 0 ||
	    (ret = read_new_secret(&src, prompts[1], prompts[2], "new PIN", new_pin, check)) != 0)
		goto out;
	secret_src_close(&src);
	mtls_secure_free(check);
	check = NULL;
	if (unblock)
		r = mtls_agent_unblock_pin(a, identity, old, new_pin, &retries);
	else
		r = mtls_agent_change_pin(a, identity, old, new_pin, &retries);
	mtls_secure_free(old);
	mtls_secure_free(new_pin);
	old = new_pin = NULL;
	if (r != 0) {
		tries_left(r, retries, extra, sizeof(extra));
		ret = agent_error(cmd, r, extra);
		goto out;
	}
	if (!quiet)
		printf(unblock ? "PIN unblocked\n" : "PIN changed\n");
	ret = EXIT_OK;
out:
	secret_src_close(&src);
	mtls_secure_free(old);
	mtls_secure_free(new_pin);
	mtls_secure_free(check);
	free(prompts[0]);
	free(prompts[1]);
	free(prompts[2]);
	mtls_agent_free(a);
	return ret;
}

int
cmd_change_pin(int argc, char **argv)
{
	return set_pin_command(argc, argv, 0);
}

int
cmd_unblock_pin(int argc, char **argv)
{
	return set_pin_command(argc, argv, 1);
}
