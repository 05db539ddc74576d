/*
 * The supervisor's hardening, and how it learns which syscall a sandbox killed a child for.
 *
 * sandbox_supervisor_enter(), once, before the first child starts:
 *   1. opens the kernel's record of seccomp kills (below), while still privileged;
 *   2. drops every capability but what starting and stopping children needs
 *      (privdrop_supervisor());
 *   3. NO_NEW_PRIVS and a seccomp deny-list of syscalls that no redoubt process ever makes
 *      (ptrace, bpf, io_uring, module loading, mount, kexec, ...).  It is a deny-list, not an
 *      allow-list, because every child inherits it and runs its own start-up (dynamic loader,
 *      key loading, TPM) under it before installing its own allow-list.
 *
 * Naming the syscall.  SECCOMP_RET_KILL_PROCESS gives the dying process no chance to say
 * anything (that is the point: a compromised worker cannot decide whether it dies), and
 * waitpid() reports only SIGSYS.  The kernel itself records every seccomp kill as an audit
 * record of type 1326 (AUDIT_SECCOMP) with pid, arch and syscall number; "kill_process" is in
 * kernel.seccomp.actions_logged by default.  A root process may read these records without
 * being the audit daemon by joining NETLINK_AUDIT's read-only multicast group
 * (AUDIT_NLGRP_READLOG, CAP_AUDIT_READ, checked at bind time only): this works with or
 * without auditd and is not subject to printk rate limits.  When that fails (not root, a
 * kernel without audit, a container), /dev/kmsg has the same record as long as no audit
 * daemon takes them.  When neither is available the supervisor still reports a seccomp kill,
 * without the name.  Rejected: SECCOMP_RET_TRAP (the compromised process's own SIGSYS handler
 * would decide whether to report and die), user notification (cannot be combined with a
 * kernel kill: KILL takes precedence over every other action), ptrace (the supervisor would
 * hold a debugger's power over its children).
 */
#ifndef REDOUBT_SANDBOX_SUPERVISOR_H
#define REDOUBT_SANDBOX_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/evloop.h"
#include "policy/config.h"

#define SANDBOX_SYSCALL_NAME_MAX 32   /* "io_uring_register" and the like, with room */

void sandbox_supervisor_enter(const struct config *cfg, struct evloop *loop);

/*
 * The syscall a seccomp filter killed pid for: its number (and its name in name), or -1
 * when the kernel's record did not arrive within wait_ms or no record source is open.
 */
int  sandbox_supervisor_killed_by(pid_t pid, unsigned wait_ms, char *name, size_t namelen);

/* One AUDIT_SECCOMP record's text: 0 and its pid, arch, syscall; -1 when it is not one. */
int  sandbox_seccomp_record_parse(const char *text, pid_t *pid, uint32_t *arch, int *nr);

#endif
