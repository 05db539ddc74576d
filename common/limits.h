/*
 * Every limit in redoubt, in one place, each with its unit and the reason for its value.
 * Configurable limits have their defaults here; policy/ checks the configured ranges.
 */
#ifndef REDOUBT_LIMITS_H
#define REDOUBT_LIMITS_H

/* keyd <-> worker IPC (see ipc/ipc.h for the framing). */
#define KEYD_TIMEOUT_MS_DEFAULT      1000  /* ms a worker waits for a signature (relayd's 1 s) */
#define KEYD_INFLIGHT_MAX            256   /* SIGN requests one worker may have outstanding */
#define KEYD_SIGN_RATE_DEFAULT       20000 /* signatures/s per worker (token bucket refill) */
#define KEYD_SIGN_BURST_DEFAULT      2000  /* token bucket depth */
#define KEYD_STRIKES_MAX             64    /* refused requests before keyd closes a channel */
#define KEYD_GENERATIONS_MAX         2     /* certificate generations kept per identity */
#define KEYD_SECURE_HEAP_DEFAULT     (1u << 20) /* bytes of mlocked OpenSSL secure heap */
#define KEYD_SECURE_HEAP_MINSIZE     16    /* OpenSSL's smallest secure-heap allocation unit */

/* Supervisor. */
#define SUPERVISOR_RESTART_DELAY_MS  200   /* first restart delay of a crashed child */
#define SUPERVISOR_RESTART_DELAY_MAX 5000  /* backoff cap for a child that keeps crashing */
#define WORKERS_MAX                  64    /* workers = auto never exceeds this */

/* Worker connections. */
#define CONN_BUF_SIZE                16384 /* bytes per direction: one TLS record's payload */
#define CONN_MAX_DEFAULT             10000 /* connections per worker */
#define HANDSHAKE_TIMEOUT_MS_DEFAULT 10000 /* a handshake that takes longer is dropped */
#define IDLE_TIMEOUT_MS_DEFAULT      0     /* 0 = no idle timeout (Redis clients idle for long) */
#define LINGER_TIMEOUT_MS            2000  /* read-and-discard client input after our close */
#define BACKEND_CONNECT_TIMEOUT_MS   5000  /* a local backend that does not answer by then is down */
#define ASYNC_JOBS_MAX               1024  /* paused handshakes per worker (32 KiB fibre each) */
#define EPOLL_EVENTS_MAX             256   /* events taken per epoll_wait */

/* Configuration. */
#define CONFIG_SIZE_MAX              (1u << 20) /* bytes; a config file larger than this is refused */
#define CONFIG_NAME_MAX              63    /* characters in a section name */
#define CONFIG_PATH_MAX              4096  /* bytes in a path */
#define CONFIG_ALLOW_MAX             64    /* entries in one allow list */
#define CONFIG_IDENTITIES_MAX        32
#define CONFIG_LISTENERS_MAX         64
#define CONFIG_CONNECTORS_MAX        64

/* Public material sent from keyd to workers (chains, CA bundles, CRLs). */
#define PEM_SIZE_MAX                 (8u << 20) /* bytes; a CRL of a large CA stays under this */

#endif
