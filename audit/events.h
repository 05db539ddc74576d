/*
 * The audit event catalogue (docs/audit.md describes every field).  Workers may send only
 * the connection events; keyd refuses any other type from a worker.
 */
#ifndef REDOUBT_AUDIT_EVENTS_H
#define REDOUBT_AUDIT_EVENTS_H

#include <stdint.h>

enum audit_event {
	AUDIT_SERVICE_START = 1,
	AUDIT_SERVICE_STOP,
	AUDIT_CONFIG_LOADED,
	AUDIT_CONN_ACCEPTED,      /* worker */
	AUDIT_HANDSHAKE,          /* worker: completed or failed, with the tls-mode decision */
	AUDIT_CONN_CLOSED,        /* worker */
	AUDIT_LIMIT_HIT,          /* worker: max-connections, handshake timeout, ... */
	AUDIT_SIGN_REFUSED,
	AUDIT_RATE_LIMITED,
	AUDIT_ROTATION_REQUESTED,
	AUDIT_ROTATION_APPLIED,
	AUDIT_ROTATION_REFUSED,
	AUDIT_TICKET_ROTATION,
	AUDIT_CHILD_EXITED,
	AUDIT_CHILD_RESTARTED,
	AUDIT_SANDBOX_VIOLATION,
	AUDIT_LOG_ROTATED,
	AUDIT_CHECKPOINT,         /* written by the audit writer only */
	AUDIT_LOG_OPENED,         /* audit writer: the chain resumes in this file (key id, anomalies) */
	AUDIT_LOG_RECOVERED,      /* audit writer: the log is writable again (since, queued, lost) */
	AUDIT_EVENT_MAX
};

/* "connection.accepted", ...; NULL for an unknown value. */
const char *audit_event_name(uint16_t ev);
/* 1 when a worker may send this event. */
int audit_event_from_worker(uint16_t ev);

#endif
