/*
 * The socket BIO under every TLS side.  It does what OpenSSL's socket BIO does, plus one
 * thing the relay needs: a short read or write means the socket is drained or full right
 * now, so the side's edge-triggered readiness flag is cleared at once and the relay does
 * not spend a system call learning it from EAGAIN.  It also sends with MSG_NOSIGNAL.
 */
#include "worker/tls_bio.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>

#include "common/log.h"

static BIO_METHOD *tls_bio_method;

static int
tls_bio_read(BIO *b, char *buf, size_t len, size_t *done)
{
	struct side *s = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = read(s->fd, buf, len);
	while (n == -1 && errno == EINTR);
	if (n > 0) {
		*done = (size_t)n;
		/* As in side_plain.c: unless the FIN came with this edge, no more is there. */
		if ((size_t)n < len && !s->hup)
			s->readable = 0;
		return 1;
	}
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		s->readable = 0;
		BIO_set_retry_read(b);
	}
	if (n == 0)
		s->raw_eof = 1;
	*done = 0;
	return 0;
}

static int
tls_bio_write(BIO *b, const char *buf, size_t len, size_t *done)
{
	struct side *s = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n >= 0) {
		*done = (size_t)n;
		if ((size_t)n < len)
			s->writable = 0;
		return 1;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		s->writable = 0;
		BIO_set_retry_write(b);
	}
	*done = 0;
	return 0;
}

static long
tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct side *s = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;   /* nothing is buffered here */
	case BIO_CTRL_EOF:
		/* libssl asks this to tell a FIN (SSL_OP_IGNORE_UNEXPECTED_EOF) from an error. */
		return s != NULL && s->raw_eof;
	default:
		return 0;
	}
}

static int
tls_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

int
tls_bio_init(void)
{
	tls_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
	    "redoubt socket");
	if (tls_bio_method == NULL ||
	    !BIO_meth_set_read_ex(tls_bio_method, tls_bio_read) ||
	    !BIO_meth_set_write_ex(tls_bio_method, tls_bio_write) ||
	    !BIO_meth_set_ctrl(tls_bio_method, tls_bio_ctrl) ||
	    !BIO_meth_set_create(tls_bio_method, tls_bio_create))
		return -1;
	return 0;
}

int
tls_bio_attach(SSL *ssl, struct side *s)
{
	BIO *b = BIO_new(tls_bio_method);

	if (b == NULL)
		return -1;
	BIO_set_data(b, s);
	SSL_set_bio(ssl, b, b);
	return 0;
}
