/*
 * Landlock (Linux 5.13+): a process restricts its own file system access (ABI 1+), its TCP
 * bind/connect ports (ABI 4+), and its reach to abstract UNIX sockets and signals of other
 * processes (ABI 6+).  The ABI is probed at run time; a kernel without Landlock gets a logged
 * notice and the sandbox goes on with seccomp alone (SECURITY.md, "Landlock").
 *
 * Usage: ll_begin(), then rules, then ll_enforce() once NO_NEW_PRIVS is set and before the
 * seccomp filter (which does not allow the landlock syscalls).
 */
#ifndef REDOUBT_LANDLOCK_H
#define REDOUBT_LANDLOCK_H

#include <stdint.h>

/* Access rights (the kernel's LANDLOCK_ACCESS_FS_* values; Debian 12's headers stop at ABI 2). */
#define LL_FS_EXECUTE      (1ULL << 0)
#define LL_FS_WRITE_FILE   (1ULL << 1)
#define LL_FS_READ_FILE    (1ULL << 2)
#define LL_FS_READ_DIR     (1ULL << 3)
#define LL_FS_REMOVE_DIR   (1ULL << 4)
#define LL_FS_REMOVE_FILE  (1ULL << 5)
#define LL_FS_MAKE_CHAR    (1ULL << 6)
#define LL_FS_MAKE_DIR     (1ULL << 7)
#define LL_FS_MAKE_REG     (1ULL << 8)
#define LL_FS_MAKE_SOCK    (1ULL << 9)
#define LL_FS_MAKE_FIFO    (1ULL << 10)
#define LL_FS_MAKE_BLOCK   (1ULL << 11)
#define LL_FS_MAKE_SYM     (1ULL << 12)
#define LL_FS_REFER        (1ULL << 13)   /* ABI 2 */
#define LL_FS_TRUNCATE     (1ULL << 14)   /* ABI 3 */
#define LL_FS_IOCTL_DEV    (1ULL << 15)   /* ABI 5 */
#define LL_NET_BIND_TCP    (1ULL << 0)    /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ULL << 1)    /* ABI 4 */

struct ll_ruleset {
	int         fd;           /* -1: Landlock unavailable (everything below is a no-op) */
	int         abi;
	uint64_t    fs;           /* handled file system rights */
	uint64_t    net;          /* handled network rights */
};

/* The running kernel's Landlock ABI version, or 0 when it has none (or it is disabled). */
int  ll_abi(void);

/*
 * Starts a ruleset that handles every file system right of the running ABI (nothing is
 * allowed unless a rule says so), net (LL_NET_*, masked to what the ABI has: rights not
 * handled stay unrestricted), and, from ABI 6, scopes abstract UNIX sockets and signals to
 * the process itself.  Logs a notice and returns -1 when the kernel has no Landlock.
 */
int  ll_begin(struct ll_ruleset *rs, uint64_t net);
/*
 * Allows access (masked to the handled rights; file-only rights for a non-directory) beneath
 * path.  A path that does not exist is skipped with a notice (nothing beneath it to allow).
 */
void ll_allow_path(struct ll_ruleset *rs, const char *path, uint64_t access);
/* Allows access (LL_NET_*) to/from a TCP port. */
void ll_allow_port(struct ll_ruleset *rs, uint16_t port, uint64_t access);
/* landlock_restrict_self(); fatal on failure.  Requires NO_NEW_PRIVS. */
void ll_enforce(struct ll_ruleset *rs);

#endif
