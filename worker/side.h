/*
 * One end of a relayed connection: a plain socket or a TLS session over a socket, behind
 * one small vtable with read(2)-like contracts, so the relay does not know what TLS is.
 * Listeners have a TLS client side and a plain backend side; connectors the reverse.
 */
#ifndef REDOUBT_SIDE_H
#define REDOUBT_SIDE_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "common/evloop.h"

/* Why a read or write returned -1. */
enum side_status {
	SIDE_OK = 0,
	SIDE_WANT_READ,   /* nothing more to read until the socket is readable */
	SIDE_WANT_WRITE,  /* the socket is full */
	SIDE_WANT_ASYNC,  /* a TLS job is paused waiting for keyd */
	SIDE_EOF,         /* orderly close: FIN, or TLS close_notify */
	SIDE_ERROR        /* reset, protocol error, ... (side->errmsg says) */
};

struct side;

struct side_ops {
	const char *name;
	/* >0 bytes, or -1 with s->status set (SIDE_EOF for an orderly end). */
	ssize_t (*read)(struct side *s, void *buf, size_t len);
	/* >0 bytes written (may be short), or -1 with s->status.  After SIDE_WANT_WRITE the
	   same bytes must be offered again (OpenSSL's retry rule); the relay guarantees it. */
	ssize_t (*write)(struct side *s, const void *buf, size_t len);
	/* Bytes already inside the transport (decrypted TLS data) that no socket event will announce. */
	int     (*pending)(struct side *s);
	/* Starts an orderly close of our sending direction: close_notify / shutdown(SHUT_WR).
	   1 done, 0 try again when writable, -1 error. */
	int     (*shutdown)(struct side *s);
};

struct conn;

struct side {
	const struct side_ops *ops;
	struct ev_io   io;
	int            fd;
	SSL           *ssl;          /* NULL for plain */
	struct conn   *conn;
	unsigned       readable:1;   /* edge-triggered readiness we have not consumed yet */
	unsigned       writable:1;
	unsigned       hup:1;        /* epoll saw the peer's FIN/HUP: read until EOF, not to a short read */
	unsigned       eof:1;        /* peer finished sending */
	unsigned       raw_eof:1;    /* TLS: the socket read returned 0 (BIO_CTRL_EOF) */
	unsigned       shut:1;       /* we finished sending */
	unsigned       failed:1;     /* an error ended this side (errmsg says which) */
	unsigned       registered:1; /* in epoll */
	enum side_status status;
	const char    *errmsg;       /* for logs and audit when status == SIDE_ERROR */
	size_t         retry_len;    /* TLS: length of a write that must be retried as is */
	unsigned long long bytes_in, bytes_out;
};

extern const struct side_ops side_plain_ops;
extern const struct side_ops side_tls_ops;

/*
 * Maps an OpenSSL return value to a side status: the one place SSL_get_error() is read.
 * Returns SIDE_OK for ret > 0.
 */
enum side_status side_tls_status(struct side *s, int ret);

#endif
