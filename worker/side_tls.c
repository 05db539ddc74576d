/*
 * TLS side: an SSL object over a non-blocking socket.  All SSL_get_error() mapping is here.
 */
#include "worker/side.h"

#include <errno.h>
#include <stdio.h>

#include <openssl/err.h>

#include "common/log.h"

/*
 * The most useful line of OpenSSL's error queue: the root cause a provider recorded (e.g.
 * "keyd not connected") beats libssl's generic wrapper ("EVP lib").  Valid until the next
 * call; callers copy it if they keep it.
 */
static const char *
side_tls_reason(void)
{
	static char buf[200];
	const char *data = NULL;
	int flags = 0;
	unsigned long first = ERR_peek_error_data(&data, &flags);
	unsigned long last = ERR_peek_last_error();
	const char *r;

	if (first != 0 && ERR_GET_LIB(first) == ERR_LIB_PROV && data != NULL &&
	    (flags & ERR_TXT_STRING) && data[0] != '\0') {
		snprintf(buf, sizeof(buf), "%s", data);
		return buf;
	}
	r = last != 0 ? ERR_reason_error_string(last) : NULL;
	return r != NULL ? r : "TLS protocol error";
}

enum side_status
side_tls_status(struct side *s, int ret)
{
	int e;
	unsigned long ec;

	if (ret > 0)
		return SIDE_OK;
	e = SSL_get_error(s->ssl, ret);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		s->readable = 0;
		return SIDE_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		s->writable = 0;
		return SIDE_WANT_WRITE;
	case SSL_ERROR_WANT_ASYNC:
	case SSL_ERROR_WANT_ASYNC_JOB:  /* job pool exhausted: retried when a job completes */
		return SIDE_WANT_ASYNC;
	case SSL_ERROR_ZERO_RETURN:
		return SIDE_EOF;
	case SSL_ERROR_SYSCALL:
		ec = ERR_peek_last_error();
		if (ec == 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			/* Unusual but documented: treat as a retry of the same call. */
			s->readable = 0;
			return SIDE_WANT_READ;
		}
		s->errmsg = ec != 0 ? ERR_reason_error_string(ec) :
		    (ret == 0 || errno == 0 ? "peer closed without close_notify" :
		    "connection reset by peer");
		if (s->errmsg == NULL)
			s->errmsg = "TLS error";
		ERR_clear_error();
		return SIDE_ERROR;
	case SSL_ERROR_SSL:
	default:
		s->errmsg = side_tls_reason();
		ERR_clear_error();
		return SIDE_ERROR;
	}
}

/*
 * OpenSSL's rule: the error queue is empty before an SSL call whose result goes through
 * SSL_get_error(), or a stale entry turns a WANT_READ into a fatal error.  ERR_clear_error()
 * walks all 16 slots every time (about 800 instructions, a tenth of relaying a small
 * request); the queue is almost always empty already, and a peek costs a fraction of that.
 */
static void
side_tls_err_reset(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

static ssize_t
tls_read(struct side *s, void *buf, size_t len)
{
	size_t n = 0;
	int r;

	side_tls_err_reset();
	r = SSL_read_ex(s->ssl, buf, len, &n);
	if (r == 1) {
		s->bytes_in += n;
		return (ssize_t)n;
	}
	s->status = side_tls_status(s, 0);
	return -1;
}

static ssize_t
tls_write(struct side *s, const void *buf, size_t len)
{
	size_t n = 0;
	int r;

	/* OpenSSL's rule: a write that wanted to be retried is retried with the same length. */
	if (s->retry_len != 0 && len > s->retry_len)
		len = s->retry_len;
	side_tls_err_reset();
	r = SSL_write_ex(s->ssl, buf, len, &n);
	if (r == 1) {
		s->retry_len = 0;
		s->bytes_out += n;
		return (ssize_t)n;
	}
	s->status = side_tls_status(s, 0);
	if (s->status == SIDE_WANT_WRITE || s->status == SIDE_WANT_READ ||
	    s->status == SIDE_WANT_ASYNC)
		s->retry_len = len;
	return -1;
}

static int
tls_pending(struct side *s)
{
	return SSL_has_pending(s->ssl);
}

static int
tls_shutdown(struct side *s)
{
	int r;

	/* An SSL that is shut down already, or never finished its handshake, has nothing to say. */
	if (!SSL_is_init_finished(s->ssl))
		return 1;
	side_tls_err_reset();
	r = SSL_shutdown(s->ssl);
	if (r >= 0)
		return 1;   /* close_notify sent; we do not wait for the peer's */
	switch (side_tls_status(s, r)) {
	case SIDE_WANT_WRITE:
	case SIDE_WANT_READ:
		return 0;
	default:
		return -1;
	}
}

const struct side_ops side_tls_ops = {
	.name = "tls",
	.read = tls_read,
	.write = tls_write,
	.pending = tls_pending,
	.shutdown = tls_shutdown,
};
