/*
 * seccomp helpers shared by the per-process sandboxes (worker/sandbox.c, keyd/sandbox.c,
 * common/sandbox_supervisor.c), in the shape of OpenSSH's sandbox-seccomp-filter.c: the
 * native architecture only (any other kills), a default action that kills the process,
 * a few harmless libc probes answered with an errno, and every step fatal when it fails.
 *
 * Rules are given by syscall name so that the tables in the sandboxes read like the tables
 * in SECURITY.md; a name this architecture does not have (e.g. "open" on arm64) is skipped.
 *
 * Test builds only (REDOUBT_TEST_HOOKS) may replace the kill by a trap or a log, chosen at
 * compile time, for finding a missing syscall:
 *   -DREDOUBT_SANDBOX_TRAP  SECCOMP_RET_TRAP: a SIGSYS handler prints the syscall number on
 *                           stderr and the call fails with ENOSYS; the process goes on.
 *   -DREDOUBT_SANDBOX_LOG   SECCOMP_RET_LOG: the kernel logs it (audit type 1326) and lets
 *                           it through.
 */
#ifndef REDOUBT_SECCOMP_UTIL_H
#define REDOUBT_SECCOMP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <seccomp.h>

#if (defined(REDOUBT_SANDBOX_TRAP) || defined(REDOUBT_SANDBOX_LOG)) && \
    !defined(REDOUBT_TEST_HOOKS)
#error "REDOUBT_SANDBOX_TRAP / REDOUBT_SANDBOX_LOG weaken the sandbox: test builds only"
#endif

/* A filter whose default is default_action, or the build's kill action when it is 0. */
scmp_filter_ctx sbx_new(uint32_t default_action);
/* The action for a forbidden syscall: SCMP_ACT_KILL_PROCESS (or TRAP/LOG in debug builds). */
uint32_t sbx_kill_action(void);

/* One rule per name; n comparisons (SCMP_A0_32(...) ...) may follow, all must hold. */
void sbx_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, ...);
/* Every name in a NULL-terminated list: allowed without conditions. */
void sbx_allow_list(scmp_filter_ctx ctx, const char *const *names);
/* Every name in a NULL-terminated list: answered with -1 / errno, never executed. */
void sbx_errno_list(scmp_filter_ctx ctx, const char *const *names, int err);

/*
 * mmap/mprotect without PROT_EXEC: no new executable memory after start-up (neither OpenSSL
 * nor the ASYNC fibres need it; code can only come from what was mapped at start).
 */
void sbx_allow_memory(scmp_filter_ctx ctx);
/*
 * setsockopt: level SOL_SOCKET and IPPROTO_TCP options below a bound are allowed, except
 * those that attach (e)BPF programs or upper-layer protocols to a socket (SO_ATTACH_*,
 * TCP_ULP), which fail with EPERM, as does any larger option number; other levels kill.
 */
void sbx_allow_setsockopt(scmp_filter_ctx ctx);

/* Loads the filter (fatal on failure) and frees ctx. */
void sbx_load(scmp_filter_ctx ctx);

/* "execve", or "syscall 1234" when libseccomp does not know it.  arch: AUDIT_ARCH_* value. */
void sbx_syscall_name(uint32_t arch, int nr, char *out, size_t outlen);

#endif
