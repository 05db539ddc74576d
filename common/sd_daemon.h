/*
 * The two pieces of systemd's service protocol redoubt uses: sockets passed by socket
 * activation (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and the readiness
 * notification of Type=notify (sd_notify(3): a datagram to NOTIFY_SOCKET).  Both are
 * documented as stable interfaces; reading three variables and sending one datagram here
 * keeps libsystemd and its dependency tree out of the processes that hold keys.
 */
#ifndef REDOUBT_SD_DAEMON_H
#define REDOUBT_SD_DAEMON_H

#define SD_LISTEN_FDS_START 3

/*
 * The descriptor systemd passed under FileDescriptorName= name, or -1 when this process
 * was not socket-activated or no socket has that name.  The LISTEN_* variables are
 * removed from the environment on the first call, so nothing we start inherits them; the
 * descriptors found are marked close-on-exec.
 */
int sd_listen_fd_named(const char *name);

/* "READY=1" and friends; a no-op (returns 0) without NOTIFY_SOCKET. */
int sd_notify_state(const char *state);

#endif
