/*
 * The sandbox building blocks (common/seccomp_util.c, common/landlock.c, the seccomp record
 * parser of common/sandbox_supervisor.c), each rule tried in a forked child that installs it:
 * what is allowed works, what is fenced fails with its errno, what is forbidden kills with
 * SIGSYS.  The system tests (tests/system/test_sandbox.py) prove the real processes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/landlock.h"
#include "common/sandbox_supervisor.h"
#include "common/seccomp_util.h"

/* What a child needs to report and end, besides the rules under test (sigaltstack: the
 * sanitizers' runtime, in `make test-asan`). */
static const char *const base_allowed[] = {
	"write", "exit", "exit_group", "close", "rt_sigreturn", "brk", "munmap", "fstat",
	"newfstatat", "socket", "sigaltstack", NULL
};

typedef int (*child_fn)(void);

/* Runs fn in a child (its return value is the exit status); returns the wait status. */
static int
in_child(child_fn fn)
{
	int status;
	pid_t pid = fork();

	assert_true(pid != -1);
	if (pid == 0)
		_exit(fn());   /* _exit: no atexit handlers (sanitizers) under the filter */
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
child_filter(void (*rules)(scmp_filter_ctx))
{
	scmp_filter_ctx ctx;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		_exit(100);
	ctx = sbx_new(SCMP_ACT_KILL_PROCESS);
	sbx_allow_list(ctx, base_allowed);
	rules(ctx);
	sbx_load(ctx);
}

static void
rules_sockopt_memory(scmp_filter_ctx ctx)
{
	sbx_allow_setsockopt(ctx);
	sbx_allow_memory(ctx);
}

static int
child_setsockopt(void)
{
	int fd, one = 1;
	struct sock_fprog prog = { 0, NULL };

	child_filter(rules_sockopt_memory);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
		return 2;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0)
		return 3;
	/* Attaching a BPF program: refused, never executed. */
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != -1 ||
	    errno != EPERM)
		return 4;
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3) != -1 || errno != EPERM)
		return 5;
	if (setsockopt(fd, SOL_SOCKET, 4000, &one, sizeof(one)) != -1 || errno != EPERM)
		return 6;
	return 0;
}

static void
test_setsockopt(void **state)
{
	int status = in_child(child_setsockopt);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int
child_memory_ok(void)
{
	void *p;

	child_filter(rules_sockopt_memory);
	p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || mprotect(p, 4096, PROT_READ) != 0 || munmap(p, 8192) != 0)
		return 1;
	return 0;
}

static int
child_mmap_exec(void)
{
	child_filter(rules_sockopt_memory);
	(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return 0;
}

static int
child_mprotect_exec(void)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	child_filter(rules_sockopt_memory);
	(void)mprotect(p, 4096, PROT_READ | PROT_EXEC);
	return 0;
}

static void
test_no_executable_memory(void **state)
{
	int status = in_child(child_memory_ok);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	status = in_child(child_mmap_exec);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
	status = in_child(child_mprotect_exec);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
}

static void
rules_eacces_probe(scmp_filter_ctx ctx)
{
	static const char *const probes[] = { "access", "faccessat", "faccessat2", NULL };

	sbx_errno_list(ctx, probes, EACCES);
}

static int
child_probe_then_open(void)
{
	child_filter(rules_eacces_probe);
	if (access("/etc/passwd", R_OK) != -1 || errno != EACCES)
		return 1;
	(void)openat(AT_FDCWD, "/etc/passwd", O_RDONLY);   /* not allowed: kills */
	return 2;
}

static void
test_probe_answered_open_kills(void **state)
{
	int status = in_child(child_probe_then_open);

	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
}

static char ll_dir[] = "/tmp/redoubt-ll-XXXXXX";
static char ll_file[64];

static int
child_landlock(void)
{
	struct ll_ruleset rs;
	int fd;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 || ll_begin(&rs, 0) == -1)
		return 1;
	ll_allow_path(&rs, ll_dir, LL_FS_READ_FILE);
	ll_enforce(&rs);
	if ((fd = open(ll_file, O_RDONLY)) == -1)
		return 2;
	close(fd);
	if (open(ll_file, O_WRONLY) != -1 || errno != EACCES)
		return 3;
	if (open("/etc/passwd", O_RDONLY) != -1 || errno != EACCES)
		return 4;
	if (unlink(ll_file) != -1 || errno != EACCES)
		return 5;
	return 0;
}

static void
test_landlock(void **state)
{
	int status, fd;

	if (ll_abi() < 1)
		skip();
	assert_non_null(mkdtemp(ll_dir));
	snprintf(ll_file, sizeof(ll_file), "%s/f", ll_dir);
	assert_true((fd = open(ll_file, O_WRONLY | O_CREAT, 0600)) != -1);
	close(fd);
	status = in_child(child_landlock);
	(void)unlink(ll_file);
	(void)rmdir(ll_dir);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_syscall_names(void **state)
{
	char name[SANDBOX_SYSCALL_NAME_MAX];

#if defined(__x86_64__)
	sbx_syscall_name(AUDIT_ARCH_X86_64, 59, name, sizeof(name));
	assert_string_equal(name, "execve");
	sbx_syscall_name(AUDIT_ARCH_X86_64, 257, name, sizeof(name));
	assert_string_equal(name, "openat");
#endif
	sbx_syscall_name(0x12345678, 7, name, sizeof(name));
	assert_string_equal(name, "syscall 7");
}

static void
test_record_parse(void **state)
{
	static const char real[] = "audit(1795377376.277:2): auid=4294967295 uid=999 gid=994 "
	    "ses=4294967295 pid=28139 comm=\"redoubt\" exe=\"/usr/bin/redoubt\" sig=31 "
	    "arch=c000003e syscall=59 compat=0 ip=0x7fc01c4b6829 code=0x80000000";
	static const char *const bad[] = {
		"",
		"audit(1.2:3): auid=1 uid=2 arch=c000003e syscall=59",          /* no pid */
		"audit(1.2:3): pid=x arch=c000003e syscall=59",
		"audit(1.2:3): pid=12 syscall=59",                              /* no arch */
		"audit(1.2:3): pid=12 arch=c000003e",                           /* no syscall */
		"audit(1.2:3): pid=12 arch=c000003e syscall=-1",
		"audit(1.2:3): pid=12 arch=c000003e syscall=1073741883",         /* x32 bit */
		"audit(1.2:3): pid=-5 arch=c000003e syscall=59",
		"audit(1.2:3): pid=99999999999 arch=c000003e syscall=59",
		"audit(1.2:3): pid=12 arch=1c000003e syscall=59",
	};
	pid_t pid;
	uint32_t arch;
	int nr;

	assert_int_equal(sandbox_seccomp_record_parse(real, &pid, &arch, &nr), 0);
	assert_int_equal(pid, 28139);
	assert_int_equal(arch, 0xc000003eu);
	assert_int_equal(nr, 59);
	/* "auid=" and "ppid=" must not be taken for "pid=". */
	assert_int_equal(sandbox_seccomp_record_parse("audit(1.2:3): auid=7 ppid=8 pid=9 "
	    "arch=c000003e syscall=41", &pid, &arch, &nr), 0);
	assert_int_equal(pid, 9);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sandbox_seccomp_record_parse(bad[i], &pid, &arch, &nr), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_setsockopt),
		cmocka_unit_test(test_no_executable_memory),
		cmocka_unit_test(test_probe_answered_open_kills),
		cmocka_unit_test(test_landlock),
		cmocka_unit_test(test_syscall_names),
		cmocka_unit_test(test_record_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
