/*
 * The audit log verifier.  Streaming, one line at a time: each line's exact bytes are
 * hashed (never re-serialised JSON) and must be what the next record names as prev, with
 * seq one more.  At the first break it reads ahead just enough to say what happened:
 *
 *   next record chains to the one before  -> this one was inserted (spliced in)
 *   seq right, prev wrong, next chains on -> the previous record was altered
 *   seq right, prev wrong, next breaks    -> this record was altered
 *   seq too high, missing seq found later -> records out of order
 *   seq too high, never found             -> records deleted; at a file boundary, the
 *                                            earlier file's tail was truncated
 *   seq too low                           -> out of order, duplicated, or seq edited
 *
 * Checkpoints are verified with the audit public key; a valid one vouches for every record
 * before it.  Records after the last checkpoint are chained but unsigned: an edit of the
 * very last lines can only be caught against a copy (syslog), which the report says.
 */
#include "audit/verify.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit/checkpoint.h"
#include "audit/record.h"
#include "policy/config.h"

/* One line as read, with what parsing made of it. */
struct vline {
	const char *vl_file;
	uint64_t    vl_lineno;
	int         vl_first;                 /* first line of its file */
	int         vl_newline, vl_toolong;
	char       *vl_buf;
	size_t      vl_len;
	int         vl_parsed;
	struct audit_rec vl_rec;
	char        vl_hash[AUDIT_HASH_HEX_LEN + 1];
	char        vl_why[160];
};

/* The last record that checked out: the next one must chain to it. */
struct vlast {
	const char *vs_file;
	uint64_t    vs_lineno;
	uint64_t    vs_seq;
	char        vs_hash[AUDIT_HASH_HEX_LEN + 1];
	int         vs_signed;                /* a checkpoint whose signature verified */
};

struct vfile {
	const char *vf_path;
	uint64_t    vf_first_seq;
	int         vf_has_first;             /* the first line is a record */
	int         vf_empty;
};

struct verifier {
	FILE         *v_out, *v_err;
	struct vfile *v_files;
	size_t        v_nfiles, v_cur;
	FILE         *v_f;
	struct audit_lines v_lines;
	int           v_next_first;
	EVP_PKEY     *v_pub;
	const char   *v_pubpath;
	char          v_key_id[AUDIT_HASH_HEX_LEN + 1];
	int           v_have_last;
	struct vlast  v_last;
	uint64_t      v_start_seq, v_records, v_checkpoints, v_last_cp;
	int           v_have_cp;
	char          v_msg[3 * CONFIG_PATH_MAX]; /* a problem: at most two paths and some words */
};

/* ---------- reading ---------- */

static void
vline_free(struct vline *l)
{
	if (l->vl_parsed)
		audit_rec_free(&l->vl_rec);
	free(l->vl_buf);
	memset(l, 0, sizeof(*l));
}

static int
verify_open_next(struct verifier *v)
{
	while (v->v_cur < v->v_nfiles && v->v_files[v->v_cur].vf_empty)
		v->v_cur++;
	if (v->v_cur >= v->v_nfiles)
		return 0;
	v->v_f = fopen(v->v_files[v->v_cur].vf_path, "re");
	if (v->v_f == NULL) {
		fprintf(v->v_err, "redoubt audit verify: cannot open %s: %s\n",
		    v->v_files[v->v_cur].vf_path, strerror(errno));
		return -1;
	}
	audit_lines_init(&v->v_lines, v->v_f);
	v->v_next_first = 1;
	return 1;
}

