/*
 * keyd's sandbox, entered once the keys are loaded, the audit log is open, the control socket
 * and the auto-reload watches are set up.  keyd keeps doing file work after this (rotation
 * re-reads keys, certificates, CA bundles and CRLs; the audit writer appends, checkpoints
 * and reopens), so its limits are about *which* files and *no network*:
 *
 *   1. memory: everything locked when RLIMIT_MEMLOCK allows it (the key material itself is in
 *      OpenSSL's secure heap, mlocked and MADV_DONTDUMP, set up before any key was read);
 *      RLIMIT_NPROC 0 (no new processes, behind seccomp's own ban);
 *   2. PR_SET_NO_NEW_PRIVS;
 *   3. Landlock: read-only access beneath the directories that hold the configured key,
 *      certificate, passphrase, CA and CRL files (directories, because rotation replaces a
 *      file by renaming a new one over it, which a rule on the old inode would not cover),
 *      read-write beneath the audit log's directory, the TPM device when a tpm: key uses one;
 *      no TCP bind, TCP connect only to a TPM simulator's ports; no abstract UNIX sockets or
 *      signals outside keyd;
 *   4. seccomp allow-list, default SECCOMP_RET_KILL_PROCESS: no socket() (one exception below),
 *      no execve, no fork.
 *
 * The exception: an identity with a tpm: key and a tpm-tcti of the form "swtpm:..." or
 * "mssim:..." talks TCP to a (local, test) TPM simulator; then socket(AF_INET/AF_INET6,
 * SOCK_STREAM) and connect are allowed, Landlock limits connect to the simulator's two ports.
 * SECURITY.md has the table of what is allowed and why; keep the two in step.
 */
#include "keyd/sandbox.h"

#include <errno.h>
#include <libgen.h>
#include <sched.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/landlock.h"
#include "common/log.h"
#include "common/seccomp_util.h"
#if defined(REDOUBT_TEST_HOOKS)
#include "common/test_hooks.h"
#endif

/* glibc's internal thread signals (nptl/pthreadP.h): not in any public header. */
#define KEYD_GLIBC_SIGCANCEL 32
#define KEYD_GLIBC_SIGSETXID 33

#define KEYD_TPM_PREFIX        "tpm:"
#define KEYD_TPM_SIM_PORT      2321    /* swtpm / mssim default command port (+1: platform) */

/* Read-only beneath the directories of the key material and trust files. */
#define KEYD_LL_READ   (LL_FS_READ_FILE)
/* The audit log's directory: append, checkpoint state via tmp + rename, key creation. */
#define KEYD_LL_AUDIT  (LL_FS_READ_FILE | LL_FS_WRITE_FILE | LL_FS_READ_DIR | LL_FS_MAKE_REG | \
    LL_FS_REMOVE_FILE | LL_FS_TRUNCATE)
/* A TPM character device. */
#define KEYD_LL_TPMDEV (LL_FS_READ_FILE | LL_FS_WRITE_FILE | LL_FS_IOCTL_DEV)

static const char *const keyd_allowed[] = {
	/* Files: rotation re-reads them, the audit writer appends, syncs, cuts back a torn
	 * write, replaces its state file (tmp + rename) and reopens after logrotate; auto-reload
	 * stats and reads inotify events.  Which files: Landlock. */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close", "fcntl",
	"open", "openat", "fstat", "stat", "lstat", "newfstatat", "statx", "access",
	"faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "fsync", "fdatasync",
	"ftruncate", "fchmod", "rename", "renameat", "renameat2", "unlink", "unlinkat", "umask",
	"inotify_init1", "inotify_add_watch", "inotify_rm_watch",
	/* Worker channels, the supervisor channel, the control socket (inherited, listening),
	 * syslog's already connected socket. */
	"recvfrom", "sendto", "recvmsg", "sendmsg", "shutdown", "accept4", "getsockopt",
	"getsockname", "getpeername",
	"epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "poll", "ppoll",
	"clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",
	"getrandom", "futex",
	"rt_sigprocmask", "rt_sigreturn", "restart_syscall",
	"getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "sched_yield", "sysinfo",
	"exit", "exit_group",
	NULL
};

static int
keyd_tpm_used(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_identities; i++)
		if (strncmp(cfg->identities[i].key, KEYD_TPM_PREFIX, strlen(KEYD_TPM_PREFIX)) == 0)
			return 1;
	return 0;
}

