/*
 * The SEQPACKET channel between keyd, the workers and the supervisor.  One frame per
 * datagram, so a frame is either sent whole or not at all, and a receive never has to
 * reassemble.  Nothing here blocks except ipc_chan_recv_wait(): sends and receives use
 * MSG_DONTWAIT, so the descriptor may be blocking or not, and a peer that stops reading
 * costs at most IPC_QUEUE_MAX queued frames before the caller is told it is stuck.
 *
 * Descriptors (SCM_RIGHTS) are owned by exactly one place at every moment: the caller until
 * ipc_chan_send(), then the channel until the frame has left (or is dropped), then the peer.
 * Only IPC_CHANNEL carries one; a descriptor on any other frame is refused on both sides, so
 * a compromised peer cannot make keyd accumulate descriptors behind a handler that ignores
 * them.
 */
#include "ipc/channel.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

/*
 * Descriptors accepted in one recvmsg.  One is legal; room for a few more lets us see (and
 * close) a frame that carries several.  If a peer sends more than this, MSG_CTRUNC reports it
 * and the kernel closes the ones that did not fit.
 */
#define CHAN_RX_FDS_MAX 4

struct ipc_qframe {
	struct ipc_qframe *next;
	int                fd;      /* descriptor to pass with the frame, or -1 */
	size_t             len;
	uint8_t            buf[];
};

void
ipc_chan_init(struct ipc_chan *c, int fd)
{
	c->fd = fd;
	c->q_head = c->q_tail = NULL;
	c->q_len = 0;
}

/* Closes fd if it is one; errno is kept, since callers report the error that came before. */
static void
chan_close_fd(int fd)
{
	int saved = errno;

	if (fd >= 0)
		(void)close(fd);
	errno = saved;
}

/* Frames may hold ticket keys: wipe before the memory goes back to the allocator. */
static void
chan_qframe_free(struct ipc_qframe *f)
{
	chan_close_fd(f->fd);
	OPENSSL_cleanse(f->buf, f->len);
	free(f);
}

void
ipc_chan_close(struct ipc_chan *c)
{
	struct ipc_qframe *f, *next;

	for (f = c->q_head; f != NULL; f = next) {
		next = f->next;
		chan_qframe_free(f);
	}
	chan_close_fd(c->fd);
	ipc_chan_init(c, -1);
}

int
ipc_chan_has_queued(const struct ipc_chan *c)
{
	return c->q_head != NULL;
}

static int
chan_type_carries_fd(uint16_t type)
{
	return type == IPC_CHANNEL;
}

/*
 * One sendmsg of one frame.  0 when sent, 1 when the socket is full (try later), -1 with
 * errno set on a real error.  EINTR is retried here so that no caller has to.
 */
static int
chan_sendmsg(int sock, const uint8_t *buf, size_t len, int fd)
{
	union {
		struct cmsghdr hdr;
		char           buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	ssize_t n;

	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return 0;   /* SEQPACKET: a datagram is sent whole or not at all */
	/* ENOBUFS is the kernel being short of memory for a moment, not a broken peer. */
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
		return 1;
	return -1;
}

static enum ipc_io
chan_enqueue(struct ipc_chan *c, const uint8_t *buf, size_t len, int fd)
{
	struct ipc_qframe *f;

	if (c->q_len >= IPC_QUEUE_MAX) {
		chan_close_fd(fd);
		return IPC_IO_FULL;
	}
	if ((f = malloc(sizeof(*f) + len)) == NULL) {
		chan_close_fd(fd);
		return IPC_IO_SYSERR;
	}
	f->next = NULL;
	f->fd = fd;
	f->len = len;
	memcpy(f->buf, buf, len);
	if (c->q_tail != NULL)
		c->q_tail->next = f;
	else
		c->q_head = f;
	c->q_tail = f;
	c->q_len++;
	return IPC_IO_OK;
}

enum ipc_io
ipc_chan_send(struct ipc_chan *c, const struct ipc_msg *m, int pass_fd)
{
	uint8_t buf[IPC_FRAME_MAX];
	enum ipc_io rv;
	int n, r;

	/* The descriptor belongs to the channel from here on, whatever happens. */
	if ((pass_fd >= 0) != chan_type_carries_fd(m->hdr.type)) {
		chan_close_fd(pass_fd);
		return IPC_IO_BADMSG;
	}
	if ((n = ipc_encode(m, buf, sizeof(buf))) < 0) {
		chan_close_fd(pass_fd);
		return IPC_IO_BADMSG;
	}
	/* Frames go out in order: once anything is queued, everything queues behind it. */
	if (c->q_head != NULL) {
		rv = chan_enqueue(c, buf, (size_t)n, pass_fd);
	} else if ((r = chan_sendmsg(c->fd, buf, (size_t)n, pass_fd)) == 0) {
		chan_close_fd(pass_fd);
		rv = IPC_IO_OK;
	} else if (r > 0) {
		rv = chan_enqueue(c, buf, (size_t)n, pass_fd);
	} else {
		chan_close_fd(pass_fd);
		rv = IPC_IO_SYSERR;
	}
	OPENSSL_cleanse(buf, (size_t)n);
	return rv;
}

/* Returns IPC_IO_OK when the queue is empty, IPC_IO_AGAIN when the socket filled first. */
enum ipc_io
ipc_chan_flush(struct ipc_chan *c)
{
	struct ipc_qframe *f;
	int r;

	while ((f = c->q_head) != NULL) {
		if ((r = chan_sendmsg(c->fd, f->buf, f->len, f->fd)) > 0)
			return IPC_IO_AGAIN;
		if (r < 0)
			return IPC_IO_SYSERR;
		c->q_head = f->next;
		if (c->q_head == NULL)
			c->q_tail = NULL;
		c->q_len--;
		chan_qframe_free(f);
	}
	return IPC_IO_OK;
}

/*
 * Collects the SCM_RIGHTS descriptors of a received message into fds[] (at most max).
 * Returns how many there were, or -1 if the control data held anything else (those frames
 * are refused; the descriptors found so far are still returned for closing).
 */
static int
chan_collect_fds(struct msghdr *msg, int *fds, int max, int *nfds)
{
	struct cmsghdr *cm;
	int bad = 0;

	*nfds = 0;
	for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0)) {
			bad = 1;
			continue;
		}
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*nfds < max)
				fds[(*nfds)++] = fd;
			else
				chan_close_fd(fd);   /* cannot happen with our buffer size; be safe */
		}
	}
	return bad ? -1 : *nfds;
}