/* The next line of the chain, across files.  1, 0 at the end, -1 when unreadable. */
static int
vline_read(struct verifier *v, struct vline *l)
{
	int r;

	memset(l, 0, sizeof(*l));
	for (;;) {
		if (v->v_f == NULL && (r = verify_open_next(v)) <= 0)
			return r;
		r = audit_lines_next(&v->v_lines);
		if (r == -1) {
			fprintf(v->v_err, "redoubt audit verify: cannot read %s: %s\n",
			    v->v_files[v->v_cur].vf_path, strerror(errno));
			return -1;
		}
		if (r == 1)
			break;
		audit_lines_free(&v->v_lines);
		fclose(v->v_f);
		v->v_f = NULL;
		v->v_cur++;
	}
	l->vl_file = v->v_files[v->v_cur].vf_path;
	l->vl_lineno = v->v_lines.al_lineno;
	l->vl_first = v->v_next_first;
	v->v_next_first = 0;
	l->vl_newline = v->v_lines.al_newline;
	l->vl_toolong = v->v_lines.al_toolong;
	l->vl_len = v->v_lines.al_len;
	audit_hash_hex(v->v_lines.al_buf, l->vl_len, l->vl_hash);
	if (!l->vl_toolong)
		l->vl_parsed = audit_rec_parse(v->v_lines.al_buf, l->vl_len, &l->vl_rec, l->vl_why,
		    sizeof(l->vl_why)) == 0;
	/* A copy: the look-ahead reads the next line while this one is still needed. */
	if ((l->vl_buf = malloc(l->vl_len + 1)) == NULL) {
		fprintf(v->v_err, "redoubt audit verify: out of memory\n");
		vline_free(l);
		return -1;
	}
	memcpy(l->vl_buf, v->v_lines.al_buf, l->vl_len + 1);
	return 1;
}

/* ---------- reporting ---------- */

/* Prints "FILE:LINE: seq N: message" and returns AUDIT_EXIT_TAMPERED. */
static int
verify_report(struct verifier *v, const char *file, uint64_t lineno, uint64_t seq,
    const char *msg)
{
	fprintf(v->v_out, "%s:%llu: ", file, (unsigned long long)lineno);
	if (seq != 0)
		fprintf(v->v_out, "seq %llu: ", (unsigned long long)seq);
	fprintf(v->v_out, "%s\n", msg);
	return AUDIT_EXIT_TAMPERED;
}

/*
 * A macro, not a variadic function: the format stays a literal that the compiler checks,
 * and clang-tidy 14's va_list checker (which misfires on vsnprintf) has nothing to see.
 */
#define VERIFY_PROBLEM(v, file, lineno, seq, ...)                                    \
	(snprintf((v)->v_msg, sizeof((v)->v_msg), __VA_ARGS__),                        \
	    verify_report((v), (file), (lineno), (seq), (v)->v_msg))

static int
verify_problem_at(struct verifier *v, const struct vline *l, const char *what)
{
	return verify_report(v, l->vl_file, l->vl_lineno, l->vl_parsed ? l->vl_rec.ar_seq : 0,
	    what);
}

/* ---------- diagnosis at a break in the chain ---------- */

static int
vline_chains_to(const struct vline *l, uint64_t seq, const char *hash)
{
	return l->vl_parsed && l->vl_rec.ar_seq == seq + 1 && strcmp(l->vl_rec.ar_prev, hash) == 0;
}

/* Reads on (from c) for the record with seq want; its line number in *where. */
static int
verify_scan_for(struct verifier *v, struct vline *c, uint64_t want, const char **file,
    uint64_t *where)
{
	do {
		if (c->vl_parsed && c->vl_rec.ar_seq == want) {
			*file = c->vl_file;
			*where = c->vl_lineno;
			return 1;
		}
		vline_free(c);
	} while (vline_read(v, c) > 0);
	return 0;
}

static void
verify_range(char *buf, size_t len, uint64_t from, uint64_t to)
{
	if (from == to)
		snprintf(buf, len, "record %llu", (unsigned long long)from);
	else
		snprintf(buf, len, "records %llu..%llu", (unsigned long long)from,
		    (unsigned long long)to);
}

static int
verify_gap(struct verifier *v, const struct vline *b)
{
	const struct vlast *a = &v->v_last;
	char range[64];

	verify_range(range, sizeof(range), a->vs_seq + 1, b->vl_rec.ar_seq - 1);
	if (b->vl_first && a->vs_file != b->vl_file)
		return VERIFY_PROBLEM(v, a->vs_file, a->vs_lineno, a->vs_seq, "log ends at seq %llu "
		    "but %s continues from a different record (seq %llu): truncated tail, %s "
		    "missing", (unsigned long long)a->vs_seq, b->vl_file,
		    (unsigned long long)b->vl_rec.ar_seq, range);
	return VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, b->vl_rec.ar_seq, "seq gap: %llu "
	    "follows %llu (%s deleted)", (unsigned long long)b->vl_rec.ar_seq,
	    (unsigned long long)a->vs_seq, range);
}

