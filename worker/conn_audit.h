/*
 * Audit events of a connection's life, built in the worker and sent to keyd, which stamps
 * them with the worker's id (from the channel) and time, and chains them into the log.
 */
#ifndef REDOUBT_CONN_AUDIT_H
#define REDOUBT_CONN_AUDIT_H

struct conn;

void conn_audit_accepted(struct conn *c);
/* ok = 1 for a completed handshake; reason says why one failed. */
void conn_audit_handshake(struct conn *c, int ok, const char *reason);
void conn_audit_closed(struct conn *c);
/* A worker limit refused a connection before it became one. */
void conn_audit_limit(const char *where, const char *peer, const char *limit);

#endif
