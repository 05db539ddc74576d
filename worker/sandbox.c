/*
 * The worker's sandbox, entered once start-up is done (listeners registered, keyd channel
 * and supervisor channel set up, OpenSSL and the keyd provider loaded, connector peers
 * resolved).  From then on a worker relays bytes and does nothing else.  Built like
 * OpenSSH's sandbox-seccomp-filter.c, each step fatal on failure:
 *
 *   1. rlimits: no core dumps (worker_main already set RLIMIT_CORE 0 and PR_SET_DUMPABLE 0),
 *      no new processes (RLIMIT_NPROC 0, behind seccomp's own ban);
 *   2. PR_SET_NO_NEW_PRIVS;
 *   3. Landlock: no file system access at all; TCP connect only to the ports of configured
 *      backends and connector peers (all ports when a transparent connector dials whatever
 *      SO_ORIGINAL_DST says); no abstract UNIX sockets or signals outside the worker;
 *   4. seccomp allow-list, default SECCOMP_RET_KILL_PROCESS.
 *
 * SECURITY.md has the table of what is allowed and why; keep the two in step.
 */
#include "worker/sandbox.h"

#include <errno.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/child.h"
#include "common/landlock.h"
#include "common/log.h"
#include "common/seccomp_util.h"
#if defined(REDOUBT_TEST_HOOKS)
#include "common/test_hooks.h"
#endif

/*
 * Allowed without conditions.  Everything here works on descriptors the worker already holds
 * or on its own memory and time; none of it names a file, a process or an address.
 */
static const char *const worker_allowed[] = {
	/* The relay and the IPC channels (SCM_RIGHTS from the supervisor: recvmsg). */
	"read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
	"shutdown", "close", "getsockopt", "getsockname", "getpeername", "fcntl", "fstat",
	/* The event loop; poll: a signature wait without an ASYNC job, the IPC channel. */
	"epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "poll", "ppoll",
	/* Time (normally the vDSO), OpenSSL's DRBG, locks. */
	"clock_gettime", "clock_getres", "gettimeofday", "time", "getrandom", "futex",
	/* ASYNC_JOB fibres: getcontext/setcontext save and restore the signal mask. */
	"rt_sigprocmask", "rt_sigreturn", "restart_syscall",
	"getpid", "gettid", "sched_yield",
	/* glibc's qsort() asks sysinfo() for the memory size before sorting large arrays. */
	"sysinfo",
	"exit", "exit_group",
	NULL
};

/*
 * Path probes a library might make (stat-family, access, readlink): they name a file but open
 * nothing, so they fail with EACCES instead of killing.  open/openat/openat2 are not here:
 * they kill (the rule, and the test that opens the key file relies on it).
 */
static const char *const worker_eacces[] = {
	"stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
	"readlink", "readlinkat",
	NULL
};

/* A transparent connector dials whatever SO_ORIGINAL_DST says: then no port can be fenced. */
static int
worker_sandbox_ports_known(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_connectors; i++)
		if (cfg->connectors[i].transparent)
			return 0;
	return 1;
}

static void
worker_sandbox_landlock(const struct config *cfg)
{
	struct ll_ruleset rs;
	int fence = worker_sandbox_ports_known(cfg);

	/* The worker never binds (its sockets come bound); connect is fenced when it can be. */
	if (ll_begin(&rs, LL_NET_BIND_TCP | (fence ? LL_NET_CONNECT_TCP : 0)) == -1)
		return;
	/* No path rule at all: nothing on the file system is reachable after this. */
	for (size_t i = 0; fence && i < cfg->n_listeners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->backend.kind == ADDR_TCP)
			ll_allow_port(&rs, l->backend.port, LL_NET_CONNECT_TCP);
		for (size_t r = 0; r < l->n_routes; r++)
			if (l->routes[r].backend.kind == ADDR_TCP)
				ll_allow_port(&rs, l->routes[r].backend.port, LL_NET_CONNECT_TCP);
	}
	for (size_t i = 0; fence && i < cfg->n_connectors; i++)
		if (cfg->connectors[i].connect.kind == ADDR_TCP)
			ll_allow_port(&rs, cfg->connectors[i].connect.port, LL_NET_CONNECT_TCP);
	ll_enforce(&rs);
}

static void
worker_sandbox_seccomp(const struct config *cfg)
{
	static const int domains[] = { AF_UNIX, AF_INET, AF_INET6 };
	scmp_filter_ctx ctx = sbx_new(0);
	int nsocks = (int)(cfg->n_listeners + cfg->n_connectors);

	sbx_allow_list(ctx, worker_allowed);
	sbx_errno_list(ctx, worker_eacces, EACCES);
	sbx_allow_memory(ctx);
	sbx_allow_setsockopt(ctx);
	/* accept4 only on the inherited listening sockets, at their fixed numbers. */
	for (int fd = CHILD_FD_FIRST; fd < CHILD_FD_FIRST + nsocks; fd++)
		sbx_rule(ctx, SCMP_ACT_ALLOW, "accept4", 1, SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)fd));
	/* Backend and peer connections: stream sockets of three families, nothing else. */
	for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++)
		sbx_rule(ctx, SCMP_ACT_ALLOW, "socket", 2,
		    SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)domains[i]),
		    SCMP_A1_32(SCMP_CMP_MASKED_EQ, 0xf, SOCK_STREAM));
	/* Where to: Landlock's port rules (TCP); UNIX paths are the configured backends. */
	sbx_rule(ctx, SCMP_ACT_ALLOW, "connect", 0);
	/* abort() (assertions, FORTIFY, stack protector) signals itself: a SIGABRT, not a SIGSYS. */
	sbx_rule(ctx, SCMP_ACT_ALLOW, "tgkill", 1, SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)getpid()));
	sbx_load(ctx);
}

void
sandbox_worker_enter(const struct config *cfg)
{
	struct rlimit none = { 0, 0 };

	/*
	 * Lazy initialisations that would open a file later, done now: jansson seeds its hash
	 * function from /dev/urandom when the first JSON object is made (the first audit event);
	 * glibc reads /etc/localtime the first time any time conversion runs, even gmtime_r()
	 * (OpenSSL's certificate time checks, on the first client certificate).
	 */
	json_object_seed(0);
	tzset();
	if (setrlimit(RLIMIT_NPROC, &none) == -1)
		fatal("sandbox: RLIMIT_NPROC");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
	worker_sandbox_landlock(cfg);
#if defined(REDOUBT_TEST_HOOKS)
	test_hooks_arm(cfg);
#endif
	worker_sandbox_seccomp(cfg);
	log_debug("sandbox entered");
}
