/*
 * keyd: the only process that holds private keys.  It signs TLS handshake input for the
 * workers, pushes them public material, writes the audit log, and never touches the
 * network.
 */
#ifndef REDOUBT_KEYD_H
#define REDOUBT_KEYD_H

#include <stdint.h>

#include <jansson.h>

#include "audit/writer.h"
#include "common/evloop.h"
#include "common/limits.h"
#include "ipc/channel.h"
#include "keyd/keystore.h"
#include "keyd/sign_policy.h"
#include "policy/config.h"

struct keyd_ident {
	const struct config_identity *cfg;
	struct keyd_key   *cur;
	struct keyd_key   *prev;
	struct sign_policy policy;
};

enum keyd_worker_state {
	KW_CLOSED = 0,   /* no channel */
	KW_NEW,          /* channel open, HELLO not seen yet */
	KW_READY         /* HELLO answered: may sign, audit, report */
};

struct keyd_worker {
	unsigned         index;
	enum keyd_worker_state state;
	struct ipc_chan  chan;
	struct ev_io     io;
	unsigned         strikes;         /* refused requests; KEYD_STRIKES_MAX closes the channel */
	double           tokens;          /* signing token bucket */
	uint64_t         tokens_ms;
	uint64_t         rate_logged_ms;
	uint64_t         signs, refusals, rate_limited;
	struct ipc_stats stats;           /* last report */
};

struct keyd {
	struct evloop        loop;
	struct config       *cfg;
	struct ipc_chan      sup;
	struct ev_io         sup_io;
	struct ev_io         sig_io;
	struct keyd_ident   *ids;
	struct keyd_worker   workers[WORKERS_MAX];
	struct ipc_ticket_keys tickets;
	struct ev_timer      ticket_timer;
	struct ev_timer      audit_timer;
	struct audit_writer *audit;
	int                  admission;   /* workers may accept new connections */
	uint32_t             last_generation;
};

extern struct keyd *kd;

/* keyd.c */
void keyd_audit(uint16_t event, int worker, const char *outcome, const char *reason,
    json_t *fields);
void keyd_request_restart(unsigned worker, const char *why);

/* dispatch.c: the worker channels */
void keyd_worker_attach(unsigned index, int fd);
void keyd_worker_close(struct keyd_worker *w, const char *why);
void keyd_broadcast(const struct ipc_msg *m);

/* publish.c: what workers receive */
int  keyd_publish_identity(struct keyd_worker *w, uint16_t index);
int  keyd_publish_tickets(struct keyd_worker *w);
void keyd_tickets_init(void);

/* identities.c */
int  keyd_identities_load(char *err, size_t errlen);
uint32_t keyd_next_generation(void);
void keyd_log_key(const char *name, const struct keyd_key *k);
/* Finds the generation whose key id matches (constant-time compare), or NULL. */
struct keyd_key *keyd_key_lookup(const uint8_t key_id[IPC_KEY_ID_LEN], struct keyd_ident **ident);
void keyd_identities_free(void);

#endif
