/*
 * fuzz_frame - frame_read() on a real socket, as the agent reads a client.
 *
 * Input: one byte choosing the size limit (small ones too, so the
 * too-large path is reached with short inputs), then the byte stream a
 * peer sends before closing its end.  Frames are read until an error.
 * Every frame read must be exactly what its header announced, within the
 * limit; the stream must end the way its bytes say (clean close, truncated
 * frame, too large, empty frame); and frame_write() of each body must
 * reproduce the bytes that carried it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "proto.h"

static const size_t limits[] = {
	MTLS_FRAME_MAX, 0, 1, 2, 4, 5, 16, 64, 255, 256, 4096, MTLS_FRAME_MAX + 1,
};

static uint32_t
be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* frame_write()s body and checks the bytes on the wire are want[0..4+len). */
static void
check_rewrite(const struct wbuf *body, const uint8_t *want)
{
	size_t len = wbuf_len(body), got = 0;
	uint8_t *buf;
	ssize_t n;
	int sv[2];

	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	FUZZ_CHECK((buf = malloc(len + 4)) != NULL);
	/* Small bodies only (the socket buffer holds them whole). */
	FUZZ_CHECK(frame_write(sv[0], body, 1000) == 0);
	close(sv[0]);
	while ((n = read(sv[1], buf + got, len + 4 - got)) > 0)
		got += (size_t)n;
	FUZZ_CHECK(got == len + 4 && memcmp(buf, want, len + 4) == 0);
	close(sv[1]);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *s;
	size_t max, len, off = 0, fed = 0;
	struct wbuf *body;
	static struct frame_rx rx;
	uint32_t flen;
	ssize_t n;
	int sv[2], r;

	if (size < 1 || size > 64 * 1024)
		return 0;
	max = limits[data[0] % (sizeof(limits) / sizeof(limits[0]))];
	s = data + 1;
	len = size - 1;

	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	FUZZ_CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
	/* Feed what the socket buffer takes, then close: the reader sees
	 * exactly `fed` bytes and an EOF. */
	while (fed < len) {
		n = write(sv[0], s + fed, len - fed);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		fed += (size_t)n;
	}
	close(sv[0]);
	FUZZ_CHECK((body = wbuf_new()) != NULL);
	frame_rx_reset(&rx);

	for (;;) {
		r = frame_read(sv[1], &rx, body, max, 1000, 1000);
		if (r != 0)
			break;
		FUZZ_CHECK(fed - off >= 4);
		flen = be32(s + off);
		FUZZ_CHECK(wbuf_len(body) == flen && flen > 0);
		FUZZ_CHECK(flen <= max && flen <= MTLS_FRAME_MAX);
		FUZZ_CHECK(flen <= fed - off - 4);
		FUZZ_CHECK(memcmp(wbuf_ptr(body), s + off + 4, flen) == 0);
		check_rewrite(body, s + off);
		off += 4 + (size_t)flen;
	}
	/* How the stream ends is decided by its bytes alone. */
	if (off == fed) {
		FUZZ_CHECK(r == MTLS_ERR_CONNECTION_CLOSED);
	} else if (fed - off < 4) {
		FUZZ_CHECK(r == MTLS_ERR_TRUNCATED);
	} else {
		flen = be32(s + off);
		if (flen > max || flen > MTLS_FRAME_MAX)
			FUZZ_CHECK(r == MTLS_ERR_FRAME_TOO_LARGE);
		else if (flen == 0)
			FUZZ_CHECK(r == MTLS_ERR_BAD_REQUEST);
		else
			FUZZ_CHECK(r == MTLS_ERR_TRUNCATED && flen > fed - off - 4);
	}
	/* A failed read leaves no partial body behind. */
	FUZZ_CHECK(wbuf_len(body) == 0);
	wbuf_free(body);
	close(sv[1]);
	return 0;
}