/* b does not continue the chain at v_last: find out why, with one line of look-ahead. */
static int
verify_diagnose(struct verifier *v, struct vline *b)
{
	const struct vlast *a = &v->v_last;
	uint64_t bseq = b->vl_rec.ar_seq, want = a->vs_seq + 1, where = 0;
	struct vline c;
	const char *wfile = NULL;
	int hc, rc;

	hc = vline_read(v, &c) > 0;
	if (strcmp(b->vl_hash, a->vs_hash) == 0)
		rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "duplicate record (repeats "
		    "%s:%llu)", a->vs_file, (unsigned long long)a->vs_lineno);
	else if (hc && vline_chains_to(&c, a->vs_seq, a->vs_hash) &&
	    vline_chains_to(b, c.vl_rec.ar_seq, c.vl_hash))
		rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "records out of order: "
		    "seq %llu comes before seq %llu (%s:%llu): swapped", (unsigned long long)bseq,
		    (unsigned long long)c.vl_rec.ar_seq, c.vl_file, (unsigned long long)c.vl_lineno);
	else if (hc && vline_chains_to(&c, a->vs_seq, a->vs_hash))
		rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "record inserted: it is not "
		    "part of this chain (the next record, line %llu, chains to line %llu): spliced "
		    "in or replayed", (unsigned long long)c.vl_lineno,
		    (unsigned long long)a->vs_lineno);
	else if (bseq == want) {
		if (hc && !vline_chains_to(&c, bseq, b->vl_hash))
			rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "record altered (its "
			    "prev does not match line %llu and the next record does not chain to it)",
			    (unsigned long long)a->vs_lineno);
		else if (a->vs_signed)
			rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "record does not chain "
			    "to the signed checkpoint at seq %llu: it and the records after it were "
			    "rewritten", (unsigned long long)a->vs_seq);
		else
			rc = VERIFY_PROBLEM(v, a->vs_file, a->vs_lineno, a->vs_seq, "record altered "
			    "(hash chain broken at the next record, %s:%llu)", b->vl_file,
			    (unsigned long long)b->vl_lineno);
	} else if (strcmp(b->vl_rec.ar_prev, a->vs_hash) == 0)
		rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "record altered (seq field: "
		    "%llu expected here)", (unsigned long long)want);
	else if (bseq > want) {
		if (hc && verify_scan_for(v, &c, want, &wfile, &where))
			rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "records out of order: "
			    "seq %llu comes before seq %llu (%s:%llu)", (unsigned long long)bseq,
			    (unsigned long long)want, wfile, (unsigned long long)where);
		else
			rc = verify_gap(v, b);
	} else if (b->vl_first && a->vs_file != b->vl_file)
		rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "%s starts at seq %llu, which "
		    "%s already covers: overlapping files (one given twice?)", b->vl_file,
		    (unsigned long long)bseq, a->vs_file);
	else
		rc = VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, bseq, "records out of order: seq "
		    "%llu follows seq %llu (line %llu)", (unsigned long long)bseq,
		    (unsigned long long)a->vs_seq, (unsigned long long)a->vs_lineno);
	if (hc)
		vline_free(&c);
	return rc;
}

/* ---------- one record ---------- */

static int
verify_checkpoint(struct verifier *v, const struct vline *b)
{
	uint64_t first = 0, last = 0, seq = b->vl_rec.ar_seq;
	char why[160];

	switch (audit_checkpoint_check(b->vl_buf, b->vl_len, &b->vl_rec, v->v_pub, v->v_key_id,
	    &first, &last, why, sizeof(why))) {
	case AUDIT_CP_OK:
		break;
	case AUDIT_CP_OTHER_KEY:
		return VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, seq, "checkpoint %s: %s",
		    why, v->v_pubpath);
	case AUDIT_CP_BAD_SIG:
		return VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, seq, "checkpoint at seq %llu: "
		    "signature does not verify with %s (forged or altered checkpoint)",
		    (unsigned long long)seq, v->v_pubpath);
	default:
		return VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, seq, "checkpoint malformed: %s "
		    "(forged or altered)", why);
	}
	/* The signature is good, so these were written by keyd: a mismatch is a writer bug. */
	if (last + 1 != seq || first > seq || (v->v_have_cp && first <= v->v_last_cp))
		return VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, seq, "checkpoint states the "
		    "range %llu..%llu, which does not fit its place", (unsigned long long)first,
		    (unsigned long long)last);
	v->v_have_cp = 1;
	v->v_last_cp = seq;
	v->v_checkpoints++;
	return 0;
}

