/*
 * The worker's side of the keyd channel: signing requests with ids and deadlines, and the
 * public material (chains, CA bundles, CRLs, ticket keys) keyd pushes.  One per worker.
 */
#ifndef REDOUBT_KEYD_CLIENT_H
#define REDOUBT_KEYD_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/evloop.h"
#include "ipc/channel.h"
#include "ipc/ipc.h"

enum keyd_sign_state { KSIGN_PENDING = 0, KSIGN_DONE, KSIGN_FAILED };

struct keyd_sign {
	uint64_t              req_id;
	enum keyd_sign_state  state;
	uint16_t              err;           /* enum ipc_err_code when KSIGN_FAILED */
	size_t                sig_len;
	uint8_t               sig[IPC_SIG_MAX];
	int                 (*wake)(void *); /* the paused job's wait-ctx callback */
	void                 *wake_arg;
	struct ev_timer       deadline;
	TAILQ_ENTRY(keyd_sign) entry;
};

/* Starts a request.  s ends KSIGN_PENDING, or KSIGN_FAILED at once when keyd is not there. */
void keyd_sign_start(struct keyd_sign *s, const uint8_t key_id[IPC_KEY_ID_LEN],
    uint16_t sigalg, const uint8_t *tbs, size_t tbs_len);
/* For callers outside an async job: blocks (poll on the channel) until s is no longer pending. */
void keyd_sign_wait(struct keyd_sign *s);
/* Forgets s (cancels its deadline; a late reply is then dropped as stale). */
void keyd_sign_finish(struct keyd_sign *s);
/* Event-loop iterations so far: a resumed job that sees no progress knows it was not woken. */
uint64_t keyd_client_iterations(void);

struct worker;

/* Sets up the client for this worker; the channel arrives later via keyd_client_attach(). */
void keyd_client_init(struct worker *w);
/* Takes a fresh channel to keyd (at start-up and after keyd restarts) and sends HELLO. */
void keyd_client_attach(int fd);
int  keyd_client_ready(void);
/* Sends an audit event (best effort; counted when it cannot be queued). */
void keyd_client_audit(uint16_t event, const char *json, size_t len);

struct keyd_client_stats {
	uint64_t signs, sign_failures, sign_timeouts, stale_replies, reconnects;
};
const struct keyd_client_stats *keyd_client_stats(void);

#endif
