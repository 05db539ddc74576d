/*
 * The audit log writer (keyd only).  Each record is encoded, chained, and appended with one
 * write(2); no fsync per record (keyd makes up to ~6,000 records/s), fdatasync(2) at every
 * checkpoint, so what a signature vouches for is on disk.
 *
 * Failure: a record that cannot be written keeps its place in the chain and waits, in
 * order, in a bounded in-memory queue; a partial write is cut back with ftruncate(2) so no
 * torn line ever sits in the chain.  The queue is flushed as soon as a write succeeds again
 * (every audit_write() and every tick retries).  When the queue is full, new events are
 * counted as lost and never enter the chain, so the chain itself never has a hole.
 */
#include "audit/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit/checkpoint.h"
#include "audit/events.h"
#include "audit/record.h"
#include "audit/resume.h"
#include "common/log.h"

#define AUDIT_QUEUE_BYTES_MAX (16u << 20) /* bytes of unwritten records kept (~30,000) */
#define AUDIT_RETRY_MS        1000        /* ms between retries of an unwritable log */
#define AUDIT_LOG_MODE        0640
#define AUDIT_SYSLOG_IDENT    "redoubt-audit"

struct audit_pending {
	STAILQ_ENTRY(audit_pending) ap_entry;
	size_t ap_len;                        /* bytes in ap_line, including the final '\n' */
	char   ap_line[];
};

STAILQ_HEAD(audit_queue, audit_pending);

struct audit_writer {
	char      aw_path[CONFIG_PATH_MAX];
	char      aw_state[CONFIG_PATH_MAX];  /* last checkpoint's seq and hash (audit/resume.h) */
	int       aw_fd;
	off_t     aw_off;                     /* end of our last complete line (where to cut) */
	int       aw_dirty;                   /* a cut back to aw_off is still to be done */
	struct audit_chain aw_chain;
	EVP_PKEY *aw_key;
	char      aw_key_id[AUDIT_HASH_HEX_LEN + 1];
	unsigned  aw_cp_records;              /* checkpoint after this many records */
	uint64_t  aw_cp_ms;                   /* ... or after this long */
	uint64_t  aw_cp_first;                /* first seq not yet covered by a checkpoint */
	uint64_t  aw_cp_last_ms;              /* monotonic ms of the last checkpoint (or open) */
	struct audit_queue aw_queue;
	size_t    aw_queue_len, aw_queue_bytes;
	int       aw_healthy;
	int       aw_fail_closed;
	int       aw_syslog;
	uint64_t  aw_lost;                    /* events never recorded: the queue was full */
	/* The current failure, told in the audit.recovered record once it is over. */
	int       aw_fail_errno;
	char      aw_fail_since[AUDIT_TIME_LEN + 1];
	uint64_t  aw_fail_lost;               /* aw_lost when it began */
	size_t    aw_fail_queued_max;
};

static int writer_emit(struct audit_writer *w, uint16_t event, int worker, const char *outcome,
    const char *reason, json_t *fields);

/* ---------- clocks ---------- */

static void
writer_now(char out[AUDIT_TIME_LEN + 1])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	audit_time_format(&ts, out);
}

static uint64_t
writer_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t
writer_uncovered(const struct audit_writer *w)
{
	return w->aw_chain.ac_seq + 1 - w->aw_cp_first;
}

/* ---------- appending ---------- */

/*
 * Appends buf whole, or leaves the file as it was: a short write (disk full) is cut back,
 * so the file never ends in half a record.  With O_APPEND our bytes are the last ones, so
 * the cut is at the file's size minus what we wrote (right even if someone truncated it).
 */
static int
writer_put(struct audit_writer *w, const char *buf, size_t len)
{
	struct stat st;
	size_t done = 0;
	ssize_t n;
	int saved;

	if (w->aw_dirty) {
		if (ftruncate(w->aw_fd, w->aw_off) == -1)
			return -1;
		w->aw_dirty = 0;
	}
	while (done < len) {
		n = write(w->aw_fd, buf + done, len - done);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		saved = n == 0 ? EIO : errno;
		if (done > 0) {
			if (fstat(w->aw_fd, &st) == 0 && st.st_size >= (off_t)done)
				w->aw_off = st.st_size - (off_t)done;
			/* Retried before the next write when it fails now. */
			w->aw_dirty = ftruncate(w->aw_fd, w->aw_off) == -1;
		}
		errno = saved;
		return -1;
	}
	w->aw_off += (off_t)len;
	return 0;
}

