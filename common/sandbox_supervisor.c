/*
 * The supervisor's hardening and the kernel's seccomp kill records (see sandbox_supervisor.h
 * and SECURITY.md, "The supervisor").
 */
#include "common/sandbox_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/privdrop.h"
#include "common/seccomp_util.h"

#define SUPSBX_AUDIT_SECCOMP    1326   /* AUDIT_SECCOMP record type (<linux/audit.h>) */
#define SUPSBX_NLGRP_READLOG    1      /* AUDIT_NLGRP_READLOG: read-only multicast of records */
#define SUPSBX_RECORDS          32     /* recent seccomp records kept for lookup by pid */
#define SUPSBX_MSG_MAX          8192   /* bytes of one netlink datagram or kmsg record */
#define SUPSBX_DRAIN_MAX        4096   /* datagrams read per wake-up before others get a turn */
#define SUPSBX_SYSCALL_NR_MAX   0xffff /* larger numbers (x32's bit 30 included) are not ours */

enum supsbx_source { SRC_NONE = 0, SRC_NETLINK, SRC_KMSG };

struct supsbx_record {
	pid_t    pid;          /* 0: empty or already reported */
	uint32_t arch;         /* AUDIT_ARCH_* */
	int      nr;
};

static struct {
	enum supsbx_source   src;
	struct ev_io         io;
	struct supsbx_record rec[SUPSBX_RECORDS];
	unsigned             next;
} supsbx = { .io = { .fd = -1 } };

/*
 * Syscalls no redoubt process makes, at start-up or after: a call means a compromise (or a
 * bug worth a crash).  The children inherit this list under their own allow-lists.
 */
static const char *const supsbx_denied[] = {
	/* debugging and reading other processes */
	"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
	"kcmp", "perf_event_open",
	/* kernel attack surface without a use here */
	"bpf", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
	"keyctl", "add_key", "request_key", "fanotify_init", "lookup_dcookie", "personality",
	"uselib", "syslog", "vhangup",
	/* the system: modules, kexec, mounts, namespaces, clocks, swap, reboot, quotas, I/O ports */
	"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
	"mount", "umount2", "pivot_root", "chroot", "mount_setattr", "fsopen", "fsconfig",
	"fsmount", "fspick", "open_tree", "move_mount", "unshare", "setns",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
	"setdomainname", "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd",
	"iopl", "ioperm", "open_by_handle_at", "name_to_handle_at",
	NULL
};

/* ---------- the kernel's seccomp records ---------- */

int
sandbox_seccomp_record_parse(const char *text, pid_t *pid, uint32_t *arch, int *nr)
{
	const char *p;
	long long v_pid, v_nr;
	unsigned long long v_arch;
	char *end;

	/* "audit(...): auid=.. uid=.. gid=.. ses=.. pid=N comm=".." exe=".." sig=31
	 *  arch=c000003e syscall=59 compat=0 ip=0x... code=0x80000000" */
	if ((p = strstr(text, " pid=")) == NULL)
		return -1;
	v_pid = strtoll(p + 5, &end, 10);
	if (end == p + 5 || v_pid <= 0 || v_pid > INT32_MAX)
		return -1;
	if ((p = strstr(end, " arch=")) == NULL)
		return -1;
	v_arch = strtoull(p + 6, &end, 16);
	if (end == p + 6 || v_arch > UINT32_MAX || (p = strstr(end, " syscall=")) == NULL)
		return -1;
	v_nr = strtoll(p + 9, &end, 10);
	if (end == p + 9 || v_nr < 0 || v_nr > SUPSBX_SYSCALL_NR_MAX)
		return -1;
	*pid = (pid_t)v_pid;
	*arch = (uint32_t)v_arch;
	*nr = (int)v_nr;
	return 0;
}

static void
supsbx_parse(const char *text)
{
	struct supsbx_record r;

	if (sandbox_seccomp_record_parse(text, &r.pid, &r.arch, &r.nr) == -1)
		return;
	supsbx.rec[supsbx.next] = r;
	supsbx.next = (supsbx.next + 1) % SUPSBX_RECORDS;
}

