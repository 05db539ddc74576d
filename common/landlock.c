/*
 * Landlock rulesets for the sandboxes (see landlock.h).  The structures are declared here,
 * with the kernel's layout, because Debian 12's <linux/landlock.h> predates ABI 3.
 */
#include "common/landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"

#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH      1
#define LL_RULE_NET_PORT          2
#define LL_SCOPE_ABSTRACT_UNIX    (1ULL << 0)   /* ABI 6 */
#define LL_SCOPE_SIGNAL           (1ULL << 1)   /* ABI 6 */

/* Rights that apply to a file (as opposed to a directory) in a path_beneath rule. */
#define LL_FS_FILE_RIGHTS (LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | \
    LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)

struct ll_ruleset_attr {        /* struct landlock_ruleset_attr; its size tells the ABI */
	uint64_t handled_access_fs;
	uint64_t handled_access_net;  /* ABI 4 */
	uint64_t scoped;              /* ABI 6 */
};

struct ll_path_beneath_attr {   /* struct landlock_path_beneath_attr */
	uint64_t allowed_access;
	int32_t  parent_fd;
} __attribute__((packed));

struct ll_net_port_attr {       /* struct landlock_net_port_attr */
	uint64_t allowed_access;
	uint64_t port;
};

int
ll_abi(void)
{
	long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);

	return v < 0 ? 0 : (int)v;
}

static uint64_t
ll_fs_rights(int abi)
{
	uint64_t fs = (LL_FS_MAKE_SYM << 1) - 1;   /* ABI 1: EXECUTE .. MAKE_SYM */

	if (abi >= 2)
		fs |= LL_FS_REFER;
	if (abi >= 3)
		fs |= LL_FS_TRUNCATE;
	if (abi >= 5)
		fs |= LL_FS_IOCTL_DEV;
	return fs;
}

int
ll_begin(struct ll_ruleset *rs, uint64_t net)
{
	struct ll_ruleset_attr attr;
	size_t size = sizeof(attr.handled_access_fs);

	memset(rs, 0, sizeof(*rs));
	rs->fd = -1;
	if ((rs->abi = ll_abi()) < 1) {
		log_info("sandbox: this kernel has no Landlock (Linux 5.13+, lsm=landlock): file "
		    "system access is limited by seccomp and file permissions only");
		return -1;
	}
	memset(&attr, 0, sizeof(attr));
	rs->fs = attr.handled_access_fs = ll_fs_rights(rs->abi);
	if (rs->abi >= 4) {
		rs->net = attr.handled_access_net = net & (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP);
		size = offsetof(struct ll_ruleset_attr, scoped);
	} else if (net != 0)
		log_info("sandbox: Landlock ABI %d has no network rules (ABI 4, Linux 6.7+): "
		    "TCP ports are not restricted", rs->abi);
	if (rs->abi >= 6) {
		attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
		size = sizeof(attr);
	}
	rs->fd = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
	if (rs->fd == -1)
		fatal("sandbox: landlock_create_ruleset (ABI %d)", rs->abi);
	return 0;
}

void
ll_allow_path(struct ll_ruleset *rs, const char *path, uint64_t access)
{
	struct ll_path_beneath_attr pb;
	struct stat st;
	int fd;

	if (rs->fd == -1)
		return;
	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1) {
		log_info("sandbox: %s: %s; no access to it after start-up", path,
		    strerror(errno));
		return;
	}
	if (fstat(fd, &st) == -1)
		fatal("sandbox: fstat %s", path);
	pb.allowed_access = access & rs->fs;
	if (!S_ISDIR(st.st_mode))
		pb.allowed_access &= LL_FS_FILE_RIGHTS;
	pb.parent_fd = fd;
	if (pb.allowed_access != 0 &&
	    syscall(SYS_landlock_add_rule, rs->fd, LL_RULE_PATH_BENEATH, &pb, 0) == -1)
		fatal("sandbox: landlock_add_rule %s", path);
	close(fd);
}

void
ll_allow_port(struct ll_ruleset *rs, uint16_t port, uint64_t access)
{
	struct ll_net_port_attr np = { .allowed_access = access & rs->net, .port = port };

	if (rs->fd == -1 || np.allowed_access == 0)
		return;
	if (syscall(SYS_landlock_add_rule, rs->fd, LL_RULE_NET_PORT, &np, 0) == -1)
		fatal("sandbox: landlock_add_rule port %u", (unsigned)port);
}

void
ll_enforce(struct ll_ruleset *rs)
{
	if (rs->fd == -1)
		return;
	if (syscall(SYS_landlock_restrict_self, rs->fd, 0) == -1)
		fatal("sandbox: landlock_restrict_self");
	close(rs->fd);
	rs->fd = -1;
	log_debug("sandbox: Landlock ABI %d enforced", rs->abi);
}
