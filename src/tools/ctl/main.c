/*
 * mtls-agentctl: the command table and the options before the command.
 * Each command is in its own file (see ctl.h).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"

static void
usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [-s|--socket PATH] [-q|--quiet] COMMAND [ARGS]\n"
		   "       " PROG " -h|--help | -V|--version\n"
		   "commands:\n"
		   "  list [--pem] [--json]\n"
		   "  login [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		   "  logout [IDENTITY]\n"
		   "  status\n"
		   "  change-pin [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		   "  unblock-pin [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		   "  lock [--stdin]\n"
		   "  unlock [--stdin]\n"
		   "  sign --identity NAME --scheme SCHEME --purpose PURPOSE\n"
		   "       [--in FILE] [--out FILE] [--hex]\n"
		   "  " CONNECT_SYNOPSIS "\n"
		   "  ssh-pubkey [IDENTITY]\n"
		   "  key-file NAME [--cert]\n"
		   "  " ENROLL_USAGE "\n"
		   "  " RENEW_USAGE "\n"
		   "  " IMPORT_USAGE "\n"
		   "  " DELETE_USAGE "\n");
}

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *synopsis; /* after "usage: mtls-agentctl [-s PATH] [-q] " */
} commands[] = {
	{ "list", cmd_list, "list [--pem] [--json]" },
	{ "login", cmd_login, "login [IDENTITY] [--pin-stdin | --pin-file FILE]" },
	{ "logout", cmd_logout, "logout [IDENTITY]" },
	{ "status", cmd_status, "status" },
	{ "change-pin", cmd_change_pin, "change-pin [IDENTITY] [--pin-stdin | --pin-file FILE]" },
	{ "unblock-pin", cmd_unblock_pin,
	  "unblock-pin [IDENTITY] [--pin-stdin | --pin-file FILE]" },
	{ "lock", cmd_lock, "lock [--stdin]" },
	{ "unlock", cmd_unlock, "unlock [--stdin]" },
	{ "sign", cmd_sign,
	  "sign --identity NAME --scheme SCHEME --purpose PURPOSE\n"
	  "       [--in FILE] [--out FILE] [--hex]" },
	{ "connect", cmd_connect, CONNECT_SYNOPSIS },
	{ "ssh-pubkey", cmd_ssh_pubkey, "ssh-pubkey [IDENTITY]" },
	{ "key-file", cmd_key_file, "key-file NAME [--cert]" },
	{ "enroll", cmd_enroll, ENROLL_USAGE },
	{ "renew", cmd_renew, RENEW_USAGE },
	{ "import-cert", cmd_import_cert, IMPORT_USAGE },
	{ "delete-key", cmd_delete_key, DELETE_USAGE },
};

/*
 * `COMMAND -h` or `COMMAND --help` (before any "--"): that command's
 * usage on stdout.  Looked for before the command parses its options, so
 * every command answers it the same way and none runs.
 */
static int
wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { "help", no_argument, NULL, 'h' },
					      { "version", no_argument, NULL, 'V' },
					      { NULL, 0, NULL, 0 } };
	size_t i;
	int c;

	opterr = 0;
	/* "+": options after the command belong to the command. */
	while ((c = getopt_long(argc, argv, "+s:qhV", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf(PROG " " PACKAGE_VERSION "\n"); return EXIT_OK;
		default:
			if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
				fprintf(stderr,
					PROG ": invalid option or missing "
					     "argument '-%c' (try '" PROG " --help')\n",
					optopt);
			else
				fprintf(stderr,
					PROG ": invalid option or missing "
					     "argument '%s' (try '" PROG " --help')\n",
					argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, PROG ": no command given (try '" PROG " --help')\n");
		return EXIT_USAGE;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			argc -= optind;
			argv += optind;
			if (wants_help(argc, argv)) {
				printf("usage: " PROG " [-s|--socket PATH] [-q|--quiet] %s\n",
				       commands[i].synopsis);
				return EXIT_OK;
			}
			optind = 0; /* restart getopt for the command's options */
			return commands[i].fn(argc, argv);
		}
	}
	fprintf(stderr, PROG ": unknown command '%s' (try '" PROG " --help')\n", argv[optind]);
	return EXIT_USAGE;
}
