/*
 * seccomp helpers for the sandboxes (see seccomp_util.h and SECURITY.md).
 */
#include "common/seccomp_util.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#if defined(REDOUBT_SANDBOX_TRAP)
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>
#endif

#include "common/log.h"

#define SBX_ARGS_MAX        6    /* a syscall has at most six arguments */
#define SBX_SOCKOPT_SCAN    128  /* option numbers 0..127 are ruled one by one; above: EPERM */

/* SOL_SOCKET options that attach code or bind to devices: EPERM, never executed. */
static const int sbx_sockopt_denied_socket[] = {
	SO_ATTACH_FILTER, SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF,
	SO_BINDTODEVICE, SO_BINDTOIFINDEX,
};
/* IPPROTO_TCP options that load an upper-layer protocol (kTLS ULP) or need CAP_NET_ADMIN. */
static const int sbx_sockopt_denied_tcp[] = { TCP_ULP, TCP_REPAIR, TCP_REPAIR_QUEUE,
	TCP_REPAIR_OPTIONS, TCP_REPAIR_WINDOW, TCP_QUEUE_SEQ, TCP_MD5SIG, TCP_MD5SIG_EXT };

uint32_t
sbx_kill_action(void)
{
#if defined(REDOUBT_SANDBOX_TRAP)
	return SCMP_ACT_TRAP;
#elif defined(REDOUBT_SANDBOX_LOG)
	return SCMP_ACT_LOG;
#else
	return SCMP_ACT_KILL_PROCESS;
#endif
}

scmp_filter_ctx
sbx_new(uint32_t default_action)
{
	scmp_filter_ctx ctx = seccomp_init(default_action ? default_action : sbx_kill_action());
	int r;

	if (ctx == NULL)
		fatalx("sandbox: seccomp_init failed");
	/*
	 * Only the native ABI: a call through another one (int 0x80, x32) kills the process
	 * instead of the thread, like every other violation.
	 */
	if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) != 0)
		fatalx("sandbox: seccomp bad-arch action: %s", strerror(-r));
	/* Every thread of the process (keyd's TPM thread starts before the sandbox), NNP too. */
	if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) != 0)
		fatalx("sandbox: seccomp thread synchronisation: %s", strerror(-r));
	/* A binary tree over syscall numbers: the filter runs on every call of a busy worker. */
	(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	return ctx;
}

static void
sbx_rule_array(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
    const struct scmp_arg_cmp *cmp)
{
	int nr = seccomp_syscall_resolve_name(name), r;

	if (nr == __NR_SCMP_ERROR) {
		/* Not a syscall of this architecture ("open" on arm64): nothing to allow. */
		log_debug("sandbox: no syscall '%s' on this architecture", name);
		return;
	}
	if ((r = seccomp_rule_add_array(ctx, action, nr, n, cmp)) != 0)
		fatalx("sandbox: cannot add the seccomp rule for %s: %s", name, strerror(-r));
}

void
sbx_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, ...)
{
	struct scmp_arg_cmp cmp[SBX_ARGS_MAX];
	va_list ap;

	if (n > SBX_ARGS_MAX)
		fatalx("sandbox: %u comparisons for %s", n, name);
	va_start(ap, n);
	for (unsigned i = 0; i < n; i++)
		cmp[i] = va_arg(ap, struct scmp_arg_cmp);
	va_end(ap);
	sbx_rule_array(ctx, action, name, n, cmp);
}

void
sbx_allow_list(scmp_filter_ctx ctx, const char *const *names)
{
	for (; *names != NULL; names++)
		sbx_rule_array(ctx, SCMP_ACT_ALLOW, *names, 0, NULL);
}

void
sbx_errno_list(scmp_filter_ctx ctx, const char *const *names, int err)
{
	for (; *names != NULL; names++)
		sbx_rule_array(ctx, SCMP_ACT_ERRNO((uint32_t)err), *names, 0, NULL);
}

