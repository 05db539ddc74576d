/*
 * `redoubt audit verify`: checks the hash chain and every checkpoint signature of one or
 * more audit log files and names the first problem: FILE:LINE: seq N: what is wrong.
 */
#ifndef REDOUBT_AUDIT_VERIFY_H
#define REDOUBT_AUDIT_VERIFY_H

#include <stddef.h>
#include <stdio.h>

/* Exit status of `redoubt audit verify` (64 is a bad command line, see cli/cli.h). */
#define AUDIT_EXIT_INTACT     0   /* every record chained, every checkpoint verified */
#define AUDIT_EXIT_TAMPERED   1   /* a record altered, deleted, reordered, inserted, ... */
#define AUDIT_EXIT_UNREADABLE 2   /* a file or the public key could not be read */

/*
 * Verifies files as one chain; they may be given in any order (they are taken in the order
 * of their first seq, so a shell glob of audit.jsonl* works).  pubkey NULL: the .pub beside
 * the first file (audit_path_sibling()).  The report goes to out, I/O errors to err.
 * Returns an AUDIT_EXIT_* value.
 */
int audit_verify(char *const *files, size_t nfiles, const char *pubkey, FILE *out, FILE *err);

#endif