static int
writer_flush(struct audit_writer *w)
{
	struct audit_pending *p;

	while ((p = STAILQ_FIRST(&w->aw_queue)) != NULL) {
		if (writer_put(w, p->ap_line, p->ap_len) == -1)
			return -1;
		STAILQ_REMOVE_HEAD(&w->aw_queue, ap_entry);
		w->aw_queue_len--;
		w->aw_queue_bytes -= p->ap_len;
		free(p);
	}
	return 0;
}

static void
writer_failed(struct audit_writer *w, int err)
{
	if (!w->aw_healthy)
		return;
	w->aw_healthy = 0;
	w->aw_fail_errno = err;
	w->aw_fail_lost = w->aw_lost;
	w->aw_fail_queued_max = 0;
	writer_now(w->aw_fail_since);
	log_warnx("audit: cannot write %s: %s; records are kept in memory and written when it "
	    "works again%s", w->aw_path, strerror(err), w->aw_fail_closed ?
	    "; new connections are refused until then (audit-fail-closed)" : "");
}

/* The log is writable again: say so, in the log itself, with what was lost. */
static void
writer_recovered(struct audit_writer *w)
{
	uint64_t lost = w->aw_lost - w->aw_fail_lost;
	char reason[160];
	json_t *f;

	w->aw_healthy = 1;
	log_info("audit: %s is writable again (%zu records were waiting, %llu lost)", w->aw_path,
	    w->aw_fail_queued_max, (unsigned long long)lost);
	snprintf(reason, sizeof(reason), "audit log could not be written: %s",
	    strerror(w->aw_fail_errno));
	f = json_pack("{s:s, s:s, s:I, s:I}", "file", w->aw_path, "failed_since",
	    w->aw_fail_since, "queued_max", (json_int_t)w->aw_fail_queued_max, "lost",
	    (json_int_t)lost);
	writer_emit(w, AUDIT_LOG_RECOVERED, AUDIT_WORKER_NONE, "failure", reason, f);
	json_decref(f);
}

/* The syslog copy: a second, remote trail that truncating the file cannot reach. */
static void
writer_syslog(const struct audit_writer *w, const char *line, int failure)
{
	if (w->aw_syslog)
		syslog(LOG_AUTHPRIV | (failure ? LOG_WARNING : LOG_INFO), "%s", line);
}

/*
 * Puts an encoded record (seq = chain + 1) into the chain: into the file, or the queue when
 * the file cannot take it, then the syslog copy.  Returns 0 when written, -1 when it waits
 * in the queue, -2 when it was lost (the queue is full: it never entered the chain).
 */
static int
writer_commit(struct audit_writer *w, const char *line, size_t len, int failure)
{
	/* The common case: nothing waits, one write(2) of line + '\n' from the stack. */
	int direct = w->aw_healthy && STAILQ_EMPTY(&w->aw_queue) && len < AUDIT_LINE_MAX;
	struct audit_chain before = w->aw_chain;
	struct audit_pending *p;
	int err = 0;

	if (!direct && w->aw_queue_bytes + len + 1 > AUDIT_QUEUE_BYTES_MAX) {
		if (w->aw_lost++ == w->aw_fail_lost)
			log_warnx("audit: %zu records wait for %s; further events are lost "
			    "(counted) until it can be written", w->aw_queue_len, w->aw_path);
		return -2;
	}
	audit_chain_advance(&w->aw_chain, w->aw_chain.ac_seq + 1, line, len);
	if (direct) {
		char buf[AUDIT_LINE_MAX + 1];

		memcpy(buf, line, len);
		buf[len] = '\n';
		if (writer_put(w, buf, len + 1) == 0) {
			writer_syslog(w, line, failure);
			return 0;
		}
		err = errno;
	}
	/* It waits in order; if even that fails, it leaves the chain as if never made. */
	if ((p = malloc(sizeof(*p) + len + 1)) == NULL) {
		w->aw_chain = before;
		w->aw_lost++;
		if (err != 0)
			writer_failed(w, err);
		return -2;
	}
	memcpy(p->ap_line, line, len);
	p->ap_line[len] = '\n';
	p->ap_len = len + 1;
	STAILQ_INSERT_TAIL(&w->aw_queue, p, ap_entry);
	w->aw_queue_len++;
	w->aw_queue_bytes += p->ap_len;
	writer_syslog(w, line, failure);
	if (err != 0)
		writer_failed(w, err);
	if (w->aw_queue_len > w->aw_fail_queued_max)
		w->aw_fail_queued_max = w->aw_queue_len;
	if (writer_flush(w) == -1) {
		writer_failed(w, errno);
		return -1;
	}
	if (!w->aw_healthy)
		writer_recovered(w);
	return 0;
}

