/*
 * Privilege dropping with libcap.
 */
#include "common/privdrop.h"

#include <grp.h>
#include <linux/securebits.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

/*
 * For a child about to exec without changing users.  The ambient set is the only way a
 * capability survives that exec (our binary has no file capabilities), so clearing it is
 * enough for a non-root caller: the exec drops the rest.  capset(2) itself is only needed,
 * and only made, as root -- the packaged units refuse it (SystemCallFilter=~@privileged),
 * e.g. when low-port.conf gives the workers' supervisor CAP_NET_BIND_SERVICE.
 */
void
privdrop_caps(void)
{
	cap_t none = cap_init(), cur = cap_get_proc();
	int held;

	if (none == NULL || cur == NULL)
		fatal("privdrop: reading capabilities");
	held = cap_compare(cur, none) != 0;
	cap_free(cur);
	if (CAP_AMBIENT_SUPPORTED() && cap_reset_ambient() == -1)
		fatal("privdrop: clearing ambient capabilities");
	if (held && geteuid() == 0 && cap_set_proc(none) == -1)
		fatal("privdrop: clearing capabilities");
	cap_free(none);
}

void
privdrop_to(const struct passwd *pw)
{
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;

	/* While still root: empty the bounding set, so nothing can be regained. */
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 && cap_valid(cap))
			fatal("privdrop: PR_CAPBSET_DROP %d", cap);
	if (setgroups(0, NULL) == -1)
		fatal("privdrop: setgroups");
	if (setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1)
		fatal("privdrop: setresgid %u", (unsigned)pw->pw_gid);
	if (setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
		fatal("privdrop: setresuid %u", (unsigned)pw->pw_uid);
	if (getresuid(&ruid, &euid, &suid) == -1 || getresgid(&rgid, &egid, &sgid) == -1 ||
	    ruid != pw->pw_uid || euid != pw->pw_uid || suid != pw->pw_uid ||
	    rgid != pw->pw_gid || egid != pw->pw_gid || sgid != pw->pw_gid)
		fatalx("privdrop: credentials did not change to %s", pw->pw_name);
	/* The proof: root must be out of reach now. */
	if (pw->pw_uid != 0 && (setuid(0) != -1 || seteuid(0) != -1))
		fatalx("privdrop: could regain root after dropping to %s", pw->pw_name);
	privdrop_caps();
	umask(077);
}

/*
 * What the supervisor keeps (as root) after it has bound its sockets and opened the kernel's
 * seccomp record source: enough to start children under other users and to stop them.
 *   CAP_SETUID, CAP_SETGID  setresuid/setresgid/setgroups in a child before it execs
 *   CAP_SETPCAP             the child's PR_CAPBSET_DROP (and our own securebits)
 *   CAP_KILL                signals to children that run as other users
 * Everything else leaves the permitted, effective, inheritable, ambient and bounding sets,
 * and SECBIT_NOROOT makes sure an exec by the supervisor could not bring root's set back.
 */
void
privdrop_supervisor(void)
{
	static const cap_value_t keep[] = { CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_KILL };
	const int nkeep = (int)(sizeof(keep) / sizeof(keep[0]));
	cap_t caps;

	if (geteuid() != 0)
		return;   /* not root: we run with what the user has (serve says so) */
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
		int kept = 0;
		for (int i = 0; i < nkeep; i++)
			kept |= keep[i] == cap;
		if (!kept && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 && cap_valid(cap))
			fatal("privdrop: supervisor PR_CAPBSET_DROP %d", cap);
	}
	if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED) == -1)
		fatal("privdrop: supervisor PR_SET_SECUREBITS");
	if ((caps = cap_init()) == NULL ||
	    cap_set_flag(caps, CAP_PERMITTED, nkeep, keep, CAP_SET) == -1 ||
	    cap_set_flag(caps, CAP_EFFECTIVE, nkeep, keep, CAP_SET) == -1 ||
	    cap_set_proc(caps) == -1)
		fatal("privdrop: supervisor capabilities");
	cap_free(caps);
	if (cap_reset_ambient() == -1)
		fatal("privdrop: supervisor ambient capabilities");
}
