/*
 * Where the audit chain continues when keyd starts: the last record of the log, or the
 * state file beside it (the last checkpoint's seq and hash), whichever is later.  The state
 * file is what keeps seq from starting over when the log was rotated away while keyd was
 * stopped, and what notices a log that lost its tail meanwhile.
 */
#ifndef REDOUBT_AUDIT_RESUME_H
#define REDOUBT_AUDIT_RESUME_H

#include <stddef.h>
#include <stdint.h>

#include "audit/record.h"

#define AUDIT_RESUME_NOTE_MAX 512   /* bytes of the anomaly note */

struct audit_resume {
	struct audit_chain rs_chain;      /* the record the next one follows */
	uint64_t rs_cp_first;             /* first seq not yet covered by a checkpoint */
	char     rs_note[AUDIT_RESUME_NOTE_MAX]; /* what was wrong ("" when nothing) */
};

/*
 * fd is the log, open O_RDWR | O_APPEND.  A torn last line (no newline) is ended with a
 * newline and left in place.  Returns 0, or -1 with err (the log is not an audit log).
 */
int  resume_find(int fd, const char *path, const char *state_path, struct audit_resume *r,
    char *err, size_t errlen);
/* Records that the chain ends at c (after a checkpoint reached the disk). */
void resume_state_save(const char *state_path, const struct audit_chain *c);

#endif