/* ---------- records ---------- */

static const char *
audit_outcome_of(const json_t *rec)
{
	const char *s = json_string_value(json_object_get(rec, "outcome"));

	return s != NULL ? s : "";
}

static int
writer_emit(struct audit_writer *w, uint16_t event, int worker, const char *outcome,
    const char *reason, json_t *fields)
{
	char now[AUDIT_TIME_LEN + 1];
	const char *name = audit_event_name(event);
	json_t *rec;
	char *line;
	size_t len;
	int rc, failure = 0;

	writer_now(now);
	rec = audit_record_make(&w->aw_chain, now, name != NULL ? name : "unknown", worker,
	    outcome, reason, fields);
	line = rec != NULL ? audit_record_dump(rec, &len) : NULL;
	if (line == NULL && rec != NULL) {
		/* Too large for a line: keep who/what/when, say what was dropped. */
		json_decref(rec);
		rec = audit_record_make(&w->aw_chain, now, name != NULL ? name : "unknown", worker,
		    outcome, reason, NULL);
		if (rec != NULL && json_object_set_new(rec, AUDIT_RENAME_PREFIX "dropped",
		    json_string("event fields larger than a record")) == 0)
			line = audit_record_dump(rec, &len);
	}
	if (rec != NULL)
		failure = strcmp(audit_outcome_of(rec), "failure") == 0;
	json_decref(rec);
	if (line == NULL) {
		w->aw_lost++;
		log_warnx("audit: cannot encode a %s record (out of memory)",
		    name != NULL ? name : "unknown");
		return -2;
	}
	if (name == NULL)
		log_warnx("audit: event type %u has no name; recorded as \"unknown\"", event);
	rc = writer_commit(w, line, len, failure);
	free(line);
	return rc;
}

/* ---------- checkpoints ---------- */

static void
writer_checkpoint(struct audit_writer *w)
{
	char now[AUDIT_TIME_LEN + 1];
	char *line;
	size_t len;
	int rc;

	writer_now(now);
	line = audit_checkpoint_make(&w->aw_chain, now, w->aw_cp_first, w->aw_key, w->aw_key_id,
	    &len);
	if (line == NULL) {
		log_warnx("audit: cannot sign a checkpoint");
		return;
	}
	rc = writer_commit(w, line, len, 0);
	free(line);
	if (rc == -2)
		return;                           /* not in the chain: the next tick tries again */
	w->aw_cp_first = w->aw_chain.ac_seq + 1;
	w->aw_cp_last_ms = writer_mono_ms();
	if (rc == 0) {
		/* What the signature vouches for must survive a power cut. */
		if (fdatasync(w->aw_fd) == -1)
			log_warn("audit: fdatasync %s", w->aw_path);
		else
			resume_state_save(w->aw_state, &w->aw_chain);
	}
}

/* ---------- opening ---------- */

static int
writer_open_fd(const char *path, char *err, size_t errlen)
{
	const int flags = O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW;
	int fd = open(path, flags);

	/*
	 * A new file gets its mode set explicitly: keyd runs with umask 077, and the log is
	 * meant to be readable by the log group (logrotate, the auditor's tools).
	 */
	if (fd == -1 && errno == ENOENT) {
		fd = open(path, flags | O_CREAT | O_EXCL, AUDIT_LOG_MODE);
		if (fd >= 0 && fchmod(fd, AUDIT_LOG_MODE) == -1) {
			snprintf(err, errlen, "cannot set the mode of audit log %s: %s", path,
			    strerror(errno));
			close(fd);
			return -1;
		}
		if (fd == -1 && errno == EEXIST)
			fd = open(path, flags);   /* created meanwhile by someone else: just open it */
	}
	if (fd == -1)
		snprintf(err, errlen, "cannot open audit log %s: %s", path, strerror(errno));
	return fd;
}

