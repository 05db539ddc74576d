/* A socket BIO that keeps a side's readiness flags exact (see tls_bio.c). */
#ifndef REDOUBT_TLS_BIO_H
#define REDOUBT_TLS_BIO_H

#include <openssl/ssl.h>

#include "worker/side.h"

/* Once per worker, before the sandbox. */
int tls_bio_init(void);
/* Gives ssl a BIO over s->fd that updates s->readable / s->writable. */
int tls_bio_attach(SSL *ssl, struct side *s);

#endif
