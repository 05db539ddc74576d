/*
 * Between the parts of a connection's life -- state machine and relay (conn.c), dialling
 * (conn_dial.c) -- and nobody else: the rest of the worker uses worker/conn.h.
 */
#ifndef REDOUBT_CONN_INTERNAL_H
#define REDOUBT_CONN_INTERNAL_H

#include <sys/socket.h>

#include "policy/config.h"
#include "worker/conn.h"
#include "worker/side.h"

/* conn.c */
void side_init(struct side *s, struct conn *c, int fd);
int  side_register(struct side *s);
void side_close(struct side *s);
void conn_pump(struct conn *c);
void conn_close(struct conn *c, enum conn_end why);
void conn_start_tls_client(struct conn *c);

/* conn_dial.c */
void conn_dial(struct conn *c, const struct config_addr *to);
void conn_dial_to(struct conn *c, const struct sockaddr_storage *ss, socklen_t len);
/* After an asynchronous connect became writable: done, or the backend is down. */
void conn_connect_check(struct conn *c);
void conn_backend_down(struct conn *c, const char *why);

#endif