struct audit_writer *
audit_writer_open(const struct config *cfg, char *err, size_t errlen)
{
	char keypath[CONFIG_PATH_MAX], pubpath[CONFIG_PATH_MAX];
	struct audit_resume rs;
	struct audit_writer *w;
	struct stat st;
	int created;
	json_t *f;

	if (cfg->audit_log[0] == '\0') {
		snprintf(err, errlen, "no audit log configured");
		return NULL;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		snprintf(err, errlen, "audit: out of memory");
		return NULL;
	}
	w->aw_fd = -1;
	STAILQ_INIT(&w->aw_queue);
	snprintf(w->aw_path, sizeof(w->aw_path), "%s", cfg->audit_log);
	if (audit_path_sibling(w->aw_path, ".key", keypath, sizeof(keypath)) == -1 ||
	    audit_path_sibling(w->aw_path, ".pub", pubpath, sizeof(pubpath)) == -1 ||
	    audit_path_sibling(w->aw_path, ".state", w->aw_state, sizeof(w->aw_state)) == -1 ||
	    strcmp(keypath, w->aw_path) == 0 || strcmp(pubpath, w->aw_path) == 0 ||
	    strcmp(w->aw_state, w->aw_path) == 0) {
		snprintf(err, errlen, "audit log %s: its key, public key and state files would "
		    "collide with it; name it like audit.jsonl", w->aw_path);
		goto fail;
	}
	if (audit_key_open(keypath, pubpath, &w->aw_key, &created, err, errlen) == -1 ||
	    audit_key_id(w->aw_key, w->aw_key_id) == -1)
		goto fail;
	if ((w->aw_fd = writer_open_fd(w->aw_path, err, errlen)) == -1)
		goto fail;
	if (resume_find(w->aw_fd, w->aw_path, w->aw_state, &rs, err, errlen) == -1 ||
	    fstat(w->aw_fd, &st) == -1)
		goto fail;
	if (rs.rs_note[0] != '\0')
		log_warnx("audit: %s", rs.rs_note);
	w->aw_chain = rs.rs_chain;
	w->aw_cp_first = rs.rs_cp_first;
	w->aw_off = st.st_size;
	w->aw_healthy = 1;
	w->aw_fail_closed = cfg->audit_fail_closed;
	w->aw_cp_records = cfg->checkpoint_records > 0 ? cfg->checkpoint_records : 1000;
	w->aw_cp_ms = (uint64_t)(cfg->checkpoint_seconds > 0 ? cfg->checkpoint_seconds : 60) * 1000;
	w->aw_cp_last_ms = writer_mono_ms();
	if ((w->aw_syslog = cfg->audit_syslog) != 0) {
		/* Connect now: keyd's sandbox, entered later, allows no new socket. */
		openlog(AUDIT_SYSLOG_IDENT, LOG_NDELAY | LOG_PID, LOG_AUTHPRIV);
	}
	f = json_pack("{s:s, s:s, s:b}", "file", w->aw_path, "audit_key", w->aw_key_id,
	    "key_created", created);
	/* The first record of every start: which file and key, and what was found amiss. */
	writer_emit(w, AUDIT_LOG_OPENED, AUDIT_WORKER_NONE, rs.rs_note[0] != '\0' ? "failure" :
	    "success", rs.rs_note, f);
	json_decref(f);
	return w;
fail:
	if (w->aw_fd != -1)
		close(w->aw_fd);
	EVP_PKEY_free(w->aw_key);
	free(w);
	return NULL;
}

/* ---------- the API keyd uses ---------- */

int
audit_write(struct audit_writer *w, uint16_t event, int worker, const char *outcome,
    const char *reason, json_t *fields)
{
	int rc;

	/* Only the writer makes checkpoints: an unsigned one would read as forged. */
	if (event == AUDIT_CHECKPOINT) {
		log_warnx("audit: refusing a checkpoint event from outside the writer");
		return -1;
	}
	rc = writer_emit(w, event, worker, outcome, reason, fields);
	if (rc != -2 && writer_uncovered(w) >= w->aw_cp_records)
		writer_checkpoint(w);
	return rc == 0 && w->aw_healthy ? 0 : -1;
}

void
audit_writer_tick(struct audit_writer *w)
{
	if (!w->aw_healthy && writer_flush(w) == 0)
		writer_recovered(w);
	if (writer_uncovered(w) > 0 && writer_mono_ms() - w->aw_cp_last_ms >= w->aw_cp_ms)
		writer_checkpoint(w);
}

