/*
 * Dropping privileges, in one function every child calls before it execs (OpenSSH's
 * permanently_set_uid / relayd's proc_run shape): groups, gid, uid, capabilities; each
 * step checked, any failure fatal.
 */
#ifndef REDOUBT_PRIVDROP_H
#define REDOUBT_PRIVDROP_H

#include <pwd.h>

/* Becomes pw for good: no supplementary groups, no capabilities, umask 077. */
void privdrop_to(const struct passwd *pw);
/* Clears every capability of the current process (for a non-root start). */
void privdrop_caps(void);
/*
 * The supervisor, still root, keeps only CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL
 * (what starting and stopping its children needs); a no-op when not started as root.
 */
void privdrop_supervisor(void);

#endif
