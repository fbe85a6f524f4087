/*
 * frame.c - reading and writing length-prefixed frames on a socket.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <string.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "secmem.h"

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
 * Reads at least `need` and at most `cap` bytes into p; *nread says how
 * many.  *got counts bytes of the frame read so far, so the caller can tell
 * a clean EOF (nothing read) from a truncated frame.  Before the first byte
 * the wait is idle_ms; from the first byte on, the whole frame must arrive
 * by *deadline (a client that trickles one byte at a time does not hold
 * the connection longer).
 */
static int
read_atleast(int fd, unsigned char *p, size_t need, size_t cap, int idle_ms, int timeout_ms,
	     size_t *got, long long *deadline, size_t *nread)
{
	size_t done = 0;
	long long left;
	ssize_t n;
	int r, flags;

	*nread = 0;
	while (done < need) {
		/*
		 * With no limit on the wait for a first byte, block in recv
		 * itself; otherwise try at once and poll only on EAGAIN (a
		 * reply is often there already: frame_spin() waited for it).
		 */
		flags = (*got == 0 && idle_ms < 0) ? 0 : MSG_DONTWAIT;
		n = recv(fd, p + done, cap - done, flags);
		if (n > 0) {
			if (*got == 0 && timeout_ms >= 0)
				*deadline = now_ms() + timeout_ms;
			done += (size_t)n;
			*got += (size_t)n;
			*nread = done;
			continue;
		}
		if (n == 0)
			return *got == 0 ? MTLS_ERR_CONNECTION_CLOSED : MTLS_ERR_TRUNCATED;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno != ECONNRESET ? MTLS_ERR_IO
			       : *got == 0	   ? MTLS_ERR_CONNECTION_CLOSED
						   : MTLS_ERR_TRUNCATED;
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

void
frame_rx_reset(struct frame_rx *rx)
{
	mtls_wipe(rx->buf, sizeof(rx->buf));
	rx->start = rx->end = 0;
}

/* Hands n stashed bytes to the caller's copy and wipes them (PINs pass here). */
static void
rx_take(struct frame_rx *rx, unsigned char *to, size_t n)
{
	memcpy(to, rx->buf + rx->start, n);
	mtls_wipe(rx->buf + rx->start, n);
	rx->start += n;
	if (rx->start == rx->end)
		rx->start = rx->end = 0;
}

int
frame_read(int fd, struct frame_rx *rx, struct wbuf *body, size_t max, int idle_ms, int timeout_ms)
{
	unsigned char hdr[4], *p;
	long long deadline = 0;
	size_t got, have, n, take;
	uint32_t len;
	int r;

	wbuf_reset(body);
	/*
	 * The header, and as much of the frame as has arrived, in one recv
	 * into the stash; bytes past this frame stay there for the next.
	 */
	have = rx->end - rx->start;
	got = have;
	if (got > 0 && timeout_ms >= 0)
		deadline = now_ms() + timeout_ms;
	if (have < sizeof(hdr)) {
		if (rx->start > 0) {
			memmove(rx->buf, rx->buf + rx->start, have);
			mtls_wipe(rx->buf + have, rx->start);
			rx->start = 0;
			rx->end = have;
		}
		r = read_atleast(fd, rx->buf + rx->end, sizeof(hdr) - have,
				 sizeof(rx->buf) - rx->end, idle_ms, timeout_ms, &got, &deadline,
				 &n);
		rx->end += n;
		if (r != 0)
			return r;
	}
	rx_take(rx, hdr, sizeof(hdr));
	len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) |
	      (uint32_t)hdr[3];
	/* The limit is checked before a single body byte is read. */
	if (len > max || len > MTLS_FRAME_MAX)
		return MTLS_ERR_FRAME_TOO_LARGE;
	if (len == 0)
		return MTLS_ERR_BAD_REQUEST;
	if ((r = wbuf_reserve(body, len, &p)) != 0)
		return r;
	take = rx->end - rx->start;
	if (take > len)
		take = len;
	rx_take(rx, p, take);
	/* The rest (a large frame, or a slow writer) goes straight to body. */
	if (take < len && (r = read_atleast(fd, p + take, len - take, len - take, timeout_ms,
					    timeout_ms, &got, &deadline, &n)) != 0) {
		wbuf_reset(body);
		return r == MTLS_ERR_CONNECTION_CLOSED ? MTLS_ERR_TRUNCATED : r;
	}
	return 0;
}

int
frame_set_rcvtimeo(int fd, int timeout_ms)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000L };

	if (timeout_ms <= 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 ? 0 : MTLS_ERR_IO;
}

int
frame_read_timed(int fd, struct frame_rx *rx, struct wbuf *body, size_t max, int timeout_ms)
{
	ssize_t n;

	if (rx->end == rx->start) {
		rx->start = rx->end = 0;
		for (;;) {
			/* Blocks until bytes, EOF or the socket's SO_RCVTIMEO. */
			n = recv(fd, rx->buf, sizeof(rx->buf), 0);
			if (n > 0) {
				rx->end = (size_t)n;
				break;
			}
			wbuf_reset(body);
			if (n == 0)
				return MTLS_ERR_CONNECTION_CLOSED;
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return MTLS_ERR_TIMEOUT;
			return errno == ECONNRESET ? MTLS_ERR_CONNECTION_CLOSED : MTLS_ERR_IO;
		}
	}
	return frame_read(fd, rx, body, max, timeout_ms, timeout_ms);
}

/* A spin-wait hint to the CPU; no system call, nothing yielded. */
static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

int
frame_spin(int fd, struct frame_rx *rx, unsigned int spin_us)
{
	struct timespec ts;
	long long end;
	unsigned int i;
	ssize_t n;

	if (rx->end > rx->start)
		return 1;
	if (spin_us == 0)
		return 0;
	rx->start = rx->end = 0;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + (long long)spin_us * 1000;
	for (;;) {
		/* The probe is the read: what arrives goes to the stash. */
		n = recv(fd, rx->buf, sizeof(rx->buf), MSG_DONTWAIT);
		if (n > 0) {
			rx->end = (size_t)n;
			return 1;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return 1; /* EOF or error: frame_read() will say which */
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if ((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec >= end)
			return 0;
		/*
		 * Never sched_yield(): with a CPU-bound process on this CPU
		 * a yield hands it a whole time slice (milliseconds) while
		 * the reply waits.  A pause between probes spares the
		 * sibling hyperthread and the system call rate; whether
		 * spinning pays at all is the caller's call (spin.c).
		 */
		for (i = 0; i < 16; i++)
			cpu_relax();
	}
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
		return (errno == EPIPE || errno == ECONNRESET) ? MTLS_ERR_CONNECTION_CLOSED
							       : MTLS_ERR_IO;
	}
	return 0;
}
