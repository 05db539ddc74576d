/*
 * keyd: the only process that holds private keys.  It signs TLS handshake input for the
 * workers, pushes them public material, writes the audit log, and never touches the
 * network.
 */
#ifndef REDOUBT_KEYD_H
#define REDOUBT_KEYD_H

#include <stdint.h>
#include <sys/types.h>

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
	uint8_t            material[32];  /* digest of what cur was made of (rotate.c) */
};

/*
 * The trust material of a listener or connector with its own `ca` or `crl`: the effective
 * CA bundle and CRL (its own where set, else its identity's), as workers receive them.
 */
struct keyd_trust {
	int      used;                    /* the section overrides its identity's ca or crl */
	char    *ca_pem;
	size_t   ca_len;
	char    *crl_pem;
	size_t   crl_len;
	uint8_t  digest[32];              /* SHA-256 of ca || crl, as published */
};

/* A complete set of files, loaded and validated, not yet in use (rotate.c). */
struct keyd_stage {
	struct keyd_key   *keys[CONFIG_IDENTITIES_MAX];
	struct keyd_trust  listeners[CONFIG_LISTENERS_MAX];
	struct keyd_trust  connectors[CONFIG_CONNECTORS_MAX];
	uint8_t            material[CONFIG_IDENTITIES_MAX][32];
};

/* Who asked for a rotation, for the audit trail. */
struct keyd_rotate_req {
	const char *source;               /* "control", "SIGHUP", "auto-reload" */
	long        uid;                  /* -1: keyd itself */
	long        pid;                  /* -1: unknown */
	int         revoke_previous;
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
	uint64_t         stats_id;        /* req_id of the STATS_REQ that report answered */
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
	struct keyd_trust   *listener_trust;   /* [n_listeners] */
	struct keyd_trust   *connector_trust;  /* [n_connectors] */
	struct ev_timer      expiry_timer;
	uint64_t             started;     /* UNIX seconds */
	json_t              *last_rotation; /* outcome of the last rotation (status), or NULL */
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
int  keyd_send(struct keyd_worker *w, const struct ipc_msg *m);
int  keyd_send_err(struct keyd_worker *w, uint64_t req_id, uint16_t code);

/* publish.c: what workers receive */
int  keyd_publish_identity(struct keyd_worker *w, uint16_t index);
int  keyd_publish_tickets(struct keyd_worker *w);
void keyd_tickets_init(void);
/* New ticket keys now (the current one becomes decrypt-only); restarts the schedule. */
void keyd_tickets_rotate_now(const char *source, long uid);

/* rotate.c: a new generation of every identity, all or nothing */
int  keyd_stage_load(struct keyd_stage *st, char *err, size_t errlen);
void keyd_stage_free(struct keyd_stage *st);
/* Validates every file, then replaces what changed.  Returns the answer (new reference). */
json_t *keyd_rotate(const struct keyd_rotate_req *req);
/* A generation as answers and status describe it (JSON null for NULL). */
json_t *keyd_key_json(const struct keyd_key *k);

/* trust.c: listener and connector CA bundles and CRLs */
int  keyd_trust_used(int scope, size_t index);
int  keyd_trust_load(int scope, size_t index, const struct keyd_key *idkey,
    struct keyd_trust *out, char *err, size_t errlen);
void keyd_trust_free(struct keyd_trust *t);

/* status.c */
/* Everything `redoubt status` shows; workers' reports count when they answered stats_id. */
json_t *keyd_status_json(uint64_t stats_id);
void keyd_expiry_check(void);

/* control.c: the control socket (`redoubt rotate`, `redoubt status`) */
void keyd_control_init(int fd);
void keyd_control_stats_arrived(void);
void keyd_control_close(void);

/* autoreload.c: watch the files, rotate when a complete valid set is in place */
void keyd_autoreload_init(void);
void keyd_autoreload_snapshot(void);
const char *keyd_autoreload_mode(void);
void keyd_autoreload_close(void);

/* identities.c */
int  keyd_identities_load(char *err, size_t errlen);
/* The number of a generation made of material (see identities.c); never cur's number. */
uint32_t keyd_generation_number(const uint8_t material[32], const struct keyd_key *cur);
void keyd_log_key(const char *name, const struct keyd_key *k);
/* Finds the generation whose key id matches (constant-time compare), or NULL. */
struct keyd_key *keyd_key_lookup(const uint8_t key_id[IPC_KEY_ID_LEN], struct keyd_ident **ident);
void keyd_identities_free(void);

#endif
