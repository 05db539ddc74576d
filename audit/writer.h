/*
 * The audit log writer.  keyd is its only user: one writer per log, JSON lines (jansson),
 * each record chained to the previous one by SHA-256, with periodic checkpoints signed by
 * a dedicated audit key (ECDSA P-256, never a TLS key).  docs/audit.md describes the format.
 */
#ifndef REDOUBT_AUDIT_WRITER_H
#define REDOUBT_AUDIT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "policy/config.h"

#define AUDIT_WORKER_NONE (-1)   /* a record made by keyd or the supervisor */

struct audit_writer;

/*
 * Opens (creates 0640) cfg->audit_log for appending.  Continues the chain of an existing
 * log: the next seq and prev hash come from its last record (a torn last line is
 * reported and left in place; the chain continues from the last complete record).
 * Loads the audit signing key (creating it, 0600, on first start) and writes its public
 * key beside the log.  Returns NULL with err on failure.
 */
struct audit_writer *audit_writer_open(const struct config *cfg, char *err, size_t errlen);

/*
 * Appends one record.  fields (may be NULL; borrowed, not stolen) are merged into the
 * record; "outcome" and "reason" given here win.  worker >= 0 stamps the authenticated
 * worker id.  Returns 0, or -1 when the record could not be written (the writer is then
 * unhealthy until a later write succeeds; lost records are counted when fail-open).
 */
int  audit_write(struct audit_writer *w, uint16_t event, int worker, const char *outcome,
    const char *reason, json_t *fields);

/* Writes a checkpoint now when one is due (checkpoint-records / checkpoint-seconds). */
void audit_writer_tick(struct audit_writer *w);
/* Milliseconds until the next checkpoint is due by time (for the event loop). */
int  audit_writer_next_ms(const struct audit_writer *w);
/* Reopens the file (after logrotate moved it); the chain continues into the new file. */
int  audit_writer_reopen(struct audit_writer *w, char *err, size_t errlen);
/*
 * The same, saying who asked: fields (borrowed; e.g. {"source":"control","uid":0}) go into
 * the audit.rotated record that starts the new file.
 */
int  audit_writer_reopen_by(struct audit_writer *w, json_t *fields, char *err, size_t errlen);
/* 1 when the last write succeeded. */
int  audit_writer_healthy(const struct audit_writer *w);
uint64_t audit_writer_lost(const struct audit_writer *w);
uint64_t audit_writer_seq(const struct audit_writer *w);
/* Records in the chain that wait in memory for the file to take them (for `redoubt status`). */
size_t audit_writer_queued(const struct audit_writer *w);
/* Writes a final checkpoint, closes, frees the key. */
void audit_writer_close(struct audit_writer *w);

#endif
