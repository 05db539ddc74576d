/*
 * `redoubt audit show`: the audit log for people (a table), or filtered for tools (the raw
 * JSON lines, or CSV).  It reads; it does not verify (that is `redoubt audit verify`).
 */
#ifndef REDOUBT_AUDIT_SHOW_H
#define REDOUBT_AUDIT_SHOW_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum audit_show_format { AUDIT_SHOW_TABLE = 0, AUDIT_SHOW_JSON, AUDIT_SHOW_CSV };

/* A record is shown when it passes every filter that is set. */
struct audit_filter {
	int         af_has_since, af_has_until;
	int64_t     af_since, af_until;       /* µs since the epoch: since <= time < until */
	const char *const *af_events;         /* any of these (glob, or a category: "tls") */
	size_t      af_nevents;
	const char *af_peer;                  /* address, host, or glob */
	const char *af_identity;              /* glob, or a substring (case-insensitive) */
	const char *af_outcome;               /* "success" / "failure" */
};

/* Returns 0, or 2 (AUDIT_EXIT_UNREADABLE) when a file could not be read. */
int audit_show(char *const *files, size_t nfiles, const struct audit_filter *f,
    enum audit_show_format fmt, FILE *out, FILE *err);

#endif