void
sbx_allow_memory(scmp_filter_ctx ctx)
{
	static const char *const plain[] = { "brk", "munmap", "mremap", "madvise", NULL };

	sbx_allow_list(ctx, plain);
	/* Bit test on the full register: any value with PROT_EXEC set falls to the default. */
	sbx_rule(ctx, SCMP_ACT_ALLOW, "mmap", 1, SCMP_A2_64(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	sbx_rule(ctx, SCMP_ACT_ALLOW, "mprotect", 1,
	    SCMP_A2_64(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
}

static int
sbx_in(int v, const int *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == v)
			return 1;
	return 0;
}

/* One level of setsockopt: options 0..SBX_SOCKOPT_SCAN-1 allowed unless denied; above: EPERM. */
static void
sbx_sockopt_level(scmp_filter_ctx ctx, int level, const int *denied, size_t ndenied)
{
	for (int opt = 0; opt < SBX_SOCKOPT_SCAN; opt++)
		sbx_rule(ctx, sbx_in(opt, denied, ndenied) ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_ALLOW,
		    "setsockopt", 2, SCMP_A1_32(SCMP_CMP_EQ, (uint32_t)level),
		    SCMP_A2_32(SCMP_CMP_EQ, (uint32_t)opt));
	sbx_rule(ctx, SCMP_ACT_ERRNO(EPERM), "setsockopt", 2,
	    SCMP_A1_32(SCMP_CMP_EQ, (uint32_t)level),
	    SCMP_A2_32(SCMP_CMP_GE, (uint32_t)SBX_SOCKOPT_SCAN));
}

void
sbx_allow_setsockopt(scmp_filter_ctx ctx)
{
	sbx_sockopt_level(ctx, SOL_SOCKET, sbx_sockopt_denied_socket,
	    sizeof(sbx_sockopt_denied_socket) / sizeof(sbx_sockopt_denied_socket[0]));
	sbx_sockopt_level(ctx, IPPROTO_TCP, sbx_sockopt_denied_tcp,
	    sizeof(sbx_sockopt_denied_tcp) / sizeof(sbx_sockopt_denied_tcp[0]));
	/* IP / IPv6 level options (TOS, TTL, ...) change nothing the kernel must guard here. */
	sbx_rule(ctx, SCMP_ACT_ALLOW, "setsockopt", 1, SCMP_A1_32(SCMP_CMP_EQ, IPPROTO_IP));
	sbx_rule(ctx, SCMP_ACT_ALLOW, "setsockopt", 1, SCMP_A1_32(SCMP_CMP_EQ, IPPROTO_IPV6));
}

#if defined(REDOUBT_SANDBOX_TRAP)
/* Test builds only: say which syscall was refused (async-signal-safe), and fail it with ENOSYS. */
static void
sbx_trap_handler(int sig, siginfo_t *si, void *uctx)
{
	char msg[96], num[16];
	size_t n = 0, k = 0;
	unsigned v = (unsigned)si->si_syscall;
	static const char pre[] = "redoubt sandbox (trap mode): refused syscall ";

	memcpy(msg, pre, sizeof(pre) - 1);
	n = sizeof(pre) - 1;
	do
		num[k++] = (char)('0' + v % 10);
	while ((v /= 10) != 0 && k < sizeof(num));
	while (k > 0)
		msg[n++] = num[--k];
	msg[n++] = '\n';
	if (write(STDERR_FILENO, msg, n) < 0)
		msg[0] = 0;   /* nowhere to say it; fail the call all the same */
#if defined(__x86_64__)
	((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
#elif defined(__aarch64__)
	((ucontext_t *)uctx)->uc_mcontext.regs[0] = (unsigned long long)-ENOSYS;
#endif
}
#endif

void
sbx_load(scmp_filter_ctx ctx)
{
	int r;

#if defined(REDOUBT_SANDBOX_TRAP)
	struct sigaction sa;
	sigset_t sys;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sbx_trap_handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sys);
	sigaddset(&sys, SIGSYS);
	if (sigaction(SIGSYS, &sa, NULL) == -1 || sigprocmask(SIG_UNBLOCK, &sys, NULL) == -1)
		fatal("sandbox: SIGSYS handler");
	log_warnx("sandbox: TRAP MODE (test build): forbidden syscalls fail with ENOSYS");
	(void)seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(rt_sigreturn), 0);
#elif defined(REDOUBT_SANDBOX_LOG)
	log_warnx("sandbox: LOG MODE (test build): forbidden syscalls are only logged");
#endif
	if ((r = seccomp_load(ctx)) != 0)
		fatalx("sandbox: cannot load the seccomp filter: %s", strerror(-r));
	seccomp_release(ctx);
}

void
sbx_syscall_name(uint32_t arch, int nr, char *out, size_t outlen)
{
	char *name = seccomp_syscall_resolve_num_arch(arch, nr);

	if (name != NULL && name[0] != '\0')
		snprintf(out, outlen, "%s", name);
	else
		snprintf(out, outlen, "syscall %d", nr);
	free(name);
}
