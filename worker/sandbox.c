/*
 * Worker sandbox: no core dumps, no new privileges.  (The seccomp allow-list and Landlock
 * rules are added with the sandbox work; this file is where they go.)
 */
#include "worker/sandbox.h"

#include <sys/prctl.h>

#include "common/log.h"

void
sandbox_worker_enter(const struct config *cfg)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
}