static void
supsbx_drain(void)
{
	static char buf[SUPSBX_MSG_MAX + 1] __attribute__((aligned(8)));

	for (int i = 0; i < SUPSBX_DRAIN_MAX; i++) {
		ssize_t n = read(supsbx.io.fd, buf, SUPSBX_MSG_MAX);
		if (n == -1 && (errno == EINTR || errno == ENOBUFS || errno == EPIPE))
			continue;   /* overrun (netlink) or overwritten records (kmsg): go on */
		if (n <= 0)
			return;
		buf[n] = '\0';
		if (supsbx.src == SRC_KMSG) {
			/* "5,343,1749438138,-;audit: type=1326 audit(...): ..." */
			if (strstr(buf, "type=1326 ") != NULL)
				supsbx_parse(buf);
			continue;
		}
		int left = (int)n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left);
		    h = NLMSG_NEXT(h, left)) {
			static char text[SUPSBX_MSG_MAX + 1];
			size_t len = h->nlmsg_len - NLMSG_HDRLEN;

			if (h->nlmsg_type != SUPSBX_AUDIT_SECCOMP)
				continue;
			/* The payload is text, not always NUL-terminated. */
			memcpy(text, NLMSG_DATA(h), len);
			text[len] = '\0';
			supsbx_parse(text);
		}
	}
}

static void
supsbx_io_cb(struct ev_io *io, uint32_t events)
{
	supsbx_drain();
}

static int
supsbx_open_netlink(void)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK,
	    .nl_groups = 1u << (SUPSBX_NLGRP_READLOG - 1) };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_AUDIT);

	if (fd == -1)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
supsbx_open_kmsg(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd == -1)
		return -1;
	/* Only records from now on. */
	if (lseek(fd, 0, SEEK_END) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
supsbx_open_records(struct evloop *loop)
{
	if ((supsbx.io.fd = supsbx_open_netlink()) != -1)
		supsbx.src = SRC_NETLINK;
	else if ((supsbx.io.fd = supsbx_open_kmsg()) != -1)
		supsbx.src = SRC_KMSG;
	else {
		log_info("sandbox: neither the kernel audit multicast (needs CAP_AUDIT_READ) nor "
		    "/dev/kmsg can be read: a child killed by its seccomp sandbox will be reported "
		    "without the syscall's name");
		return;
	}
	supsbx.io.cb = supsbx_io_cb;
	if (evloop_add(loop, &supsbx.io, EPOLLIN) == -1)
		fatal("sandbox: epoll_ctl for the seccomp records");
	log_debug("sandbox: seccomp kills are named from %s",
	    supsbx.src == SRC_NETLINK ? "the audit multicast group" : "/dev/kmsg");
}

static int
supsbx_find(pid_t pid, struct supsbx_record *out)
{
	for (unsigned i = 0; i < SUPSBX_RECORDS; i++) {
		/* Newest first: a pid may have been reused since an older record. */
		struct supsbx_record *r = &supsbx.rec[(supsbx.next + SUPSBX_RECORDS - 1 - i) %
		    SUPSBX_RECORDS];
		if (r->pid == pid) {
			*out = *r;
			r->pid = 0;
			return 0;
		}
	}
	return -1;
}

int
sandbox_supervisor_killed_by(pid_t pid, unsigned wait_ms, char *name, size_t namelen)
{
	uint64_t deadline = evloop_clock_ms() + wait_ms;
	struct supsbx_record r;

	if (supsbx.src == SRC_NONE)
		return -1;
	/*
	 * The kernel queues the record before it delivers SIGSYS, but a kernel thread sends it
	 * on: it may reach us just after the child's exit status.  Wait a bounded moment.
	 */
	for (;;) {
		struct pollfd pfd = { .fd = supsbx.io.fd, .events = POLLIN };
		uint64_t now;

		supsbx_drain();
		if (supsbx_find(pid, &r) == 0) {
			sbx_syscall_name(r.arch, r.nr, name, namelen);
			return r.nr;
		}
		if ((now = evloop_clock_ms()) >= deadline)
			return -1;
		(void)poll(&pfd, 1, (int)(deadline - now));
	}
}

/* ---------- entering ---------- */

void
sandbox_supervisor_enter(const struct config *cfg, struct evloop *loop)
{
	scmp_filter_ctx ctx;
	int r;

	supsbx_open_records(loop);
	privdrop_supervisor();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
	/* Default allow: a deny-list (see the header for why).  Listed syscalls kill. */
	ctx = sbx_new(SCMP_ACT_ALLOW);
	for (const char *const *s = supsbx_denied; *s != NULL; s++)
		sbx_rule(ctx, SCMP_ACT_KILL_PROCESS, *s, 0);
	if ((r = seccomp_load(ctx)) != 0)
		fatalx("sandbox: cannot load the seccomp filter: %s", strerror(-r));
	seccomp_release(ctx);
}
