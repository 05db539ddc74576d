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

struct supervisor {
	struct evloop     loop;
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
	struct ev_io      sig_io;
	int               stopping;
	int               exit_code;
};

/* serve.c: sockets and users; supervisor.c: processes. */
int  supervisor_run(struct supervisor *s);

#endif