/* A TCP TPM simulator's command port, or 0 when the TCTI is not one. */
static unsigned
keyd_tpm_sim_port(const struct config *cfg)
{
	const char *p;
	unsigned long port;

	if (!keyd_tpm_used(cfg) || (strncmp(cfg->tpm_tcti, "swtpm:", 6) != 0 &&
	    strncmp(cfg->tpm_tcti, "mssim:", 6) != 0))
		return 0;
	if ((p = strstr(cfg->tpm_tcti, "port=")) == NULL)
		return KEYD_TPM_SIM_PORT;
	port = strtoul(p + 5, NULL, 10);
	return port > 0 && port < 65535 ? (unsigned)port : KEYD_TPM_SIM_PORT;
}

/* Read access beneath path's directory, and beneath its real location's when a link. */
static void
keyd_ll_file_dir(struct ll_ruleset *rs, const char *path)
{
	char copy[CONFIG_PATH_MAX], real[PATH_MAX];

	if (path[0] == '\0')
		return;
	if (strncmp(path, KEYD_TPM_PREFIX, strlen(KEYD_TPM_PREFIX)) == 0)
		path += strlen(KEYD_TPM_PREFIX);
	snprintf(copy, sizeof(copy), "%s", path);
	ll_allow_path(rs, dirname(copy), KEYD_LL_READ);
	if (realpath(path, real) != NULL && strcmp(real, path) != 0)
		ll_allow_path(rs, dirname(real), KEYD_LL_READ);
}

static void
keyd_sandbox_landlock(const struct config *cfg, unsigned sim_port)
{
	struct ll_ruleset rs;
	char copy[CONFIG_PATH_MAX];

	if (ll_begin(&rs, LL_NET_BIND_TCP | LL_NET_CONNECT_TCP) == -1)
		return;
	for (size_t i = 0; i < cfg->n_identities; i++) {
		const struct config_identity *id = &cfg->identities[i];
		keyd_ll_file_dir(&rs, id->cert);
		keyd_ll_file_dir(&rs, id->key);
		keyd_ll_file_dir(&rs, id->key_passphrase_file);
		keyd_ll_file_dir(&rs, id->ca);
		keyd_ll_file_dir(&rs, id->crl);
	}
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		keyd_ll_file_dir(&rs, cfg->listeners[i].ca);
		keyd_ll_file_dir(&rs, cfg->listeners[i].crl);
	}
	for (size_t i = 0; i < cfg->n_connectors; i++) {
		keyd_ll_file_dir(&rs, cfg->connectors[i].ca);
		keyd_ll_file_dir(&rs, cfg->connectors[i].crl);
	}
	/* The configuration file itself (read-only), should a reload ever re-read it. */
	ll_allow_path(&rs, cfg->path, KEYD_LL_READ);
	if (cfg->audit_log[0] != '\0') {
		snprintf(copy, sizeof(copy), "%s", cfg->audit_log);
		ll_allow_path(&rs, dirname(copy), KEYD_LL_AUDIT);
	}
	if (keyd_tpm_used(cfg) && strncmp(cfg->tpm_tcti, "device:", 7) == 0)
		ll_allow_path(&rs, cfg->tpm_tcti + 7, KEYD_LL_TPMDEV);
	if (sim_port != 0) {
		ll_allow_port(&rs, (uint16_t)sim_port, LL_NET_CONNECT_TCP);
		ll_allow_port(&rs, (uint16_t)(sim_port + 1), LL_NET_CONNECT_TCP);
	}
	ll_enforce(&rs);
}

