/*
 * keyd sandbox: no new privileges.  (The seccomp allow-list and Landlock rules that confine
 * keyd to its key, certificate and audit paths are added with the sandbox work.)
 */
#include "keyd/sandbox.h"

#include <sys/prctl.h>

#include "common/log.h"

void
sandbox_keyd_enter(const struct config *cfg)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
}
