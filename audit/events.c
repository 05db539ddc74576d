/*
 * Event names, shared by the writer (keyd), the verifier and the reader.
 */
#include "audit/events.h"

#include <stddef.h>

static const char *const audit_event_names[AUDIT_EVENT_MAX] = {
	[AUDIT_SERVICE_START] = "service.start",
	[AUDIT_SERVICE_STOP] = "service.stop",
	[AUDIT_CONFIG_LOADED] = "config.loaded",
	[AUDIT_CONN_ACCEPTED] = "connection.accepted",
	[AUDIT_HANDSHAKE] = "tls.handshake",
	[AUDIT_CONN_CLOSED] = "connection.closed",
	[AUDIT_LIMIT_HIT] = "limit.hit",
	[AUDIT_SIGN_REFUSED] = "keyd.sign_refused",
	[AUDIT_RATE_LIMITED] = "keyd.rate_limited",
	[AUDIT_ROTATION_REQUESTED] = "rotation.requested",
	[AUDIT_ROTATION_APPLIED] = "rotation.applied",
	[AUDIT_ROTATION_REFUSED] = "rotation.refused",
	[AUDIT_TICKET_ROTATION] = "tickets.rotated",
	[AUDIT_CHILD_EXITED] = "process.exited",
	[AUDIT_CHILD_RESTARTED] = "process.restarted",
	[AUDIT_SANDBOX_VIOLATION] = "sandbox.violation",
	[AUDIT_LOG_ROTATED] = "audit.rotated",
	[AUDIT_CHECKPOINT] = "audit.checkpoint",
	[AUDIT_LOG_OPENED] = "audit.opened",
	[AUDIT_LOG_RECOVERED] = "audit.recovered",
};

const char *
audit_event_name(uint16_t ev)
{
	return ev < AUDIT_EVENT_MAX ? audit_event_names[ev] : NULL;
}

int
audit_event_from_worker(uint16_t ev)
{
	return ev == AUDIT_CONN_ACCEPTED || ev == AUDIT_HANDSHAKE || ev == AUDIT_CONN_CLOSED ||
	    ev == AUDIT_LIMIT_HIT;
}