static enum ipc_io
chan_refuse(int *fds, int nfds, int *err, int code, enum ipc_io rv)
{
	for (int i = 0; i < nfds; i++)
		chan_close_fd(fds[i]);
	*err = code;
	return rv;
}

enum ipc_io
ipc_chan_recv(struct ipc_chan *c, struct ipc_msg *m, int *got_fd, int *err)
{
	uint8_t buf[IPC_FRAME_MAX];
	union {
		struct cmsghdr hdr;
		char           buf[CMSG_SPACE(CHAN_RX_FDS_MAX * sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr msg;
	int fds[CHAN_RX_FDS_MAX], nfds, dummy_fd, dummy_err, r;
	enum ipc_io rv;
	ssize_t n;

	if (got_fd == NULL)
		got_fd = &dummy_fd;
	if (err == NULL)
		err = &dummy_err;
	*got_fd = -1;
	*err = IPC_E_OK;

	do {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? IPC_IO_AGAIN : IPC_IO_SYSERR;

	/* Every descriptor that arrived is ours to close unless it is handed to the caller. */
	r = chan_collect_fds(&msg, fds, CHAN_RX_FDS_MAX, &nfds);
	if (n == 0)   /* SEQPACKET: a zero-length read is the peer's close */
		return chan_refuse(fds, nfds, err, IPC_E_OK, IPC_IO_EOF);
	/* The kernel dropped the tail of a datagram larger than any valid frame. */
	if (msg.msg_flags & MSG_TRUNC)
		return chan_refuse(fds, nfds, err, IPC_E_OVERSIZE, IPC_IO_BADMSG);
	if ((msg.msg_flags & MSG_CTRUNC) || r < 0 || nfds > 1)
		return chan_refuse(fds, nfds, err, IPC_E_FIELD, IPC_IO_BADMSG);

	*err = ipc_decode(buf, (size_t)n, m);
	OPENSSL_cleanse(buf, (size_t)n);
	if (*err != IPC_E_OK)
		return chan_refuse(fds, nfds, err, *err, IPC_IO_BADMSG);
	/* A descriptor travels only with IPC_CHANNEL, and IPC_CHANNEL never travels without. */
	if ((nfds == 1) != chan_type_carries_fd(m->hdr.type)) {
		rv = chan_refuse(fds, nfds, err, IPC_E_FIELD, IPC_IO_BADMSG);
		OPENSSL_cleanse(m, sizeof(*m));
		return rv;
	}
	*got_fd = nfds == 1 ? fds[0] : -1;
	return IPC_IO_OK;
}

static int64_t
chan_now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* timeout_ms < 0 waits forever; IPC_IO_AGAIN means the time ran out. */
enum ipc_io
ipc_chan_recv_wait(struct ipc_chan *c, struct ipc_msg *m, int *got_fd, int *err,
    int timeout_ms)
{
	int64_t deadline = chan_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	enum ipc_io rv;
	int wait_ms = timeout_ms;

	for (;;) {
		if ((rv = ipc_chan_recv(c, m, got_fd, err)) != IPC_IO_AGAIN)
			return rv;
		if (timeout_ms >= 0) {
			int64_t left = deadline - chan_now_ms();

			if (left <= 0)
				return IPC_IO_AGAIN;
			wait_ms = (int)left;
		}
		/* POLLHUP / POLLERR wake us too; the next recv turns them into EOF or an error. */
		if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR)
			return IPC_IO_SYSERR;
	}
}