static int
verify_record(struct verifier *v, struct vline *b)
{
	char what[256];
	int rc;

	if (b->vl_toolong)
		return VERIFY_PROBLEM(v, b->vl_file, b->vl_lineno, 0, "line longer than %u bytes: "
		    "not a record", AUDIT_READ_LINE_MAX);
	if (!b->vl_newline)
		return verify_problem_at(v, b, "torn record: the last line has no newline (a write "
		    "cut short, or the file was truncated)");
	if (!b->vl_parsed) {
		snprintf(what, sizeof(what), "not a valid record (%s): altered or torn", b->vl_why);
		return verify_problem_at(v, b, what);
	}
	if (!v->v_have_last) {
		if (b->vl_rec.ar_seq == 1 && strcmp(b->vl_rec.ar_prev, audit_genesis_prev) != 0)
			return verify_problem_at(v, b, "record altered (the first record's prev must be "
			    "64 zeros)");
		/*
		 * Every file the writer starts begins with one of these; a first record that is
		 * anything else lost the records before it.  (Later files are proved by the chain.)
		 */
		if (strcmp(b->vl_rec.ar_event, "audit.opened") != 0 &&
		    strcmp(b->vl_rec.ar_event, "audit.rotated") != 0)
			return verify_problem_at(v, b, "the log does not start with audit.opened or "
			    "audit.rotated: its first records were removed");
		v->v_start_seq = b->vl_rec.ar_seq;
	} else if (!vline_chains_to(b, v->v_last.vs_seq, v->v_last.vs_hash))
		return verify_diagnose(v, b);
	v->v_last.vs_signed = 0;
	if (strcmp(b->vl_rec.ar_event, AUDIT_CHECKPOINT_EVENT) == 0) {
		if ((rc = verify_checkpoint(v, b)) != 0)
			return rc;
		v->v_last.vs_signed = 1;
	}
	v->v_have_last = 1;
	v->v_last.vs_file = b->vl_file;
	v->v_last.vs_lineno = b->vl_lineno;
	v->v_last.vs_seq = b->vl_rec.ar_seq;
	memcpy(v->v_last.vs_hash, b->vl_hash, sizeof(v->v_last.vs_hash));
	v->v_records++;
	return 0;
}

/* ---------- files ---------- */

/* Reads each file's first record; sorts by its seq when every non-empty file has one. */
static int
verify_order(struct verifier *v)
{
	int sortable = 1;

	for (size_t i = 0; i < v->v_nfiles; i++) {
		struct vfile *f = &v->v_files[i];
		struct audit_lines l;
		struct audit_rec rec;
		char why[160];
		FILE *fp = fopen(f->vf_path, "re");
		int r;

		if (fp == NULL) {
			fprintf(v->v_err, "redoubt audit verify: cannot open %s: %s\n", f->vf_path,
			    strerror(errno));
			return -1;
		}
		audit_lines_init(&l, fp);
		r = audit_lines_next(&l);
		if (r == -1)
			fprintf(v->v_err, "redoubt audit verify: cannot read %s: %s\n", f->vf_path,
			    strerror(errno));
		else if (r == 0)
			f->vf_empty = 1;
		else if (!l.al_toolong && audit_rec_parse(l.al_buf, l.al_len, &rec, why,
		    sizeof(why)) == 0) {
			f->vf_has_first = 1;
			f->vf_first_seq = rec.ar_seq;
			audit_rec_free(&rec);
		} else
			sortable = 0;
		audit_lines_free(&l);
		fclose(fp);
		if (r == -1)
			return -1;
	}
	/* Insertion sort: a handful of files, and stable. */
	for (size_t i = 1; sortable && i < v->v_nfiles; i++) {
		struct vfile t = v->v_files[i];
		size_t j = i;

		if (t.vf_empty)
			continue;
		while (j > 0 && (v->v_files[j - 1].vf_empty ||
		    v->v_files[j - 1].vf_first_seq > t.vf_first_seq)) {
			v->v_files[j] = v->v_files[j - 1];
			j--;
		}
		v->v_files[j] = t;
	}
	return 0;
}

