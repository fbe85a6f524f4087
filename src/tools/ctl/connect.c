/*
 * mtls-agentctl connect: an HTTPS request (or a bare TLS handshake) made
 * with an agent identity, through libcurl (so proxies, IPv6, redirects and
 * HTTP/2 work as in curl).  The TLS side, and the one-line diagnosis of a
 * failure, is in connect_tls.c.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "connect.h"
#include "ctl.h"

/* The synopsis in one line, for usage errors. */
#define CONNECT_USAGE                                                                              \
	"connect [--identity NAME] [--ca-file FILE | --ca-dir DIR] [--tls1.2 | --tls1.3] "         \
	"[--header 'NAME: VALUE']... [--output FILE] [-L] [--proxy URL] [--timeout SECONDS] "      \
	"[--max-time SECONDS] [-v] https://HOST[:PORT][/PATH] | HOST:PORT"
#define CONNECT_MAX_HEADERS 64
#define HTTP_ERRBODY_MAX    (16 * 1024)
#define MAX_REDIRECTS	    10
/* How long a bare handshake waits for the server's verdict on our
 * certificate, which TLS 1.3 delivers only after the client finished. */
#define RAW_VERDICT_MS 2000

struct connect_opts {
	const char *want_identity, *ca_file, *ca_dir, *outpath, *proxy;
	const char *headers[CONNECT_MAX_HEADERS];
	size_t n_headers;
	int version; /* 0, '2' or '3' */
	int verbose, follow;
	long timeout, max_time; /* seconds, 0: none */
	char *url;		/* what libcurl is given */
	int bare;		/* HOST:PORT: the handshake only */
};

/* Where the body goes: the output for a 2xx answer, else memory (the
 * error page, for its title). */
struct body {
	CURL *h;
	const char *outpath;
	int fd; /* -1: not opened yet */
	int write_errno;
	char err[HTTP_ERRBODY_MAX + 1];
	size_t err_len;
	char status[512]; /* the last status line */
};