int
audit_writer_next_ms(const struct audit_writer *w)
{
	uint64_t now = writer_mono_ms(), due;
	int ms = -1;

	if (writer_uncovered(w) > 0) {
		due = w->aw_cp_last_ms + w->aw_cp_ms;
		ms = due <= now ? 0 : due - now > (uint64_t)INT32_MAX ? INT32_MAX : (int)(due - now);
	}
	if (!w->aw_healthy && (ms < 0 || ms > AUDIT_RETRY_MS))
		ms = AUDIT_RETRY_MS;
	return ms;
}

int
audit_writer_reopen(struct audit_writer *w, char *err, size_t errlen)
{
	return audit_writer_reopen_by(w, NULL, err, errlen);
}

int
audit_writer_reopen_by(struct audit_writer *w, json_t *fields, char *err, size_t errlen)
{
	struct stat oldst, newst;
	int fd, moved;
	json_t *f;

	/* Seal the old file with a signed checkpoint: its end is then provable on its own. */
	if (writer_uncovered(w) > 0)
		writer_checkpoint(w);
	if ((fd = writer_open_fd(w->aw_path, err, errlen)) == -1)
		return -1;
	if (fstat(fd, &newst) == -1 || fstat(w->aw_fd, &oldst) == -1) {
		snprintf(err, errlen, "cannot stat audit log %s: %s", w->aw_path, strerror(errno));
		close(fd);
		return -1;
	}
	moved = newst.st_dev != oldst.st_dev || newst.st_ino != oldst.st_ino;
	if (moved) {
		if (newst.st_size > 0)
			log_warnx("audit: the new %s is not empty; appending to it", w->aw_path);
		/* A half record the old file still holds is cut before we leave it. */
		if (w->aw_dirty && ftruncate(w->aw_fd, w->aw_off) == -1)
			log_warn("audit: cannot cut a partial record from the rotated log");
		close(w->aw_fd);
		w->aw_fd = fd;
		w->aw_off = newst.st_size;
		w->aw_dirty = 0;
		/* Someone else's torn line must not swallow our first record. */
		if (newst.st_size > 0) {
			char last;

			if (pread(fd, &last, 1, newst.st_size - 1) == 1 && last != '\n')
				(void)writer_put(w, "\n", 1);
		}
	} else
		close(fd);
	f = json_is_object(fields) ? json_deep_copy(fields) : json_object();
	if (f != NULL && (json_object_set_new(f, "file", json_string(w->aw_path)) ||
	    json_object_set_new(f, "moved", json_boolean(moved)))) {
		json_decref(f);
		f = NULL;
	}
	writer_emit(w, AUDIT_LOG_ROTATED, AUDIT_WORKER_NONE, "success",
	    moved ? "audit log reopened after rotation" : "audit log reopened (file not moved)", f);
	json_decref(f);
	return 0;
}

int
audit_writer_healthy(const struct audit_writer *w)
{
	return w->aw_healthy;
}

uint64_t
audit_writer_lost(const struct audit_writer *w)
{
	return w->aw_lost;
}

uint64_t
audit_writer_seq(const struct audit_writer *w)
{
	return w->aw_chain.ac_seq;
}

size_t
audit_writer_queued(const struct audit_writer *w)
{
	return w->aw_queue_len;
}

void
audit_writer_close(struct audit_writer *w)
{
	struct audit_pending *p;

	if (w == NULL)
		return;
	if (writer_uncovered(w) > 0)
		writer_checkpoint(w);
	if (writer_flush(w) == -1)
		log_warn("audit: %zu records could not be written to %s and are lost",
		    w->aw_queue_len, w->aw_path);
	while ((p = STAILQ_FIRST(&w->aw_queue)) != NULL) {
		STAILQ_REMOVE_HEAD(&w->aw_queue, ap_entry);
		free(p);
	}
	if (w->aw_dirty && ftruncate(w->aw_fd, w->aw_off) == -1)
		log_warn("audit: cannot cut a partial record from %s", w->aw_path);
	if (fdatasync(w->aw_fd) == -1 && errno != EINVAL)
		log_warn("audit: fdatasync %s", w->aw_path);
	close(w->aw_fd);
	if (w->aw_syslog)
		closelog();
	EVP_PKEY_free(w->aw_key);
	free(w);
}
