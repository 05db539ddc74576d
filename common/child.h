/*
 * What the supervisor hands a re-executed child, at fixed descriptor numbers (relayd's
 * PROC_PARENT_SOCK_FILENO idea): nothing else is inherited.
 */
#ifndef REDOUBT_CHILD_H
#define REDOUBT_CHILD_H

#include "policy/config.h"

#define CHILD_FD_CONFIG 3   /* sealed memfd: the exact configuration bytes the supervisor parsed */
#define CHILD_FD_PARENT 4   /* SEQPACKET channel to the supervisor */
#define CHILD_FD_FIRST  5   /* keyd: control socket; worker: listeners, then connector sockets */

/*
 * Parses the configuration handed over at CHILD_FD_CONFIG (name is the original path, for
 * messages) and closes that descriptor.  Exits with a message when the descriptors are
 * missing: the children are started by `redoubt serve`, not by people.
 */
struct config *child_load_config(const char *role, const char *name);

#endif