static int
header_ok(const char *h)
{
	const char *colon = strchr(h, ':'), *p;

	if (colon == NULL || colon == h)
		return 0;
	for (p = h; p < colon; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && strchr("!#$%&'*+-.^_`|~", *p) == NULL)
			return 0;
	for (p = colon + 1; *p != '\0'; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
			return 0;
	return 1;
}

static int
seconds(const char *arg, const char *what, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(arg, &end, 10);
	if (*arg < '0' || *arg > '9' || *end != '\0' || errno != 0 || *out > 86400)
		return usage_error("connect", "bad %s '%s' (seconds, 0 to 86400; 0: no limit)",
				   what, safe(arg));
	return 0;
}

/*
 * The URL for libcurl from "https://HOST[:PORT][/PATH]" or "HOST:PORT"
 * (IPv6 in brackets).  libcurl parses it; what it would accept but we do
 * not (another scheme, a user name) is refused here.  0 or a usage error.
 */
static int
target_url(const char *arg, struct connect_opts *o)
{
	char *scheme = NULL, *user = NULL;
	const char *port;
	CURLUcode uc;
	CURLU *u = NULL;
	int ret = EXIT_USAGE;

	if (strstr(arg, "://") == NULL) {
		/* HOST:PORT, nothing else */
		port = arg[0] == '[' ? strstr(arg, "]:") : strrchr(arg, ':');
		if (strcspn(arg, "/?#@") != strlen(arg))
			return usage_error("connect",
					   "'%s' is neither https://HOST[:PORT]/PATH nor HOST:PORT",
					   safe(arg));
		if (arg[0] != '[' && port != NULL && strchr(arg, ':') != port)
			return usage_error("connect", "IPv6 addresses go in brackets: '%s'",
					   safe(arg));
		if (port == NULL || port[arg[0] == '[' ? 2 : 1] == '\0')
			return usage_error("connect", "no port in '%s' (HOST:PORT)", safe(arg));
		o->bare = 1;
		if (asprintf(&o->url, "https://%s/", arg) == -1) {
			o->url = NULL;
			errmsg("connect", "out of memory");
			return EXIT_FAILED;
		}
	} else if ((o->url = strdup(arg)) == NULL) {
		errmsg("connect", "out of memory");
		return EXIT_FAILED;
	}
	if ((u = curl_url()) == NULL) {
		errmsg("connect", "out of memory");
		ret = EXIT_FAILED;
		goto out;
	}
	if ((uc = curl_url_set(u, CURLUPART_URL, o->url, 0)) != CURLUE_OK) {
		usage_error("connect", "bad URL '%s': %s", safe(arg), curl_url_strerror(uc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    strcasecmp(scheme, "https") != 0) {
		usage_error("connect", "unsupported URL '%s': only https:// is supported",
			    safe(arg));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
		usage_error("connect", "user names in URLs are not supported: '%s'", safe(arg));
		goto out;
	}
	ret = 0;
out:
	curl_free(scheme);
	curl_free(user);
	curl_url_cleanup(u);
	return ret;
}

static int
parse_options(int argc, char **argv, struct connect_opts *o)
{
	static const struct option opts[] = { { "identity", required_argument, NULL, 'I' },
					      { "ca-file", required_argument, NULL, 'C' },
					      { "ca-dir", required_argument, NULL, 'D' },
					      { "tls1.2", no_argument, NULL, '2' },
					      { "tls1.3", no_argument, NULL, '3' },
					      { "header", required_argument, NULL, 'H' },
					      { "output", required_argument, NULL, 'o' },
					      { "location", no_argument, NULL, 'L' },
					      { "proxy", required_argument, NULL, 'x' },
					      { "timeout", required_argument, NULL, 't' },
					      { "max-time", required_argument, NULL, 'm' },
					      { "verbose", no_argument, NULL, 'v' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	int c, r;

	while ((c = getopt_long(argc, argv, "s:qH:o:vL", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'I': o->want_identity = optarg; break;
		case 'C': o->ca_file = optarg; break;
		case 'D': o->ca_dir = optarg; break;
		case '2':
		case '3':
			if (o->version != 0 && o->version != c)
				return usage_error("connect",
						   "--tls1.2 and --tls1.3 exclude each other");
			o->version = c;
			break;
		case 'H':
			if (!header_ok(optarg))
				return usage_error("connect", "bad header '%s' (NAME: VALUE)",
						   safe(optarg));
			if (o->n_headers == CONNECT_MAX_HEADERS)
				return usage_error("connect", "more than %d headers",
						   CONNECT_MAX_HEADERS);
			o->headers[o->n_headers++] = optarg;
			break;
		case 'o': o->outpath = optarg; break;
		case 'L': o->follow = 1; break;
		case 'x': o->proxy = optarg; break;
		case 't':
			if ((r = seconds(optarg, "timeout", &o->timeout)) != 0)
				return r;
			break;
		case 'm':
			if ((r = seconds(optarg, "max-time", &o->max_time)) != 0)
				return r;
			break;
		case 'v': o->verbose = 1; break;
		default: return bad_option("connect", argv, CONNECT_USAGE);
		}
	}
	if (optind >= argc)
		return usage_error("connect", "no URL given (usage: %s)", CONNECT_USAGE);
	if (optind + 1 != argc)
		return usage_error("connect", "unexpected argument '%s'", argv[optind + 1]);
	if (o->ca_file != NULL && o->ca_dir != NULL)
		return usage_error("connect", "--ca-file and --ca-dir exclude each other");
	if ((r = target_url(argv[optind], o)) != 0)
		return r;
	if (o->bare && (o->n_headers > 0 || o->outpath != NULL || o->follow))
		return usage_error("connect", "--header, --output and --location need an "
					      "https:// URL");
	return 0;
}

/*
 * Picks the identity: the one named, or the agent's only one.  Refuses
 * before any network traffic when the token cannot sign (absent, logged
 * out, PIN locked), so that a request is never half made.  An
 * "mtls-agent:" URI is passed through unchecked: the agent resolves it.
 */
static int
choose_identity(const char *wanted, char **chosen)
{
	struct mtls_agent_identity *ids = NULL, *id = NULL;
	char names[1024] = "";
	mtls_agent *a = NULL;
	size_t n = 0, i;
	int r, ret;

	*chosen = NULL;
	if ((ret = connect_agent("connect", &a)) != 0)
		return ret;
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("connect", r, NULL);
		goto out;
	}
	for (i = 0; i < n; i++)
		append_names(names, sizeof(names), safe(ids[i].name));
	if (wanted != NULL && strncmp(wanted, "mtls-agent:", 11) == 0) {
		if ((*chosen = strdup(wanted)) == NULL)
			ret = agent_error("connect", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if (wanted == NULL) {
		if (n == 0) {
			errmsg("connect", "the agent offers no identities");
			ret = EXIT_FAILED;
			goto out;
		}
		if (n > 1) {
			ret = usage_error("connect",
					  "the agent offers several identities, "
					  "choose one with --identity: %s",
					  names);
			goto out;
		}
		id = &ids[0];
	} else {
		for (i = 0; i < n && id == NULL; i++)
			if (strcmp(ids[i].name, wanted) == 0)
				id = &ids[i];
		if (id == NULL) {
			errmsg("connect", "%s '%s' (the agent offers: %s)",
			       mtls_agent_strerror(MTLS_ERR_NO_IDENTITY), safe(wanted),
			       n > 0 ? names : "none");
			ret = EXIT_FAILED;
			goto out;
		}
	}
	if (id->cert_der == NULL) {
		errmsg("connect", "identity '%s' has no certificate", safe(id->name));
		ret = EXIT_FAILED;
		goto out;
	}
	if (id->flags & MTLS_AGENT_ID_PIN_LOCKED) {
		errmsg("connect", "%s for identity '%s': unblock it first",
		       mtls_agent_strerror(MTLS_ERR_PIN_LOCKED), safe(id->name));
		ret = EXIT_LOCKED;
		goto out;
	}
	if (!(id->flags & MTLS_AGENT_ID_TOKEN_PRESENT)) {
		errmsg("connect", "%s for identity '%s'",
		       mtls_agent_strerror(MTLS_ERR_TOKEN_ABSENT), safe(id->name));
		ret = EXIT_FAILED;
		goto out;
	}
	if (!(id->flags & MTLS_AGENT_ID_LOGGED_IN)) {
		errmsg("connect", "%s for identity '%s' (run '" PROG " login %s')",
		       mtls_agent_strerror(MTLS_ERR_LOGIN_REQUIRED), safe(id->name),
		       safe(id->name));
		ret = EXIT_LOGIN;
		goto out;
	}
	if ((*chosen = strdup(id->name)) == NULL) {
		ret = agent_error("connect", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	ret = EXIT_OK;
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}

void
blank_controls(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* The <title> of an HTML error page, which is where servers such as nginx
 * say why they refused ("400 The SSL certificate error"). */
static void
html_title(const char *body, char *out, size_t len)
{
	const char *s, *e;
	size_t n;

	out[0] = '\0';
	if ((s = strcasestr(body, "<title>")) == NULL)
		return;
	s += 7;
	if ((e = strcasestr(s, "</title>")) == NULL)
		return;
	n = (size_t)(e - s) < len - 1 ? (size_t)(e - s) : len - 1;
	memcpy(out, s, n);
	out[n] = '\0';
	blank_controls(out);
}

static int
is_2xx(CURL *h)
{
	long code = 0;

	return curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code >= 200 &&
	       code < 300;
}

/* The output is created only for a 2xx answer. */
static int
body_open(struct body *b)
{
	if (b->fd != -1)
		return 0;
	if (b->outpath == NULL || strcmp(b->outpath, "-") == 0) {
		b->fd = STDOUT_FILENO;
		return 0;
	}
	if ((b->fd = open(b->outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) == -1) {
		b->write_errno = errno;
		return -1;
	}
	return 0;
}

static size_t
body_write(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n, k;

	if (is_2xx(b->h)) {
		if (body_open(b) != 0 || write_all(b->fd, p, len) != 0) {
			if (b->write_errno == 0)
				b->write_errno = errno;
			return 0; /* libcurl stops with CURLE_WRITE_ERROR */
		}
		return len;
	}
	k = len < sizeof(b->err) - 1 - b->err_len ? len : sizeof(b->err) - 1 - b->err_len;
	memcpy(b->err + b->err_len, p, k);
	b->err_len += k;
	b->err[b->err_len] = '\0';
	return len;
}

static size_t
header_seen(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n;

	if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
		if (len > sizeof(b->status) - 1)
			len = sizeof(b->status) - 1;
		memcpy(b->status, p, len);
		b->status[strcspn(b->status, "\r\n")] = '\0';
		blank_controls(b->status);
		/* HTTP/2 has no reason phrase: "HTTP/2 403 " */
		for (len = strlen(b->status); len > 0 && b->status[len - 1] == ' '; len--)
			b->status[len - 1] = '\0';
	}
	return size * n;
}

/* -v: libcurl's account ("* "), the request headers ("> ") and the
 * response headers ("< "), one line each, control bytes shown. */
static int
debug_lines(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
	const char *prefix = type == CURLINFO_TEXT	   ? "* "
			     : type == CURLINFO_HEADER_OUT ? "> "
			     : type == CURLINFO_HEADER_IN  ? "< "
							   : NULL;
	char line[1024];
	size_t i = 0, k;

	(void)h;
	(void)arg;
	if (prefix == NULL)
		return 0;
	while (i < size) {
		k = 0;
		while (i + k < size && data[i + k] != '\n')
			k++;
		snprintf(line, sizeof(line), "%.*s", (int)k, data + i);
		line[strcspn(line, "\r")] = '\0';
		if (line[0] != '\0')
			fprintf(stderr, "%s%s\n", prefix, safe(line));
		i += k + 1;
	}
	return 0;
}

/* -v: the TLS session, once connected and before the request. */
static int
before_request(void *arg, char *ip, char *local_ip, int port, int local_port)
{
	CURL *h = arg;
	SSL *ssl = curl_ssl(h);

	(void)local_ip;
	(void)local_port;
	fprintf(stderr, "* connected to %s port %d\n", safe(ip), port);
	if (ssl != NULL)
		print_session(stderr, ssl, tls_seen.identity, "* ");
	return CURL_PREREQFUNC_OK;
}

static int
setup(CURL *h, const struct connect_opts *o, struct curl_slist *headers, struct body *b,
      char *errbuf)
{
	CURLcode c = CURLE_OK;
	long version = o->version == '2'   ? CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2
		       : o->version == '3' ? CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_TLSv1_3
					   : CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_DEFAULT;

#define SET(opt, val)                                                                              \
	do {                                                                                       \
		if (c == CURLE_OK)                                                                 \
			c = curl_easy_setopt(h, opt, val);                                         \
	} while (0)
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_URL, o->url);
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_SSLVERSION, version);
	/* The server is always verified; there is no option to skip it. */
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (o->ca_file != NULL) {
		SET(CURLOPT_CAINFO, o->ca_file);
		SET(CURLOPT_CAPATH, NULL);
	} else if (o->ca_dir != NULL) {
		SET(CURLOPT_CAINFO, NULL);
		SET(CURLOPT_CAPATH, o->ca_dir);
	}
	/* Our new-session callback sees the TLS 1.3 ticket, the server's
	 * verdict on our certificate; libcurl's would replace it. */
	SET(CURLOPT_SSL_SESSIONID_CACHE, 0L);
	SET(CURLOPT_SSL_CTX_FUNCTION, tls_ctx_setup);
	SET(CURLOPT_USERAGENT, PROG "/" PACKAGE_VERSION);
	SET(CURLOPT_HTTPHEADER, headers);
	SET(CURLOPT_WRITEFUNCTION, body_write);
	SET(CURLOPT_WRITEDATA, b);
	SET(CURLOPT_HEADERFUNCTION, header_seen);
	SET(CURLOPT_HEADERDATA, b);
	if (o->follow) {
		SET(CURLOPT_FOLLOWLOCATION, 1L);
		SET(CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS);
	}
	if (o->proxy != NULL)
		SET(CURLOPT_PROXY, o->proxy);
	if (o->timeout > 0) {
		/* Connecting (with the handshake, and so the agent's
		 * signature), and any stall of the transfer. */
		SET(CURLOPT_CONNECTTIMEOUT, o->timeout);
		SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
		SET(CURLOPT_LOW_SPEED_TIME, o->timeout);
	}
	if (o->max_time > 0)
		SET(CURLOPT_TIMEOUT, o->max_time);
	if (o->bare)
		SET(CURLOPT_CONNECT_ONLY, 1L);
	if (o->verbose) {
		SET(CURLOPT_VERBOSE, 1L);
		SET(CURLOPT_DEBUGFUNCTION, debug_lines);
		SET(CURLOPT_PREREQFUNCTION, before_request);
		SET(CURLOPT_PREREQDATA, h);
	}
#undef SET
	if (c != CURLE_OK) {
		errmsg("connect", "cannot set up libcurl: %s", curl_easy_strerror(c));
		return EXIT_FAILED;
	}
	return 0;
}

/*
 * A bare handshake: report it, and wait briefly for the server's verdict,
 * which TLS 1.3 sends after our Finished: a session ticket (accepted) or
 * an alert (rejected).
 */
static int
raw_verdict(CURL *h, const char *errbuf)
{
	char hostport[512], host[512], *url = NULL;
	curl_socket_t sock = CURL_SOCKET_BAD;
	struct pollfd pfd;
	const char *verdict;
	unsigned char c;
	CURLcode rc;
	int waited = 0;
	size_t n = 0;
	SSL *ssl = curl_ssl(h);

	if (ssl == NULL || curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &sock) != CURLE_OK ||
	    sock == CURL_SOCKET_BAD) {
		errmsg("connect", "libcurl did not hand over its TLS connection");
		return EXIT_FAILED;
	}
	pfd.fd = sock;
	pfd.events = POLLIN;
	while (SSL_version(ssl) == TLS1_3_VERSION && !tls_seen.ticket && !tls_seen.alert_received &&
	       waited < RAW_VERDICT_MS) {
		/* Records OpenSSL already read are not seen by poll(). */
		if (!SSL_has_pending(ssl)) {
			waited += 100;
			if (poll(&pfd, 1, 100) <= 0)
				continue;
		}
		rc = curl_easy_recv(h, &c, 1, &n);
		if (rc == CURLE_AGAIN)
			continue;
		if (rc == CURLE_OK && n > 0)
			break; /* the server talks first: it took us */
		if (rc == CURLE_OK) {
			(void)curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &url);
			url_hostport(url, hostport, sizeof(hostport), host, sizeof(host));
			errmsg("connect",
			       "TLS handshake with %s failed: the server closed the "
			       "connection",
			       safe(hostport));
			return EXIT_FAILED;
		}
		return connect_failure(h, rc, errbuf);
	}
	if (tls_seen.alert_received)
		return connect_failure(h, CURLE_RECV_ERROR, errbuf);
	if (SSL_version(ssl) != TLS1_3_VERSION)
		verdict = "accepted (TLS 1.2 handshake finished)";
	else if (tls_seen.ticket)
		verdict = "accepted (session ticket received)";
	else
		verdict = "unknown (handshake finished; the server sent nothing more)";
	(void)curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &url);
	url_hostport(url, hostport, sizeof(hostport), host, sizeof(host));
	printf("connected to %s\n", safe(hostport));
	print_session(stdout, ssl, tls_seen.identity, "");
	printf("client certificate verdict: %s\n", verdict);
	return EXIT_OK;
}

/* After a transfer that completed: the exit code for the answer. */
static int
http_result(CURL *h, struct body *b)
{
	char title[256];
	long code = 0;

	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 200 && code < 300) {
		if (body_open(b) != 0 || b->write_errno != 0 ||
		    (b->fd != STDOUT_FILENO && close(b->fd) != 0)) {
			errmsg("connect", "cannot write %s: %s",
			       b->outpath != NULL ? b->outpath : "standard output",
			       strerror(b->write_errno != 0 ? b->write_errno : errno));
			b->fd = -1;
			return EXIT_FAILED;
		}
		b->fd = -1;
		return EXIT_OK;
	}
	html_title(b->err, title, sizeof(title));
	if (code == 400 && strstr(title, "SSL certificate") != NULL)
		/* nginx's way to refuse a client certificate */
		errmsg("connect", "server rejected the client certificate: %s (%s)", b->status,
		       title);
	else
		errmsg("connect", "server answered %s%s%s%s", b->status,
		       title[0] != '\0' ? " (" : "", title, title[0] != '\0' ? ")" : "");
	return EXIT_FAILED;
}

/* libcurl must hand us OpenSSL's SSL_CTX, from the OpenSSL the provider
 * is loaded into. */
static int
curl_is_openssl(void)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	if (v != NULL && v->ssl_version != NULL && strncmp(v->ssl_version, "OpenSSL/", 8) == 0)
		return 1;
	errmsg("connect",
	       "libcurl is built with %s, not OpenSSL: connect needs the OpenSSL "
	       "flavour of libcurl (Debian: libcurl4)",
	       v != NULL && v->ssl_version != NULL ? v->ssl_version : "no TLS library");
	return 0;
}

int
cmd_connect(int argc, char **argv)
{
	struct connect_opts o = { .timeout = 30 };
	struct curl_slist *headers = NULL, *l;
	char errbuf[CURL_ERROR_SIZE] = "";
	struct body *b = NULL;
	char *identity = NULL;
	CURL *h = NULL;
	CURLcode rc;
	size_t i;
	int ret;

	if ((ret = parse_options(argc, argv, &o)) != 0)
		goto out;
	ret = EXIT_FAILED;
	if (!curl_is_openssl())
		goto out;
	/* A server that closes on us must not kill us before we explain. */
	(void)signal(SIGPIPE, SIG_IGN);
	if ((ret = choose_identity(o.want_identity, &identity)) != 0)
		goto out;
	ret = EXIT_FAILED;
	tls_seen.identity = identity;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (h = curl_easy_init()) == NULL ||
	    (b = calloc(1, sizeof(*b))) == NULL) {
		errmsg("connect", "cannot set up libcurl: out of memory");
		goto out;
	}
	b->h = h;
	b->fd = -1;
	b->outpath = o.outpath;
	for (i = 0; i < o.n_headers; i++) {
		if ((l = curl_slist_append(headers, o.headers[i])) == NULL) {
			errmsg("connect", "out of memory");
			goto out;
		}
		headers = l;
	}
	if ((ret = setup(h, &o, headers, b, errbuf)) != 0)
		goto out;
	ERR_clear_error();
	rc = curl_easy_perform(h);
	if (rc == CURLE_WRITE_ERROR && b->write_errno != 0) {
		errmsg("connect", "cannot %s %s: %s", b->fd == -1 ? "create" : "write",
		       b->outpath != NULL ? b->outpath : "standard output",
		       strerror(b->write_errno));
		ret = EXIT_FAILED;
	} else if (rc != CURLE_OK) {
		ret = connect_failure(h, rc, errbuf);
	} else if (o.bare) {
		ret = raw_verdict(h, errbuf);
	} else {
		ret = http_result(h, b);
	}
	if (ret == EXIT_OK && fflush(stdout) != 0) {
		errmsg("connect", "cannot write output: %s", strerror(errno));
		ret = EXIT_FAILED;
	}
out:
	if (b != NULL && b->fd != -1 && b->fd != STDOUT_FILENO)
		close(b->fd);
	free(b);
	curl_easy_cleanup(h);
	curl_slist_free_all(headers);
	curl_global_cleanup();
	free(identity);
	free(o.url);
	ERR_clear_error();
	return ret;
}
