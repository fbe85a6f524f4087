/*
 * mtls-agentctl status.
 */
#include "config.h"

#include <getopt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

int
cmd_status(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_status st = { 0 };
	mtls_agent *a = NULL;
	int c, r, ret;
	uint32_t up;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1)
		if (!common_option(c, optarg))
			return bad_option("status", argv, "status");
	if (optind != argc)
		return usage_error("status", "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent("status", &a)) != 0)
		return ret;
	if ((r = mtls_agent_get_status(a, &st)) != 0) {
		ret = agent_error("status", r, NULL);
		goto out;
	}
	up = st.uptime;
	printf("version:      %s\n", safe(st.version));
	printf("pid:          %u\n", st.pid);
	printf("uptime:       %u s (%ud %02uh %02um %02us)\n", up, up / 86400, up / 3600 % 24,
	       up / 60 % 60, up % 60);
	printf("connections:  %u\n", st.connections);
	printf("identities:   %u\n", st.identities);
	printf("tokens:       %u present, %u logged in\n", st.tokens_present, st.tokens_logged_in);
	if (st.identities_expiring > 0)
		printf("expiring:     %u certificate%s expired or expiring soon\n",
		       st.identities_expiring, st.identities_expiring == 1 ? "" : "s");
out:
	mtls_agent_status_clear(&st);
	mtls_agent_free(a);
	return ret;
}
