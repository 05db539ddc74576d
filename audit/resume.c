/*
 * Resuming the audit chain at start-up: read back the log's last record (a bounded window
 * from the end: never the whole file), compare it with the state file, and continue from
 * whichever is later, so that seq is never reused and a lost tail is noticed and recorded.
 */
#include "audit/resume.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"

#define RESUME_TAIL_MAX   (1u << 20)  /* bytes read back from the end to find the last record */
#define RESUME_STATE_MODE 0640

/* ---------- state file ---------- */

void
resume_state_save(const char *state_path, const struct audit_chain *c)
{
	char tmp[4096 + 8];
	int fd, ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", state_path) >= (int)sizeof(tmp))
		return;
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, RESUME_STATE_MODE);
	if (fd == -1) {
		log_warn("audit: cannot write %s", tmp);
		return;
	}
	/* Through a temporary name and rename(2): a crash leaves the old state or the new. */
	ok = dprintf(fd, "{\"seq\":%llu,\"hash\":\"%s\"}\n", (unsigned long long)c->ac_seq,
	    c->ac_prev) > 0 && fsync(fd) == 0;
	if (close(fd) == -1)
		ok = 0;
	if (!ok || rename(tmp, state_path) == -1) {
		log_warn("audit: cannot write %s", state_path);
		(void)unlink(tmp);
	}
}

static int
resume_state_load(const char *path, struct audit_chain *c)
{
	json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	json_t *seq = json_object_get(o, "seq");
	const char *hash = json_string_value(json_object_get(o, "hash"));
	int ok;

	ok = json_is_integer(seq) && json_integer_value(seq) >= 1 && hash != NULL &&
	    strlen(hash) == AUDIT_HASH_HEX_LEN;
	if (ok) {
		c->ac_seq = (uint64_t)json_integer_value(seq);
		memcpy(c->ac_prev, hash, sizeof(c->ac_prev));
	} else if (o != NULL)
		log_warnx("audit: %s is not an audit state file; ignored", path);
	json_decref(o);
	return ok;
}

/* ---------- the log's last record ---------- */

/* Ends a torn last line with a newline, so the next record starts a line of its own. */
static int
resume_seal(int fd, const char *path, const char *buf, size_t n, struct audit_resume *r,
    char *err, size_t errlen)
{
	size_t torn = 0;

	while (torn < n && buf[n - 1 - torn] != '\n')
		torn++;
	snprintf(r->rs_note, sizeof(r->rs_note), "the last line of %s was torn (%zu bytes "
	    "without a newline); it was ended with a newline and left in place", path, torn);
	if (write(fd, "\n", 1) != 1) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Finds the last line of the file that is a record: the chain continues from its bytes. */
static int
resume_tail(int fd, const char *path, struct audit_resume *r, struct audit_chain *c,
    int *found, char *err, size_t errlen)
{
	struct stat st;
	size_t n, end, start;
	off_t base;
	char *buf, why[128];

	*found = 0;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "audit log %s is not a regular file", path);
		return -1;
	}
	if (st.st_size == 0)
		return 0;
	n = st.st_size > (off_t)RESUME_TAIL_MAX ? RESUME_TAIL_MAX : (size_t)st.st_size;
	base = st.st_size - (off_t)n;
	if ((buf = malloc(n + 1)) == NULL || pread(fd, buf, n, base) != (ssize_t)n) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		free(buf);
		return -1;
	}
	if (buf[n - 1] != '\n') {
		if (resume_seal(fd, path, buf, n, r, err, errlen) == -1) {
			free(buf);
			return -1;
		}
		/* Now a line of its own: a record that only lacked its newline still counts. */
		buf[n++] = '\n';
	}
	/* buf[0..n) ends with '\n': walk back line by line to the last record. */
	for (end = n; end > 0; end = start) {
		struct audit_rec rec;

		start = end - 1;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		if (start == 0 && base != 0)
			break;                        /* a line longer than the window */
		if (audit_rec_parse(buf + start, end - 1 - start, &rec, why, sizeof(why)) == 0) {
			audit_chain_advance(c, rec.ar_seq, buf + start, end - 1 - start);
			audit_rec_free(&rec);
			*found = 1;
			break;
		}
	}
	free(buf);
	return 0;
}

int
resume_find(int fd, const char *path, const char *state_path, struct audit_resume *r,
    char *err, size_t errlen)
{
	struct audit_chain fromlog, fromstate;
	int inlog, instate;
	struct stat st;

	memset(r, 0, sizeof(*r));
	audit_chain_init(&fromlog);
	audit_chain_init(&fromstate);
	if (resume_tail(fd, path, r, &fromlog, &inlog, err, errlen) == -1)
		return -1;
	instate = resume_state_load(state_path, &fromstate);
	if (!inlog && !instate) {
		/* Only a lone newline (a sealed empty torn line) may precede the first record. */
		if (fstat(fd, &st) == 0 && st.st_size > 1) {
			snprintf(err, errlen, "no record found at the end of %s: it is not an audit "
			    "log; move it aside", path);
			return -1;
		}
		audit_chain_init(&r->rs_chain);
	} else if (inlog && (!instate || fromlog.ac_seq > fromstate.ac_seq ||
	    (fromlog.ac_seq == fromstate.ac_seq &&
	    strcmp(fromlog.ac_prev, fromstate.ac_prev) == 0))) {
		r->rs_chain = fromlog;
	} else {
		/* The state is later, or the same seq with other bytes: records went missing. */
		if (inlog)
			snprintf(r->rs_note, sizeof(r->rs_note), "%s ends at seq %llu but seq %llu "
			    "was checkpointed: records are missing or altered", path,
			    (unsigned long long)fromlog.ac_seq, (unsigned long long)fromstate.ac_seq);
		r->rs_chain = fromstate;
	}
	/* The state is written at checkpoints: what follows it is not yet covered by one. */
	r->rs_cp_first = instate && fromstate.ac_seq <= r->rs_chain.ac_seq ?
	    fromstate.ac_seq + 1 : r->rs_chain.ac_seq + 1;
	return 0;
}