static void
keyd_sandbox_seccomp(const struct config *cfg, unsigned sim_port)
{
	scmp_filter_ctx ctx = sbx_new(0);

	sbx_allow_list(ctx, keyd_allowed);
	if (keyd_tpm_used(cfg)) {
		/*
		 * The TPM signer is a thread.  Threads (never processes) may be started after the
		 * sandbox too, and then inherit all of it: clone only with CLONE_THREAD; clone3,
		 * whose flags a filter cannot see, fails with ENOSYS so glibc falls back to clone.
		 */
		sbx_rule(ctx, SCMP_ACT_ALLOW, "clone", 1,
		    SCMP_A0_64(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
		sbx_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0);
		sbx_rule(ctx, SCMP_ACT_ALLOW, "set_robust_list", 0);
		sbx_rule(ctx, SCMP_ACT_ALLOW, "rseq", 0);
		/*
		 * glibc's first pthread_create installs its two internal handlers (SIGCANCEL = 32,
		 * SIGSETXID = 33, below SIGRTMIN): those and nothing else.
		 */
		sbx_rule(ctx, SCMP_ACT_ALLOW, "rt_sigaction", 1,
		    SCMP_A0_32(SCMP_CMP_EQ, KEYD_GLIBC_SIGCANCEL));
		sbx_rule(ctx, SCMP_ACT_ALLOW, "rt_sigaction", 1,
		    SCMP_A0_32(SCMP_CMP_EQ, KEYD_GLIBC_SIGSETXID));
	}
	sbx_allow_memory(ctx);
	sbx_rule(ctx, SCMP_ACT_ALLOW, "tgkill", 1, SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)getpid()));
	/*
	 * glibc's syslog(3) reconnects by itself when the log daemon went away (audit-syslog):
	 * refuse that socket quietly (the record is in the audit file all the same) instead of
	 * killing keyd for it.  Every other socket() kills, except the TPM simulator's.
	 */
	sbx_rule(ctx, SCMP_ACT_ERRNO(EACCES), "socket", 1, SCMP_A0_32(SCMP_CMP_EQ, AF_UNIX));
	if (sim_port != 0) {
		sbx_rule(ctx, SCMP_ACT_ALLOW, "socket", 2, SCMP_A0_32(SCMP_CMP_EQ, AF_INET),
		    SCMP_A1_32(SCMP_CMP_MASKED_EQ, 0xf, SOCK_STREAM));
		sbx_rule(ctx, SCMP_ACT_ALLOW, "socket", 2, SCMP_A0_32(SCMP_CMP_EQ, AF_INET6),
		    SCMP_A1_32(SCMP_CMP_MASKED_EQ, 0xf, SOCK_STREAM));
		sbx_rule(ctx, SCMP_ACT_ALLOW, "connect", 0);
		sbx_allow_setsockopt(ctx);
	}
	sbx_load(ctx);
}

/*
 * seccomp's filter is synchronised to every thread (TSYNC), NO_NEW_PRIVS with it; Landlock
 * confines only the calling thread and the threads it starts later.  keyd's TPM signer is
 * started after the sandbox for that reason; say so if any other thread already runs.
 */
static void
keyd_sandbox_threads(void)
{
	char line[128];
	unsigned threads = 1;
	FILE *f = fopen("/proc/self/status", "re");

	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "Threads:", 8) == 0) {
			threads = (unsigned)strtoul(line + 8, NULL, 10);
			break;
		}
	if (f != NULL)
		fclose(f);
	if (threads > 1)
		log_warnx("sandbox: %u threads already run: seccomp covers them all, Landlock only "
		    "threads started from now on", threads);
}

/*
 * The key material is in the secure heap (mlocked, MADV_DONTDUMP).  Locking all of keyd as
 * well needs RLIMIT_MEMLOCK to cover its whole address space now and later; with a finite
 * limit MCL_FUTURE would make a later allocation fail, so we lock only when it is unlimited
 * (LimitMEMLOCK=infinity) and say what we did.
 */
static void
keyd_sandbox_memory(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur == RLIM_INFINITY) {
		if (mlockall(MCL_CURRENT | MCL_FUTURE) == -1)
			log_warn("sandbox: mlockall (key material stays in the locked secure heap)");
		else
			log_debug("sandbox: all memory locked");
	} else
		log_debug("sandbox: RLIMIT_MEMLOCK is finite: only the secure heap (the key "
		    "material) is locked");
}

void
sandbox_keyd_enter(const struct config *cfg)
{
	struct rlimit none = { 0, 0 };
	unsigned sim_port = keyd_tpm_sim_port(cfg);

	/* Lazy file reads done now (see worker/sandbox.c): jansson's seed, glibc's time zone. */
	json_object_seed(0);
	tzset();
	keyd_sandbox_memory();
	/* RLIMIT_NPROC counts threads too: not with a TPM (seccomp still allows no process). */
	if (!keyd_tpm_used(cfg) && setrlimit(RLIMIT_NPROC, &none) == -1)
		fatal("sandbox: RLIMIT_NPROC");
	keyd_sandbox_threads();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
	keyd_sandbox_landlock(cfg, sim_port);
	if (sim_port != 0)
		log_info("sandbox: tpm-tcti %s: TCP to ports %u and %u stays allowed",
		    cfg->tpm_tcti, sim_port, sim_port + 1);
#if defined(REDOUBT_TEST_HOOKS)
	test_hooks_arm(cfg);
#endif
	keyd_sandbox_seccomp(cfg, sim_port);
	log_debug("sandbox entered");
}
