/*
 * systemd's socket activation and readiness protocols, the subset redoubt needs (see
 * sd_daemon.h for why not libsystemd).
 */
#include "common/sd_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SD_LISTEN_FDS_MAX 64      /* more than any unit of ours passes */
#define SD_NAME_MAX       256     /* FileDescriptorName= is at most 255 characters */

static int sd_nfds = -1;          /* -1: environment not read yet */
static char sd_names[SD_LISTEN_FDS_MAX][SD_NAME_MAX];

static int
sd_parse_uint(const char *s, unsigned long *out)
{
	char *end;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

/* Reads and then clears LISTEN_*; only descriptors meant for this very process count. */
static void
sd_read_env(void)
{
	const char *names = getenv("LISTEN_FDNAMES");
	unsigned long pid, n;

	sd_nfds = 0;
	if (sd_parse_uint(getenv("LISTEN_PID"), &pid) == 0 && pid == (unsigned long)getpid() &&
	    sd_parse_uint(getenv("LISTEN_FDS"), &n) == 0 && n <= SD_LISTEN_FDS_MAX) {
		sd_nfds = (int)n;
		for (int i = 0; i < sd_nfds; i++) {
			size_t len = names != NULL ? strcspn(names, ":") : 0;
			/* Unnamed sockets are called "unknown" by systemd itself. */
			if (len > 0)
				snprintf(sd_names[i], sizeof(sd_names[i]), "%.*s", (int)len, names);
			else
				snprintf(sd_names[i], sizeof(sd_names[i]), "unknown");
			if (names != NULL)
				names = names[len] == ':' ? names + len + 1 : NULL;
			(void)fcntl(SD_LISTEN_FDS_START + i, F_SETFD, FD_CLOEXEC);
		}
	}
	(void)unsetenv("LISTEN_PID");
	(void)unsetenv("LISTEN_FDS");
	(void)unsetenv("LISTEN_FDNAMES");
}

int
sd_listen_fd_named(const char *name)
{
	if (sd_nfds == -1)
		sd_read_env();
	for (int i = 0; i < sd_nfds; i++)
		if (strcmp(sd_names[i], name) == 0)
			return SD_LISTEN_FDS_START + i;
	return -1;
}

int
sd_notify_state(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	socklen_t len;
	size_t plen;
	ssize_t n;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return 0;
	plen = strlen(path);
	if (plen >= sizeof(sun.sun_path))
		return -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, plen);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';   /* abstract namespace */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len);
	close(fd);
	return n == (ssize_t)strlen(state) ? 0 : -1;
}
