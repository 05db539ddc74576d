/*
 * Audit records: encoding (writer), parsing (verifier, reader), the hash chain that links
 * them, times, and the names of the files beside the log.  docs/audit.md is the format.
 *
 * A record is one line: a compact JSON object whose first keys are always, in this order,
 * seq, time, event, outcome, reason, [worker,] prev; event fields follow.  prev is the
 * SHA-256 (hex) of the previous line's exact bytes without its newline, so readers hash the
 * raw line and never re-serialise it.
 */
#ifndef REDOUBT_AUDIT_RECORD_H
#define REDOUBT_AUDIT_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#define AUDIT_HASH_HEX_LEN  64        /* SHA-256 in lowercase hex */
#define AUDIT_TIME_LEN      27        /* "2026-11-22T19:40:01.123456Z" */
#define AUDIT_LINE_MAX      16384     /* bytes in a record the writer makes (IPC records <= 1 KiB) */
#define AUDIT_READ_LINE_MAX (1u << 20) /* bytes: a longer line is not a record (reader's cap) */
#define AUDIT_RENAME_PREFIX "x_"      /* a field that collides with a reserved key is kept as x_KEY */

/* The prev of the very first record: no record came before it. */
extern const char audit_genesis_prev[AUDIT_HASH_HEX_LEN + 1];

/* Where the chain stands: the record that the next one continues from. */
struct audit_chain {
	uint64_t ac_seq;                         /* seq of the last record; 0 before the first */
	char     ac_prev[AUDIT_HASH_HEX_LEN + 1]; /* SHA-256 hex of the last record's bytes */
};

void audit_chain_init(struct audit_chain *c);
/* The chain now ends with line (len bytes, no newline), whose seq is seq. */
void audit_chain_advance(struct audit_chain *c, uint64_t seq, const char *line, size_t len);
void audit_hash_hex(const void *buf, size_t len, char out[AUDIT_HASH_HEX_LEN + 1]);

/* "2026-11-22T19:40:01.123456Z" from a CLOCK_REALTIME value. */
void audit_time_format(const struct timespec *ts, char out[AUDIT_TIME_LEN + 1]);
/*
 * Microseconds since the epoch from RFC 3339 ("2026-11-22T19:40:01.5Z", "...+01:00") or
 * "YYYY-MM-DD[ HH:MM[:SS]]" (UTC).  Returns 0, or -1 for anything else.
 */
int  audit_time_parse(const char *s, int64_t *usec);

/* 1 for a key the writer sets itself (seq, time, event, ...), which fields may not use. */
int  audit_key_reserved(const char *key);

/*
 * The record that follows c: a JSON object with the fixed keys, then fields (borrowed; may
 * be NULL).  outcome and reason, when NULL, come from fields ("success" and "" when absent);
 * a field that names a reserved key is renamed x_KEY.  worker < 0 leaves out "worker".
 * Returns a new object, or NULL when out of memory.
 */
json_t *audit_record_make(const struct audit_chain *c, const char *time, const char *event,
    int worker, const char *outcome, const char *reason, json_t *fields);
/* The line of rec (malloc'd, NUL-terminated, no newline) and its length; NULL on failure. */
char   *audit_record_dump(const json_t *rec, size_t *len);

/* A parsed line.  The strings point into obj and live as long as it does. */
struct audit_rec {
	json_t     *ar_obj;
	uint64_t    ar_seq;
	int64_t     ar_worker;                /* -1 when the record has none */
	const char *ar_time, *ar_event, *ar_outcome, *ar_reason, *ar_prev;
};

/* Parses one line (no newline).  Returns 0, or -1 with why (a record must be exact). */
int  audit_rec_parse(const char *line, size_t len, struct audit_rec *r, char *why,
    size_t whylen);
void audit_rec_free(struct audit_rec *r);
/* The string value of key, or "" when absent or not a string. */
const char *audit_rec_str(const struct audit_rec *r, const char *key);

/*
 * A bounded line reader: lines of any content (even NUL bytes), each at most
 * AUDIT_READ_LINE_MAX bytes; longer lines are reported and skipped whole.
 */
struct audit_lines {
	FILE    *al_f;
	char    *al_buf;
	size_t   al_len;                      /* bytes of the current line, without '\n' */
	uint64_t al_lineno;                   /* 1-based number of the current line */
	int      al_newline;                  /* 0: the line ended at EOF without '\n' (torn) */
	int      al_toolong;                  /* 1: the line was longer than the cap */
};

void audit_lines_init(struct audit_lines *l, FILE *f);
/* 1 with a line, 0 at the end, -1 on a read error (errno set). */
int  audit_lines_next(struct audit_lines *l);
void audit_lines_free(struct audit_lines *l);

/*
 * The file beside the log that ext names: the log's directory and the part of its name
 * before the first dot, plus ext.  /var/log/redoubt/audit.jsonl and its rotated copies
 * audit.jsonl.1, audit.jsonl-20261122 all give /var/log/redoubt/audit.pub.  Returns 0, or
 * -1 when out is too small.
 */
int  audit_path_sibling(const char *log, const char *ext, char *out, size_t outlen);

#endif
