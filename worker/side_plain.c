/*
 * Plain socket side (the local backend, or the local client of a connector).
 */
#include "worker/side.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

/* errno classified once: retry, would block, or the end of the connection. */
static enum side_status
plain_errno_status(struct side *s, int err, int writing)
{
	switch (err) {
	case EAGAIN:
#if EAGAIN != EWOULDBLOCK
	case EWOULDBLOCK:
#endif
		return writing ? SIDE_WANT_WRITE : SIDE_WANT_READ;
	case EPIPE:
	case ECONNRESET:
		s->errmsg = "connection reset by peer";
		return SIDE_ERROR;
	default:
		s->errmsg = "socket error";
		return SIDE_ERROR;
	}
}

static ssize_t
plain_read(struct side *s, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(s->fd, buf, len);
	while (n == -1 && errno == EINTR);
	if (n > 0) {
		s->bytes_in += (size_t)n;
		/*
		 * A short read on a stream socket means its queue is empty now: the next edge will
		 * say when more arrives, so skip the read that would only return EAGAIN.  Not when
		 * the FIN came with the same edge: no further edge would announce it.
		 */
		if ((size_t)n < len && !s->hup)
			s->readable = 0;
		return n;
	}
	s->status = n == 0 ? SIDE_EOF : plain_errno_status(s, errno, 0);
	return -1;
}

static ssize_t
plain_write(struct side *s, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n >= 0) {
		s->bytes_out += (size_t)n;
		if ((size_t)n < len)
			s->writable = 0;
		return n;
	}
	s->status = plain_errno_status(s, errno, 1);
	return -1;
}

static int
plain_pending(struct side *s)
{
	return 0;
}

static int
plain_shutdown(struct side *s)
{
	if (shutdown(s->fd, SHUT_WR) == -1 && errno != ENOTCONN)
		return -1;
	return 1;
}

const struct side_ops side_plain_ops = {
	.name = "plain",
	.read = plain_read,
	.write = plain_write,
	.pending = plain_pending,
	.shutdown = plain_shutdown,
};
