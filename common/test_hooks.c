/*
 * Sandbox self-test hooks (see test_hooks.h).  The whole file is test-build only.
 */
#if defined(REDOUBT_TEST_HOOKS)

#include "common/test_hooks.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"

#define TEST_HOOK_KEY_PREFIX "tpm:"

static char test_hook_key[CONFIG_PATH_MAX];

/* Async-signal-safe: a fixed line with two numbers. */
static void
test_hook_report(int hook, long result, int err)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "test hook %d: result %ld errno %d\n", hook, result,
	    err);

	if (n > 0)
		if (write(STDERR_FILENO, line, (size_t)n) < 0)
			return;   /* nowhere to say it */
}

static void
test_hook_signal(int sig)
{
	int hook = sig - SIGRTMIN, saved = errno;
	long r = -1;

	errno = 0;
	switch (hook) {
	case 1:
		r = syscall(SYS_openat, AT_FDCWD, test_hook_key, O_RDONLY | O_CLOEXEC);
		break;
	case 2: {
		char *argv[] = { "true", NULL }, *envp[] = { NULL };
		r = syscall(SYS_execve, "/bin/true", argv, envp);
		break;
	}
	case 3:
		r = syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0);
		break;
	case 4: {
		struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(1),
		    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int fd = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		r = fd == -1 ? -1 : syscall(SYS_connect, fd, &sin, sizeof(sin));
		test_hook_report(hook, r, errno);
		if (fd != -1)
			(void)close(fd);
		errno = saved;
		return;
	}
	case 5:
		r = syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
		break;
	case 6:
		r = syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		break;
	case 7:
		r = syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY | O_CLOEXEC);
		break;
	default:
		break;
	}
	test_hook_report(hook, r, errno);
	if (r >= 0 && hook != 2)
		(void)close((int)r);
	errno = saved;
}

void
test_hooks_arm(const struct config *cfg)
{
	struct sigaction sa;
	const char *key = cfg->n_identities > 0 ? cfg->identities[0].key : "/nonexistent";

	if (strncmp(key, TEST_HOOK_KEY_PREFIX, strlen(TEST_HOOK_KEY_PREFIX)) == 0)
		key += strlen(TEST_HOOK_KEY_PREFIX);
	snprintf(test_hook_key, sizeof(test_hook_key), "%s", key);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = test_hook_signal;
	sigemptyset(&sa.sa_mask);
	for (int hook = TEST_HOOK_FIRST; hook <= TEST_HOOK_LAST; hook++)
		if (sigaction(SIGRTMIN + hook, &sa, NULL) == -1)
			fatal("test hooks: sigaction");
	log_warnx("TEST BUILD: sandbox self-test hooks armed (SIGRTMIN+%d..%d)", TEST_HOOK_FIRST,
	    TEST_HOOK_LAST);
}

#endif /* REDOUBT_TEST_HOOKS */
