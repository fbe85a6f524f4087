/*
 * mtls-agentctl login, logout.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "secmem.h"

int
cmd_login(int argc, char **argv)
{
	struct mtls_agent_identity *ids = NULL;
	const char *identity = NULL, *pin_file = NULL, *who;
	int r, ret, from_stdin = 0, retries = -1;
	mtls_agent *a = NULL;
	char *pin = NULL, *prompt = NULL;
	char extra[64];
	size_t n = 0;

	if ((ret = pin_command_line(argc, argv, "login", &identity, &from_stdin, &pin_file)) != 0)
		return ret;

	/* Find out the agent is there before asking anyone for a PIN. */
	if ((ret = connect_agent("login", &a)) != 0)
		return ret;
	if ((pin = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error("login", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if (from_stdin) {
		r = read_pin_line(STDIN_FILENO, pin);
	} else if (pin_file != NULL) {
		r = read_pin_file(pin_file, pin);
	} else {
		who = identity;
		if ((who == NULL || *who == '\0') && mtls_agent_list(a, &ids, &n) == 0 && n > 0)
			who = ids[0].token_label;
		if (who == NULL || *who == '\0')
			who = "token";
		if (asprintf(&prompt, "PIN for %s: ", safe(who)) == -1) {
			prompt = NULL;
			ret = agent_error("login", MTLS_ERR_ALLOC, NULL);
			goto out;
		}
		r = read_pin_tty(prompt, pin);
	}
	if (r != 0) {
		if (errno == E2BIG)
			ret = agent_error("login", MTLS_ERR_PIN_INVALID, NULL);
		else if (!from_stdin && pin_file == NULL && errno == ENOTTY) {
			errmsg("login", "cannot read the PIN: %s", no_terminal_hint("login"));
			ret = EXIT_FAILED;
		} else if (!from_stdin && pin_file == NULL && errno == ECANCELED) {
			errmsg("login", "the askpass program %s gave no PIN", askpass_program());
			ret = EXIT_FAILED;
		} else {
			errmsg("login", "cannot read the PIN from %s: %s",
			       from_stdin	  ? "standard input"
			       : pin_file != NULL ? pin_file
						  : "/dev/tty",
			       strerror(errno));
			ret = EXIT_FAILED;
		}
		goto out;
	}
	r = mtls_agent_login(a, identity, pin, &retries);
	mtls_secure_free(pin);
	pin = NULL;
	if (r != 0) {
		tries_left(r, retries, extra, sizeof(extra));
		ret = agent_error("login", r, extra);
		goto out;
	}
	if (!quiet)
		printf("logged in\n");
	ret = EXIT_OK;
out:
	mtls_secure_free(pin);
	free(prompt);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}

int
cmd_logout(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *identity = NULL;
	mtls_agent *a = NULL;
	int c, r, ret;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1)
		if (!common_option(c, optarg))
			return bad_option("logout", argv, "logout [IDENTITY]");
	if (optind < argc)
		identity = argv[optind++];
	if (optind != argc)
		return usage_error("logout", "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent("logout", &a)) != 0)
		return ret;
	if ((r = mtls_agent_logout(a, identity)) != 0)
		ret = agent_error("logout", r, NULL);
	else if (!quiet)
		printf("logged out\n");
	mtls_agent_free(a);
	return ret;
}
