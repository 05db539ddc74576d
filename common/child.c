/*
 * Start-up shared by keyd and the workers.
 */
#include "common/child.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"

struct config *
child_load_config(const char *role, const char *name)
{
	char *buf, err[CONFIG_ERR_MAX];
	size_t len = 0;
	struct config *cfg = NULL;
	ssize_t n;

	if (fcntl(CHILD_FD_CONFIG, F_GETFD) == -1 || fcntl(CHILD_FD_PARENT, F_GETFD) == -1)
		fatalx("'redoubt %s' is started by 'redoubt serve'; run that instead", role);
	buf = malloc(CONFIG_SIZE_MAX + 1);
	if (buf == NULL)
		fatal("%s: config buffer", role);
	while (len < CONFIG_SIZE_MAX) {
		n = pread(CHILD_FD_CONFIG, buf + len, CONFIG_SIZE_MAX - len, (off_t)len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			fatal("%s: reading the configuration from the supervisor", role);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(CHILD_FD_CONFIG);
	if (config_parse(name, buf, len, &cfg, err, sizeof(err)) == -1)
		fatalx("%s", err);
	free(buf);
	return cfg;
}
