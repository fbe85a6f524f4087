/*
 * frame.c - reading and writing length-prefixed frames on a socket.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

/* Waits until fd is ready for `events`; 0, MTLS_ERR_TIMEOUT or _IO. */
static int
wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int n;

	for (;;) {
		n = poll(&pfd, 1, timeout_ms);
		if (n > 0)
			return 0;
		if (n == 0)
			return MTLS_ERR_TIMEOUT;
		if (errno != EINTR)
			return MTLS_ERR_IO;
	}
}

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Reads exactly len bytes into p.  *got counts bytes of the frame read so
 * far, so the caller can tell a clean EOF (nothing read) from a truncated
 * frame.  Before the first byte the wait is idle_ms; from the first byte
 * on, the whole frame must arrive by *deadline (a client that trickles one
 * byte at a time does not hold the connection longer).
 */
static int
read_full(int fd, unsigned char *p, size_t len, int idle_ms, int timeout_ms,
	  size_t *got, long long *deadline)
{
	long long left;
	ssize_t n;
	int r;

	int polled = 0, flags;

	while (len > 0) {
		/*
		 * The first byte of a frame is rarely there yet: with no limit
		 * on the wait, block in recv itself; with a limit, poll first.
		 * Either way one system call fewer than recv, EAGAIN, poll,
		 * recv.  The rest of a frame is normally there already.
		 */
		flags = MSG_DONTWAIT;
		if (*got == 0 && idle_ms < 0) {
			flags = 0;
		} else if (*got == 0 && !polled) {
			polled = 1;
			if ((r = wait_fd(fd, POLLIN, idle_ms)) != 0)
				return r;
		}
		n = recv(fd, p, len, flags);
		if (n > 0) {
			if (*got == 0 && timeout_ms >= 0)
				*deadline = now_ms() + timeout_ms;
			p += n;
			len -= (size_t)n;
			*got += (size_t)n;
			continue;
		}
		if (n == 0)
			return *got == 0 ? MTLS_ERR_CONNECTION_CLOSED : MTLS_ERR_TRUNCATED;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno != ECONNRESET ? MTLS_ERR_IO :
			       *got == 0 ? MTLS_ERR_CONNECTION_CLOSED : MTLS_ERR_TRUNCATED;
		if (*got == 0) {
			r = wait_fd(fd, POLLIN, idle_ms);
		} else if (timeout_ms < 0) {
			r = wait_fd(fd, POLLIN, -1);
		} else {
			left = *deadline - now_ms();
			r = left <= 0 ? MTLS_ERR_TIMEOUT : wait_fd(fd, POLLIN, (int)left);
		}
		if (r != 0)
			return r;
	}
	return 0;
}

int
frame_read(int fd, struct wbuf *body, size_t max, int idle_ms, int timeout_ms)
{
	unsigned char hdr[4], *p;
	long long deadline = 0;
	size_t got = 0;
	uint32_t len;
	int r;

	wbuf_reset(body);
	if ((r = read_full(fd, hdr, sizeof(hdr), idle_ms, timeout_ms, &got, &deadline)) != 0)
		return r;
	len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
	      ((uint32_t)hdr[2] << 8) | (uint32_t)hdr[3];
	/* The limit is checked before a single body byte is read. */
	if (len > max || len > MTLS_FRAME_MAX)
		return MTLS_ERR_FRAME_TOO_LARGE;
	if (len == 0)
		return MTLS_ERR_BAD_REQUEST;
	if ((r = wbuf_reserve(body, len, &p)) != 0)
		return r;
	if ((r = read_full(fd, p, len, timeout_ms, timeout_ms, &got, &deadline)) != 0) {
		wbuf_reset(body);
		return r == MTLS_ERR_CONNECTION_CLOSED ? MTLS_ERR_TRUNCATED : r;
	}
	return 0;
}

int
frame_write(int fd, const struct wbuf *body, int timeout_ms)
{
	size_t len = wbuf_len(body), off = 0, total;
	unsigned char hdr[4];
	struct iovec iov[2];
	struct msghdr mh = { 0 };
	ssize_t n;
	int r;

	if (len == 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	if (len > MTLS_FRAME_MAX)
		return MTLS_ERR_FRAME_TOO_LARGE;
	hdr[0] = (unsigned char)(len >> 24);
	hdr[1] = (unsigned char)(len >> 16);
	hdr[2] = (unsigned char)(len >> 8);
	hdr[3] = (unsigned char)len;
	total = len + sizeof(hdr);
	while (off < total) {
		int niov = 0;

		if (off < sizeof(hdr)) {
			iov[niov].iov_base = hdr + off;
			iov[niov++].iov_len = sizeof(hdr) - off;
			iov[niov].iov_base = (void *)wbuf_ptr(body);
			iov[niov++].iov_len = len;
		} else {
			iov[niov].iov_base = (void *)(wbuf_ptr(body) + (off - sizeof(hdr)));
			iov[niov++].iov_len = total - off;
		}
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)niov;
		/* MSG_NOSIGNAL: a vanished peer is an error, not a SIGPIPE. */
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if ((r = wait_fd(fd, POLLOUT, timeout_ms)) != 0)
				return r;
			continue;
		}
		return (errno == EPIPE || errno == ECONNRESET) ?
			       MTLS_ERR_CONNECTION_CLOSED : MTLS_ERR_IO;
	}
	return 0;
}
