/*
 * mtls-agentctl sign: a signature over content from a file or standard input.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"

/* Every public scheme, for listing the valid names in a usage error. */
static const uint16_t all_schemes[] = {
	MTLS_AGENT_RSA_PSS_RSAE_SHA256,	   MTLS_AGENT_RSA_PSS_RSAE_SHA384,
	MTLS_AGENT_RSA_PSS_RSAE_SHA512,	   MTLS_AGENT_RSA_PKCS1_SHA256,
	MTLS_AGENT_RSA_PKCS1_SHA384,	   MTLS_AGENT_RSA_PKCS1_SHA512,
	MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_ECDSA_SECP384R1_SHA384,
};

/*
 * Reads all of fd into a malloc'd buffer, refusing more than CONTENT_MAX.
 * Returns 0, -1 with errno set, or 1 when the input is too large.
 */
static int
read_content(int fd, unsigned char **out, size_t *outlen)
{
	unsigned char *buf;
	size_t len = 0;
	struct stat sb;
	ssize_t n;

	*out = NULL;
	*outlen = 0;
	/* A regular file's size is known before a single byte is read. */
	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > CONTENT_MAX)
		return 1;
	/* One spare byte shows that a stream was longer than allowed. */
	if ((buf = malloc(CONTENT_MAX + 1)) == NULL)
		return -1;
	while (len < CONTENT_MAX + 1) {
		n = read(fd, buf + len, CONTENT_MAX + 1 - len);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -1;
		}
		len += (size_t)n;
	}
	if (len > CONTENT_MAX) {
		free(buf);
		return 1;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

int
cmd_sign(int argc, char **argv)
{
	static const struct option opts[] = { { "identity", required_argument, NULL, 'I' },
					      { "scheme", required_argument, NULL, 'S' },
					      { "purpose", required_argument, NULL, 'P' },
					      { "in", required_argument, NULL, 'i' },
					      { "out", required_argument, NULL, 'o' },
					      { "hex", no_argument, NULL, 'x' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *identity = NULL, *scheme_s = NULL, *purpose_s = NULL;
	const char *in = NULL, *outpath = NULL, *name;
	unsigned char *content = NULL, *sig = NULL;
	size_t content_len = 0, sig_len = 0, i;
	int c, r, ret, hex = 0, purpose, fd = -1;
	char names[512], *hexsig = NULL;
	mtls_agent *a = NULL;
	uint16_t scheme;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'I': identity = optarg; break;
		case 'S': scheme_s = optarg; break;
		case 'P': purpose_s = optarg; break;
		case 'i': in = optarg; break;
		case 'o': outpath = optarg; break;
		case 'x': hex = 1; break;
		default:
			return bad_option("sign", argv,
					  "sign --identity NAME "
					  "--scheme SCHEME --purpose PURPOSE "
					  "[--in FILE] [--out FILE] [--hex]");
		}
	}
	if (optind != argc)
		return usage_error("sign", "unexpected argument '%s'", argv[optind]);
	if (identity == NULL || scheme_s == NULL || purpose_s == NULL)
		return usage_error("sign", "--identity, --scheme and --purpose are required");
	if ((scheme = mtls_agent_scheme_from_name(scheme_s)) == 0) {
		names[0] = '\0';
		for (i = 0; i < sizeof(all_schemes) / sizeof(all_schemes[0]); i++)
			if ((name = mtls_agent_scheme_name(all_schemes[i])) != NULL)
				append_names(names, sizeof(names), name);
		return usage_error("sign", "unknown scheme '%s' (valid: %s)", scheme_s, names);
	}
	if ((purpose = mtls_agent_purpose_from_name(purpose_s)) == 0) {
		names[0] = '\0';
		for (c = 1; c < 32; c++)
			if ((name = mtls_agent_purpose_name(c)) != NULL)
				append_names(names, sizeof(names), name);
		return usage_error("sign", "unknown purpose '%s' (valid: %s)", purpose_s, names);
	}

	/* Content is read and checked before the agent is bothered. */
	if (in != NULL && strcmp(in, "-") != 0) {
		if ((fd = open(in, O_RDONLY | O_CLOEXEC)) == -1) {
			errmsg("sign", "cannot open %s: %s", in, strerror(errno));
			return EXIT_FAILED;
		}
	}
	r = read_content(fd == -1 ? STDIN_FILENO : fd, &content, &content_len);
	if (fd != -1)
		close(fd);
	fd = -1;
	if (r == 1) {
		errmsg("sign", "%s: content larger than %d bytes, the agent's limit",
		       in != NULL ? in : "standard input", CONTENT_MAX);
		return EXIT_FAILED;
	} else if (r != 0) {
		errmsg("sign", "cannot read %s: %s", in != NULL ? in : "standard input",
		       strerror(errno));
		return EXIT_FAILED;
	}

	if ((ret = connect_agent("sign", &a)) != 0)
		goto out;
	if ((r = mtls_agent_sign(a, identity, scheme, purpose, content, content_len, &sig,
				 &sig_len)) != 0) {
		ret = agent_error("sign", r, NULL);
		goto out;
	}
	if (outpath != NULL && strcmp(outpath, "-") != 0) {
		if ((fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) == -1) {
			errmsg("sign", "cannot create %s: %s", outpath, strerror(errno));
			ret = EXIT_FAILED;
			goto out;
		}
	}
	if (hex) {
		if ((hexsig = hex_string(sig, sig_len, "", 0)) == NULL) {
			ret = agent_error("sign", MTLS_ERR_ALLOC, NULL);
			goto out;
		}
		r = write_all(fd == -1 ? STDOUT_FILENO : fd, hexsig, strlen(hexsig));
		if (r == 0)
			r = write_all(fd == -1 ? STDOUT_FILENO : fd, "\n", 1);
	} else {
		r = write_all(fd == -1 ? STDOUT_FILENO : fd, sig, sig_len);
	}
	if (r != 0 || (fd != -1 && close(fd) != 0)) {
		errmsg("sign", "cannot write %s: %s", outpath != NULL ? outpath : "standard output",
		       strerror(errno));
		fd = -1;
		ret = EXIT_FAILED;
		goto out;
	}
	fd = -1;
	ret = EXIT_OK;
out:
	if (fd != -1)
		close(fd);
	free(hexsig);
	free(sig);
	free(content);
	mtls_agent_free(a);
	return ret;
}
