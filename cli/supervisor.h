/*
 * The supervisor behind `redoubt serve`: holds the bound sockets and no key, starts keyd
 * and the workers as re-executed children under their own users, hands them their channels,
 * restarts whichever dies, and forwards signals.
 */
#ifndef REDOUBT_SUPERVISOR_H
#define REDOUBT_SUPERVISOR_H

#include <pwd.h>
#include <sys/types.h>

#include "common/evloop.h"
#include "common/limits.h"
#include "ipc/channel.h"
#include "policy/config.h"

struct sup_child {
	const char      *role;         /* "keyd" or "worker" */
	unsigned         index;        /* worker index */
	pid_t            pid;          /* 0 when not running */
	struct ipc_chan  chan;
	struct ev_io     io;
	struct ev_timer  restart;
	unsigned         restart_delay_ms;
	uint64_t         started_ms;
	int              ready;        /* keyd: said it is ready */
};

/*
 * Which processes this supervisor runs.  ALL is `redoubt serve` on its own (started as root);
 * KEYD and WORKERS are the two halves that run as separate, unprivileged systemd services
 * and meet over link-socket (supervisor_link.c).
 */
enum sup_role { SUP_ROLE_ALL, SUP_ROLE_KEYD, SUP_ROLE_WORKERS };

struct supervisor {
	struct evloop     loop;
	enum sup_role     role;
	struct config    *cfg;
	int               cfg_fd;      /* sealed memfd with the config bytes */
	int               exe_fd;      /* our own binary, for re-exec */
	int               privsep;     /* started as root: children run as their own users */
	struct passwd     worker_pw, keyd_pw;
	char              pwbuf[2][1024];
	int               control_fd;  /* keyd's control socket (listening), -1: none */
	int              *sock_fds;    /* listeners, then connectors, in config order */
	size_t            n_socks;
	struct sup_child  keyd;
	struct sup_child  workers[WORKERS_MAX];
	/* KEYD and WORKERS only: the link between the two supervisors. */
	int               link_listen_fd;  /* WORKERS: the bound link-socket; -1 otherwise */
	uid_t             link_peer_uid;   /* the one uid the other supervisor may run as */
	struct ipc_chan   link;            /* fd -1 while down */
	struct ev_io      link_io, link_listen_io;
	struct ev_timer   link_timer;      /* KEYD: reconnect; WORKERS: "nobody came" warning */
	unsigned          link_retry_ms;
	struct ev_io      sig_io;
	int               stopping;
	int               exit_code;
};

/* serve.c: sockets and users; supervisor.c: processes; supervisor_link.c: the link. */
int  supervisor_run(struct supervisor *s);

/* supervisor.c, for the link: hand a descriptor / forward a message to a child. */
int  supervisor_send(struct sup_child *c, const struct ipc_msg *m, int fd);
int  supervisor_is_violation(const struct supervisor *s, const struct ipc_msg *m);
void supervisor_kill_worker(struct supervisor *s, unsigned worker);
/* "all", "keyd", "workers" (serve and check-config --role); -1 with a message otherwise. */
int  supervisor_role_parse(const char *arg, enum sup_role *role);

/* supervisor_link.c */
void supervisor_link_start(struct supervisor *s);
void supervisor_link_wire(struct supervisor *s, unsigned worker);
void supervisor_link_wire_all(struct supervisor *s);
void supervisor_link_report(struct supervisor *s, const struct ipc_msg *m);
void supervisor_link_stop(struct supervisor *s);

#endif