static int
verify_key(struct verifier *v, const char *pubkey, const char *first, char *path, size_t plen)
{
	char err[CONFIG_PATH_MAX + 64];

	if (pubkey == NULL) {
		if (audit_path_sibling(first, ".pub", path, plen) == -1) {
			fprintf(v->v_err, "redoubt audit verify: path too long: %s\n", first);
			return -1;
		}
		pubkey = path;
	}
	v->v_pubpath = pubkey;
	if (audit_pubkey_load(pubkey, &v->v_pub, err, sizeof(err)) == -1) {
		fprintf(v->v_err, "redoubt audit verify: %s%s\n", err,
		    pubkey == path ? " (give it with --pubkey FILE)" : "");
		return -1;
	}
	return audit_key_id(v->v_pub, v->v_key_id);
}

static void
verify_summary(struct verifier *v)
{
	fprintf(v->v_out, "intact: %llu record%s", (unsigned long long)v->v_records,
	    v->v_records == 1 ? "" : "s");
	if (v->v_records > 0)
		fprintf(v->v_out, ", seq %llu..%llu", (unsigned long long)v->v_start_seq,
		    (unsigned long long)v->v_last.vs_seq);
	fprintf(v->v_out, ", %llu checkpoint%s verified with %s\n",
	    (unsigned long long)v->v_checkpoints, v->v_checkpoints == 1 ? "" : "s", v->v_pubpath);
	if (v->v_records == 0)
		fprintf(v->v_out, "note: no records: nothing was verified (keyd writes audit.opened "
		    "first in every log it starts)\n");
	if (v->v_records > 0 && v->v_start_seq > 1)
		fprintf(v->v_out, "note: records before seq %llu are in older files\n",
		    (unsigned long long)v->v_start_seq);
	if (v->v_records > 0 && (!v->v_have_cp || v->v_last_cp < v->v_last.vs_seq))
		fprintf(v->v_out, "note: seq %llu..%llu follow the last checkpoint: chained but not "
		    "yet signed (compare them with the syslog copy)\n",
		    (unsigned long long)(v->v_have_cp ? v->v_last_cp + 1 : v->v_start_seq),
		    (unsigned long long)v->v_last.vs_seq);
}

int
audit_verify(char *const *files, size_t nfiles, const char *pubkey, FILE *out, FILE *err)
{
	char pubpath[CONFIG_PATH_MAX];
	struct verifier v;
	struct vline b;
	int rc = AUDIT_EXIT_INTACT, r;

	memset(&v, 0, sizeof(v));
	v.v_out = out;
	v.v_err = err;
	v.v_nfiles = nfiles;
	if (nfiles == 0 || (v.v_files = calloc(nfiles, sizeof(*v.v_files))) == NULL)
		return AUDIT_EXIT_UNREADABLE;
	for (size_t i = 0; i < nfiles; i++)
		v.v_files[i].vf_path = files[i];
	if (verify_key(&v, pubkey, files[0], pubpath, sizeof(pubpath)) == -1 ||
	    verify_order(&v) == -1) {
		rc = AUDIT_EXIT_UNREADABLE;
		goto done;
	}
	while ((r = vline_read(&v, &b)) > 0) {
		rc = verify_record(&v, &b);
		vline_free(&b);
		if (rc != 0)
			break;
	}
	if (rc == AUDIT_EXIT_INTACT && r == -1)
		rc = AUDIT_EXIT_UNREADABLE;
	if (rc == AUDIT_EXIT_INTACT)
		verify_summary(&v);
done:
	if (v.v_f != NULL) {
		audit_lines_free(&v.v_lines);
		fclose(v.v_f);
	}
	EVP_PKEY_free(v.v_pub);
	free(v.v_files);
	return rc;
}
