/*
 * systemd's socket activation and readiness protocols (common/sd_daemon.c): descriptors are
 * found by name only when they are meant for this process, the variables never reach a
 * child, and READY=1 arrives as one datagram.  Each activation case runs in a fresh child:
 * the environment is read once per process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/sd_daemon.h"

struct activation {
	const char *pid;        /* "self", "other" or NULL (unset) */
	const char *fds;
	const char *names;
	const char *lookup;
	int         want;       /* the descriptor expected, or -1 */
};

/* In a child: set the variables, look the name up, report the answer as the exit status. */
static int
run_case(const struct activation *a)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		char buf[32];
		int fd;
		if (a->pid != NULL) {
			snprintf(buf, sizeof(buf), "%ld", strcmp(a->pid, "self") == 0 ?
			    (long)getpid() : (long)getpid() + 1);
			setenv("LISTEN_PID", buf, 1);
		}
		if (a->fds != NULL)
			setenv("LISTEN_FDS", a->fds, 1);
		if (a->names != NULL)
			setenv("LISTEN_FDNAMES", a->names, 1);
		fd = sd_listen_fd_named(a->lookup);
		/* Read once, then gone from the environment (a child must never inherit them). */
		if (getenv("LISTEN_PID") != NULL || getenv("LISTEN_FDS") != NULL ||
		    getenv("LISTEN_FDNAMES") != NULL)
			_exit(100);
		_exit(fd == -1 ? 99 : fd);
	}
	assert_true(waitpid(pid, &status, 0) == pid);
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 100);
	return WEXITSTATUS(status) == 99 ? -1 : WEXITSTATUS(status);
}

static void
test_listen_fds(void **state)
{
	static const struct activation cases[] = {
		{ "self", "1", "control", "control", 3 },
		{ "self", "2", "link:control", "control", 4 },
		{ "self", "2", "link:control", "link", 3 },
		{ "self", "2", "link:control", "other", -1 },
		/* Meant for another process (a parent that did not clear them): ignored. */
		{ "other", "1", "control", "control", -1 },
		{ NULL, "1", "control", "control", -1 },
		{ "self", NULL, "control", "control", -1 },
		/* Bad numbers and absurd counts are not trusted. */
		{ "self", "x", "control", "control", -1 },
		{ "self", "1x", "control", "control", -1 },
		{ "self", "100000", "control", "control", -1 },
		{ "self", "", "control", "control", -1 },
		/* Fewer names than descriptors: the rest are "unknown", as systemd says. */
		{ "self", "2", "control", "unknown", 4 },
		{ "self", "1", NULL, "unknown", 3 },
		{ "self", "1", NULL, "control", -1 },
		{ "self", "0", "control", "control", -1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = run_case(&cases[i]);
		if (got != cases[i].want)
			fail_msg("case %zu (%s): got %d, want %d", i, cases[i].lookup, got,
			    cases[i].want);
	}
}

static void
test_notify(void **state)
{
	struct sockaddr_un sun;
	char path[] = "/tmp/redoubt-sd-test-XXXXXX", sock[sizeof(sun.sun_path)], buf[64];
	int fd;
	ssize_t n;

	assert_non_null(mkdtemp(path));
	snprintf(sock, sizeof(sock), "%s/notify", path);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);

	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(sd_notify_state("READY=1"), 0);      /* not under systemd: no-op */
	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(sd_notify_state("READY=1"), 0);      /* not a socket address: ignored */
	setenv("NOTIFY_SOCKET", sock, 1);
	assert_int_equal(sd_notify_state("READY=1"), 0);
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	assert_int_equal(n, 7);
	assert_memory_equal(buf, "READY=1", 7);
	/* Nothing else was sent by the two no-op calls before. */
	assert_int_equal(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
	/* A socket nobody listens on any more is an error the caller sees. */
	close(fd);
	assert_int_equal(sd_notify_state("READY=1"), -1);
	unsetenv("NOTIFY_SOCKET");
	unlink(sock);
	rmdir(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listen_fds),
		cmocka_unit_test(test_notify),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
