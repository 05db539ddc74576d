/*
 * The audit log (audit/): record format, hash chain, checkpoints, the writer's restart,
 * rotation and failure behaviour, the verifier's diagnosis of each kind of tampering, and
 * the reader's filters.
 *
 * Everything runs in a mkdtemp() directory that is removed afterwards.  The disk-full tests
 * run in a forked child: one with RLIMIT_FSIZE (a short write, then EFBIG: works unprivileged),
 * one on a 64 KiB tmpfs mounted in a private mount namespace (root or user namespaces;
 * skipped otherwise).
 *
 * Besides the tests, this program is the system test's log generator (there is no such
 * mode in the redoubt binary):
 *   test_audit generate DIR N [ROTATE_AT]  writes N events to DIR/audit.jsonl, moving it to
 *                                          DIR/audit.jsonl.1 and reopening at event ROTATE_AT
 *   test_audit bench DIR N                 prints the writer's throughput in records/s
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit/checkpoint.h"
#include "audit/events.h"
#include "audit/record.h"
#include "audit/show.h"
#include "audit/verify.h"
#include "audit/writer.h"
#include "common/log.h"
#include "policy/config.h"

#define CHILD_SKIP 77          /* a forked test could not set up its environment */

static char tdir[64];
static struct config cfg;

/* ---------- helpers ---------- */

static const char *
tpath(const char *name)
{
	static char buf[8][256];
	static unsigned i;
	char *p = buf[i++ % 8];

	snprintf(p, sizeof(buf[0]), "%s/%s", tdir, name);
	return p;
}

static void
cfg_for(const char *dir, unsigned cp_records)
{
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.audit_log, sizeof(cfg.audit_log), "%s/audit.jsonl", dir);
	cfg.audit_fail_closed = 1;
	cfg.checkpoint_records = cp_records;
	cfg.checkpoint_seconds = 60;
}

static int
rm_entry(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(p);
}

static int
setup(void **state)
{
	snprintf(tdir, sizeof(tdir), "/tmp/test_audit.XXXXXX");
	if (mkdtemp(tdir) == NULL)
		return -1;
	cfg_for(tdir, 10);
	return 0;
}

static int
teardown(void **state)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (len != NULL)
		*len = (size_t)n;
	return buf;
}

static void
spit(const char *path, const char *buf, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* A log as an array of lines (without newlines), to edit. */
struct lines {
	char  **l;
	size_t  n;
};

static void
lines_read(const char *path, struct lines *ls)
{
	char *buf = slurp(path, NULL), *p = buf, *nl;

	ls->l = NULL;
	ls->n = 0;
	while ((nl = strchr(p, '\n')) != NULL) {
		ls->l = realloc(ls->l, (ls->n + 1) * sizeof(*ls->l));
		assert_non_null(ls->l);
		ls->l[ls->n++] = strndup(p, (size_t)(nl - p));
		p = nl + 1;
	}
	free(buf);
}

static void
lines_write(const char *path, const struct lines *ls)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	for (size_t i = 0; i < ls->n; i++)
		fprintf(f, "%s\n", ls->l[i]);
	assert_int_equal(fclose(f), 0);
}

static void
lines_free(struct lines *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		free(ls->l[i]);
	free(ls->l);
}

static void
lines_delete(struct lines *ls, size_t i)
{
	free(ls->l[i]);
	memmove(&ls->l[i], &ls->l[i + 1], (ls->n - i - 1) * sizeof(*ls->l));
	ls->n--;
}

static void
lines_insert(struct lines *ls, size_t i, const char *s)
{
	ls->l = realloc(ls->l, (ls->n + 1) * sizeof(*ls->l));
	assert_non_null(ls->l);
	memmove(&ls->l[i + 1], &ls->l[i], (ls->n - i) * sizeof(*ls->l));
	ls->l[i] = strdup(s);
	ls->n++;
}

/* Index of the n-th (0-based) line whose event is ev. */
static size_t
lines_find(const struct lines *ls, const char *ev, int nth)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"event\":\"%s\"", ev);
	for (size_t i = 0; i < ls->n; i++)
		if (strstr(ls->l[i], pat) != NULL && nth-- == 0)
			return i;
	fail_msg("no %s line", ev);
	return 0;
}

/* The events a day of traffic makes, with the fields workers and keyd send. */
static void
gen_events(struct audit_writer *w, size_t from, size_t n)
{
	for (size_t i = from; i < from + n; i++) {
		char peer[64];
		json_t *f;
		int wk = (int)(i % 3);

		snprintf(peer, sizeof(peer), "10.0.%zu.%zu:%zu", (i / 250) % 250, i % 250 + 1,
		    40000 + i % 20000);
		switch (i % 4) {
		case 0:
			f = json_pack("{s:I, s:s, s:s, s:s}", "conn", (json_int_t)i, "listener", "main",
			    "peer", peer, "direction", "inbound");
			assert_int_equal(audit_write(w, AUDIT_CONN_ACCEPTED, wk, NULL, NULL, f), 0);
			break;
		case 1:
			if (i % 3 == 0)
				f = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "conn", (json_int_t)i,
				    "listener", "main", "peer", peer, "outcome", "failure", "reason",
				    "certificate verify failed", "tls_mode", "verify-full");
			else
				f = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "conn",
				    (json_int_t)i, "listener", "main", "peer", peer, "outcome",
				    "success", "tls_version", "TLSv1.3", "peer_subject",
				    "/O=redoubt test/CN=client", "peer_identity",
				    i % 8 == 1 ? "DNS:client.example" : "DNS:batch.example");
			assert_int_equal(audit_write(w, AUDIT_HANDSHAKE, wk, NULL, NULL, f), 0);
			break;
		case 2:
			f = json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I}", "conn", (json_int_t)i,
			    "listener", "main", "peer", peer, "outcome", "success", "reason",
			    "client closed", "bytes_in", (json_int_t)i * 7, "bytes_out",
			    (json_int_t)i * 11);
			assert_int_equal(audit_write(w, AUDIT_CONN_CLOSED, wk, NULL, NULL, f), 0);
			break;
		default:
			f = json_pack("{s:s, s:i}", "key_id", "ab12", "sigalg", 0x0403);
			assert_int_equal(audit_write(w, AUDIT_SIGN_REFUSED, wk, "failure",
			    "not a TLS 1.3 CertificateVerify input", f), 0);
			break;
		}
		json_decref(f);
	}
}

/* Writes n events into dir/audit.jsonl; at rotate_at (> 0) moves it to .1 and reopens. */
static void
gen_log(const char *dir, size_t n, size_t rotate_at, unsigned cp_records)
{
	char err[512], from[300], to[300];
	struct audit_writer *w;
	json_t *who;

	cfg_for(dir, cp_records);
	w = audit_writer_open(&cfg, err, sizeof(err));
	if (w == NULL)
		fail_msg("audit_writer_open: %s", err);
	if (rotate_at > 0 && rotate_at < n) {
		gen_events(w, 0, rotate_at);
		snprintf(from, sizeof(from), "%s/audit.jsonl", dir);
		snprintf(to, sizeof(to), "%s/audit.jsonl.1", dir);
		assert_int_equal(rename(from, to), 0);
		who = json_pack("{s:s, s:i}", "source", "signal", "uid", 0);
		assert_int_equal(audit_writer_reopen_by(w, who, err, sizeof(err)), 0);
		json_decref(who);
		gen_events(w, rotate_at, n - rotate_at);
	} else
		gen_events(w, 0, n);
	audit_writer_close(w);
}

/* Runs the verifier; *out holds its report (stdout and stderr, in that order). */
static int
verify_files(const char *const *files, size_t n, const char *pub, char **out)
{
	char *o = NULL, *e = NULL;
	size_t ol = 0, el = 0;
	FILE *fo = open_memstream(&o, &ol), *fe = open_memstream(&e, &el);
	int rc;

	assert_non_null(fo);
	assert_non_null(fe);
	rc = audit_verify((char *const *)files, n, pub, fo, fe);
	fclose(fo);
	fclose(fe);
	*out = malloc(ol + el + 1);
	assert_non_null(*out);
	memcpy(*out, o, ol);
	memcpy(*out + ol, e, el + 1);
	free(o);
	free(e);
	return rc;
}

static int
verify1(const char *file, char **out)
{
	const char *files[] = { file };

	return verify_files(files, 1, NULL, out);
}

#define assert_report(rc, want_rc, out, needle) do {                                  \
	if ((rc) != (want_rc) || strstr((out), (needle)) == NULL)                          \
		fail_msg("exit %d (want %d), report:\n%s\nwanted: %s", (rc), (want_rc),       \
		    (out), (needle));                                                         \
} while (0)

/* ---------- format ---------- */

static void
test_time(void **state)
{
	struct timespec ts = { 1795376401, 123456789 };   /* 2026-11-22T19:40:01.123456Z */
	char buf[AUDIT_TIME_LEN + 1];
	int64_t us;

	audit_time_format(&ts, buf);
	assert_string_equal(buf, "2026-11-22T19:40:01.123456Z");
	assert_int_equal(audit_time_parse(buf, &us), 0);
	assert_true(us == 1795376401123456LL);
	assert_int_equal(audit_time_parse("2026-11-22T20:40:01.123456+01:00", &us), 0);
	assert_true(us == 1795376401123456LL);
	assert_int_equal(audit_time_parse("2026-11-22 19:40", &us), 0);
	assert_true(us == 1795376400000000LL);
	assert_int_equal(audit_time_parse("2026-11-22", &us), 0);
	assert_true(us == 1795305600000000LL);
	assert_int_equal(audit_time_parse("2026-11-22 19:40:01", &us), 0);
	assert_true(us == 1795376401000000LL);
	assert_int_equal(audit_time_parse("2026-02-30", &us), -1);
	assert_int_equal(audit_time_parse("2026-1-01", &us), -1);
	assert_int_equal(audit_time_parse("2026-11-22T19:40:01.Z", &us), -1);
	assert_int_equal(audit_time_parse("2026-11-22T19:40:01Zjunk", &us), -1);
	assert_int_equal(audit_time_parse("2026-11-22 25:00", &us), -1);
	assert_int_equal(audit_time_parse("yesterday", &us), -1);
}

static void
test_path_sibling(void **state)
{
	char out[128];

	assert_int_equal(audit_path_sibling("/var/log/redoubt/audit.jsonl", ".pub", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "/var/log/redoubt/audit.pub");
	assert_int_equal(audit_path_sibling("/var/log/redoubt/audit.jsonl.1", ".pub", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "/var/log/redoubt/audit.pub");
	assert_int_equal(audit_path_sibling("/var/log.d/audit.jsonl-20261122", ".key", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "/var/log.d/audit.key");
	assert_int_equal(audit_path_sibling("rel/audit", ".state", out, sizeof(out)), 0);
	assert_string_equal(out, "rel/audit.state");
	assert_int_equal(audit_path_sibling("/x/.audit", ".pub", out, sizeof(out)), 0);
	assert_string_equal(out, "/x/.audit.pub");
	assert_int_equal(audit_path_sibling("/a/very/long/audit.jsonl", ".pub", out, 10), -1);
}

static void
test_record_format(void **state)
{
	struct audit_chain c;
	json_t *f, *rec;
	char *line;
	size_t len;

	audit_chain_init(&c);
	f = json_pack("{s:s, s:s, s:s, s:i, s:s, s:i}", "peer", "10.0.0.1:5000", "outcome",
	    "failure", "reason", "timeout", "seq", 99, "prev", "forged", "worker", 7);
	rec = audit_record_make(&c, "2026-11-22T19:40:01.123456Z", "tls.handshake", 2, NULL,
	    NULL, f);
	line = audit_record_dump(rec, &len);
	assert_non_null(line);
	/* Fixed keys first, in order; the worker's outcome/reason taken; reserved keys renamed. */
	assert_string_equal(line, "{\"seq\":1,\"time\":\"2026-11-22T19:40:01.123456Z\","
	    "\"event\":\"tls.handshake\",\"outcome\":\"failure\",\"reason\":\"timeout\","
	    "\"worker\":2,\"prev\":\"" "0000000000000000000000000000000000000000000000000000000000000000"
	    "\",\"peer\":\"10.0.0.1:5000\",\"x_seq\":99,\"x_prev\":\"forged\",\"x_worker\":7}");
	assert_int_equal(len, strlen(line));
	json_decref(rec);

	/* The caller's outcome wins; a different worker value is kept as evidence. */
	audit_chain_advance(&c, 1, line, len);
	free(line);
	rec = audit_record_make(&c, "2026-11-22T19:40:01.123456Z", "tls.handshake", -1,
	    "success", "timeout", f);
	line = audit_record_dump(rec, &len);
	assert_non_null(strstr(line, "{\"seq\":2,"));
	assert_non_null(strstr(line, "\"outcome\":\"success\",\"reason\":\"timeout\",\"prev\":\""));
	assert_non_null(strstr(line, "\"x_outcome\":\"failure\""));
	assert_null(strstr(line, "\"worker\":"));
	assert_null(strstr(line, "x_reason"));
	json_decref(rec);
	free(line);
	json_decref(f);

	/* A worker outcome that is neither success nor failure counts as a failure. */
	f = json_pack("{s:s}", "outcome", "great");
	rec = audit_record_make(&c, "2026-11-22T19:40:01.123456Z", "limit.hit", 0, NULL, NULL, f);
	line = audit_record_dump(rec, &len);
	assert_non_null(strstr(line, "\"outcome\":\"failure\""));
	assert_non_null(strstr(line, "\"x_outcome\":\"great\""));
	json_decref(rec);
	json_decref(f);
	free(line);
}

static void
test_record_parse(void **state)
{
	struct audit_rec r;
	char why[160];
	const char *good = "{\"seq\":3,\"time\":\"2026-11-22T19:40:01.123456Z\",\"event\":\"x.y\","
	    "\"outcome\":\"success\",\"reason\":\"\",\"worker\":1,\"prev\":\""
	    "0000000000000000000000000000000000000000000000000000000000000000\"}";
	const char *dup = "{\"seq\":3,\"seq\":4,\"time\":\"2026-11-22T19:40:01.123456Z\","
	    "\"event\":\"x.y\",\"outcome\":\"success\",\"reason\":\"\",\"prev\":\""
	    "0000000000000000000000000000000000000000000000000000000000000000\"}";

	assert_int_equal(audit_rec_parse(good, strlen(good), &r, why, sizeof(why)), 0);
	assert_true(r.ar_seq == 3);
	assert_true(r.ar_worker == 1);
	assert_string_equal(r.ar_event, "x.y");
	audit_rec_free(&r);
	assert_int_equal(audit_rec_parse(dup, strlen(dup), &r, why, sizeof(why)), -1);
	assert_int_equal(audit_rec_parse("{\"seq\":1}", 9, &r, why, sizeof(why)), -1);
	assert_int_equal(audit_rec_parse("[1]", 3, &r, why, sizeof(why)), -1);
	assert_int_equal(audit_rec_parse("{", 1, &r, why, sizeof(why)), -1);
}

static void
test_checkpoint_sign_verify(void **state)
{
	EVP_PKEY *key, *other;
	char id[AUDIT_HASH_HEX_LEN + 1], oid[AUDIT_HASH_HEX_LEN + 1], why[160], *line, *bad;
	struct audit_chain c;
	struct audit_rec r;
	uint64_t first, last;
	size_t len;
	int created;

	assert_int_equal(audit_key_open(tpath("audit.key"), tpath("audit.pub"), &key, &created,
	    why, sizeof(why)), 0);
	assert_int_equal(created, 1);
	assert_int_equal(audit_key_id(key, id), 0);
	other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(other);
	assert_int_equal(audit_key_id(other, oid), 0);

	audit_chain_init(&c);
	audit_chain_advance(&c, 41, "{}", 2);
	line = audit_checkpoint_make(&c, "2026-11-22T19:40:01.123456Z", 7, key, id, &len);
	assert_non_null(line);
	assert_non_null(strstr(line, "\"event\":\"audit.checkpoint\""));
	assert_non_null(strstr(line, "\"first_seq\":7,\"last_seq\":41,\"key\":\""));
	assert_int_equal(audit_rec_parse(line, len, &r, why, sizeof(why)), 0);
	assert_true(r.ar_seq == 42);
	assert_int_equal(audit_checkpoint_check(line, len, &r, key, id, &first, &last, why,
	    sizeof(why)), AUDIT_CP_OK);
	assert_true(first == 7 && last == 41);
	/* Verified with the wrong key, or claiming another key. */
	assert_int_equal(audit_checkpoint_check(line, len, &r, other, oid, &first, &last, why,
	    sizeof(why)), AUDIT_CP_OTHER_KEY);
	assert_int_equal(audit_checkpoint_check(line, len, &r, other, id, &first, &last, why,
	    sizeof(why)), AUDIT_CP_BAD_SIG);
	audit_rec_free(&r);

	/* Any change to the signed bytes breaks the signature. */
	bad = strdup(line);
	strstr(bad, "\"first_seq\":7")[12] = '6';
	assert_int_equal(audit_rec_parse(bad, len, &r, why, sizeof(why)), 0);
	assert_int_equal(audit_checkpoint_check(bad, len, &r, key, id, &first, &last, why,
	    sizeof(why)), AUDIT_CP_BAD_SIG);
	audit_rec_free(&r);
	free(bad);

	/* A sig member that is not last cannot be told apart from its signed bytes: refused. */
	bad = malloc(len + 16);
	snprintf(bad, len + 16, "%.*s,\"z\":1}", (int)(len - 1), line);
	assert_int_equal(audit_rec_parse(bad, strlen(bad), &r, why, sizeof(why)), 0);
	assert_int_equal(audit_checkpoint_check(bad, strlen(bad), &r, key, id, &first, &last,
	    why, sizeof(why)), AUDIT_CP_MALFORMED);
	audit_rec_free(&r);
	free(bad);
	free(line);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

static void
test_key_files(void **state)
{
	EVP_PKEY *key, *again;
	struct stat st;
	char err[512];
	int created;

	assert_int_equal(audit_key_open(tpath("audit.key"), tpath("audit.pub"), &key, &created,
	    err, sizeof(err)), 0);
	assert_int_equal(stat(tpath("audit.key"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(tpath("audit.pub"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	/* A lost public key comes back from the private one. */
	assert_int_equal(unlink(tpath("audit.pub")), 0);
	assert_int_equal(audit_key_open(tpath("audit.key"), tpath("audit.pub"), &again, &created,
	    err, sizeof(err)), 0);
	assert_int_equal(created, 0);
	assert_int_equal(EVP_PKEY_eq(key, again), 1);
	EVP_PKEY_free(again);
	/* A key others can read is refused: it could forge checkpoints. */
	assert_int_equal(chmod(tpath("audit.key"), 0640), 0);
	assert_int_equal(audit_key_open(tpath("audit.key"), tpath("audit.pub"), &again, &created,
	    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chmod 600"));
	EVP_PKEY_free(key);
}

/* ---------- writer ---------- */

static void
test_writer_chain_and_restart(void **state)
{
	struct audit_writer *w;
	struct lines ls;
	struct stat st;
	char err[512], *out;
	int rc;

	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	assert_true(audit_writer_seq(w) == 1);            /* audit.opened */
	gen_events(w, 0, 7);
	assert_true(audit_writer_healthy(w));
	audit_writer_close(w);
	assert_int_equal(stat(cfg.audit_log, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	/* A restart continues seq and chain from the file. */
	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	gen_events(w, 7, 3);
	audit_writer_close(w);

	lines_read(cfg.audit_log, &ls);
	assert_non_null(strstr(ls.l[0], "{\"seq\":1,"));
	assert_non_null(strstr(ls.l[0], "\"event\":\"audit.opened\""));
	assert_non_null(strstr(ls.l[0], "\"prev\":\"00000000"));
	assert_non_null(strstr(ls.l[0], "\"key_created\":true"));
	assert_non_null(strstr(ls.l[0], "\"audit_key\":\""));
	assert_null(strstr(ls.l[0], "x_"));
	/* 1 opened + 7 + 1 checkpoint at close, then opened (seq 10), 3, checkpoint. */
	assert_int_equal(ls.n, 14);
	assert_non_null(strstr(ls.l[8], "\"event\":\"audit.checkpoint\""));
	assert_non_null(strstr(ls.l[8], "\"first_seq\":1,\"last_seq\":8,"));
	assert_non_null(strstr(ls.l[9], "{\"seq\":10,"));
	assert_non_null(strstr(ls.l[9], "\"key_created\":false"));
	assert_non_null(strstr(ls.l[13], "\"first_seq\":10,\"last_seq\":13,"));
	lines_free(&ls);

	rc = verify1(cfg.audit_log, &out);
	assert_report(rc, AUDIT_EXIT_INTACT, out, "intact: 14 records, seq 1..14, 2 checkpoints");
	free(out);
}

static void
test_writer_checkpoint_by_records_and_time(void **state)
{
	struct audit_writer *w;
	struct lines ls;
	char err[512];
	int cps = 0;

	cfg.checkpoint_records = 5;
	cfg.checkpoint_seconds = 1;
	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	assert_true(audit_writer_next_ms(w) > 0 && audit_writer_next_ms(w) <= 1000);
	gen_events(w, 0, 4);          /* opened + 4 = 5 records: a checkpoint follows */
	assert_true(audit_writer_seq(w) == 6);
	assert_int_equal(audit_writer_next_ms(w), -1);   /* nothing uncovered: no timer needed */
	gen_events(w, 4, 1);
	assert_true(audit_writer_next_ms(w) >= 0);
	usleep(1100 * 1000);
	assert_int_equal(audit_writer_next_ms(w), 0);
	audit_writer_tick(w);                            /* due by time */
	assert_true(audit_writer_seq(w) == 8);
	audit_writer_close(w);                           /* nothing new: no extra checkpoint */

	lines_read(cfg.audit_log, &ls);
	assert_int_equal(ls.n, 8);
	for (size_t i = 0; i < ls.n; i++)
		cps += strstr(ls.l[i], "audit.checkpoint") != NULL;
	assert_int_equal(cps, 2);
	assert_non_null(strstr(ls.l[7], "\"first_seq\":7,\"last_seq\":7,"));
	lines_free(&ls);
}

static void
test_writer_rotation(void **state)
{
	const char *files[2];
	struct lines old, cur;
	char *out;
	int rc;

	gen_log(tdir, 30, 17, 10);
	lines_read(tpath("audit.jsonl.1"), &old);
	lines_read(tpath("audit.jsonl"), &cur);
	/* The old file is sealed by a checkpoint; the new one starts with audit.rotated. */
	assert_non_null(strstr(old.l[old.n - 1], "\"event\":\"audit.checkpoint\""));
	assert_non_null(strstr(cur.l[0], "\"event\":\"audit.rotated\""));
	assert_non_null(strstr(cur.l[0], "\"source\":\"signal\",\"uid\":0,\"file\":\""));
	assert_non_null(strstr(cur.l[0], "\"moved\":true}"));
	lines_free(&old);
	lines_free(&cur);

	/* Given newest first (as a glob lists them), still one chain. */
	files[0] = tpath("audit.jsonl");
	files[1] = tpath("audit.jsonl.1");
	rc = verify_files(files, 2, NULL, &out);
	assert_report(rc, AUDIT_EXIT_INTACT, out, "intact: ");
	assert_non_null(strstr(out, ", seq 1.."));
	free(out);
	/* The current file alone: intact, with the earlier records elsewhere. */
	rc = verify1(tpath("audit.jsonl"), &out);
	assert_report(rc, AUDIT_EXIT_INTACT, out, "note: records before seq");
	free(out);
}

static void
test_writer_reopen_not_moved(void **state)
{
	struct audit_writer *w;
	struct lines ls;
	char err[512], *out;
	int rc;

	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	gen_events(w, 0, 2);
	/* SIGUSR1 without logrotate: same file, still one chain, and said so. */
	assert_int_equal(audit_writer_reopen(w, err, sizeof(err)), 0);
	gen_events(w, 2, 2);
	audit_writer_close(w);
	lines_read(cfg.audit_log, &ls);
	assert_non_null(strstr(ls.l[3], "\"event\":\"audit.checkpoint\""));
	assert_non_null(strstr(ls.l[4], "\"event\":\"audit.rotated\""));
	assert_non_null(strstr(ls.l[4], "\"moved\":false}"));
	lines_free(&ls);
	rc = verify1(cfg.audit_log, &out);
	assert_report(rc, AUDIT_EXIT_INTACT, out, "intact: 8 records, seq 1..8, 2 checkpoints");
	free(out);
}

static void
test_writer_restart_after_rotation_while_stopped(void **state)
{
	const char *files[2] = { tpath("audit.jsonl.1"), tpath("audit.jsonl") };
	struct audit_writer *w;
	struct lines ls;
	char err[512], *out;
	int rc;

	gen_log(tdir, 5, 0, 10);
	assert_int_equal(rename(tpath("audit.jsonl"), tpath("audit.jsonl.1")), 0);
	/* keyd starts on an empty log: seq continues from the state file, never restarts. */
	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	assert_true(audit_writer_seq(w) == 8);           /* opened, 5, checkpoint, opened */
	audit_writer_close(w);
	lines_read(tpath("audit.jsonl"), &ls);
	assert_non_null(strstr(ls.l[0], "{\"seq\":8,"));
	assert_non_null(strstr(ls.l[0], "\"outcome\":\"success\""));
	lines_free(&ls);
	rc = verify_files(files, 2, NULL, &out);
	assert_report(rc, AUDIT_EXIT_INTACT, out, "intact: 9 records, seq 1..9");
	free(out);
}

static void
test_writer_torn_tail(void **state)
{
	struct audit_writer *w;
	struct lines ls;
	char err[512], *out;
	int fd, rc;

	gen_log(tdir, 3, 0, 10);
	fd = open(cfg.audit_log, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"seq\":6,\"ti", 12), 12);   /* a power cut mid-write */
	close(fd);
	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	assert_true(audit_writer_seq(w) == 6);   /* continues from the last complete record */
	audit_writer_close(w);
	lines_read(cfg.audit_log, &ls);
	assert_string_equal(ls.l[5], "{\"seq\":6,\"ti");       /* left in place, ended */
	assert_non_null(strstr(ls.l[6], "\"event\":\"audit.opened\",\"outcome\":\"failure\","
	    "\"reason\":\"the last line of"));
	lines_free(&ls);
	/* The verifier names it; the chain around it is whole. */
	rc = verify1(cfg.audit_log, &out);
	assert_report(rc, AUDIT_EXIT_TAMPERED, out, "audit.jsonl:6: not a valid record");
	free(out);
}

static void
test_writer_state_ahead_of_log(void **state)
{
	struct audit_writer *w;
	struct lines ls;
	char err[512], *out;
	int rc;

	gen_log(tdir, 6, 0, 10);
	/* Someone cuts the tail, checkpoint included, while keyd is stopped. */
	lines_read(cfg.audit_log, &ls);
	lines_delete(&ls, ls.n - 1);
	lines_delete(&ls, ls.n - 1);
	lines_write(cfg.audit_log, &ls);
	lines_free(&ls);
	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	assert_true(audit_writer_seq(w) == 9);   /* 8 was the checkpoint: seq is never reused */
	audit_writer_close(w);
	rc = verify1(cfg.audit_log, &out);
	assert_report(rc, AUDIT_EXIT_TAMPERED, out, "seq gap: 9 follows 6 (records 7..8 deleted)");
	free(out);
}

static void
test_writer_fields_cannot_override(void **state)
{
	struct audit_writer *w;
	struct lines ls;
	char err[512];
	json_t *f;

	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	f = json_pack("{s:i, s:i, s:s, s:s, s:s, s:s}", "worker", 9, "seq", 1, "time", "then",
	    "event", "service.stop", "sig", "AAAA", "peer", "1.2.3.4:5");
	assert_int_equal(audit_write(w, AUDIT_CONN_ACCEPTED, 2, NULL, NULL, f), 0);
	json_decref(f);
	/* Only the writer signs: a checkpoint event from keyd's code is refused. */
	assert_int_equal(audit_write(w, AUDIT_CHECKPOINT, AUDIT_WORKER_NONE, NULL, NULL, NULL), -1);
	assert_true(audit_writer_healthy(w));
	audit_writer_close(w);
	lines_read(cfg.audit_log, &ls);
	assert_non_null(strstr(ls.l[1], "{\"seq\":2,"));
	assert_non_null(strstr(ls.l[1], "\"event\":\"connection.accepted\""));
	assert_non_null(strstr(ls.l[1], "\"worker\":2,"));
	assert_non_null(strstr(ls.l[1], "\"x_worker\":9,\"x_seq\":1,\"x_time\":\"then\","
	    "\"x_event\":\"service.stop\",\"x_sig\":\"AAAA\",\"peer\":\"1.2.3.4:5\"}"));
	lines_free(&ls);
}

/* ---------- failure: run in a child, the parent checks its exit status ---------- */

#define CHECK(cond) do {                                                              \
	if (!(cond)) {                                                                    \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
		_exit(1);                                                                     \
	}                                                                                 \
} while (0)

static void
child_event(struct audit_writer *w, size_t i, int *ok)
{
	json_t *f = json_pack("{s:I, s:s, s:s}", "conn", (json_int_t)i, "listener", "main",
	    "peer", "192.0.2.1:40000");

	*ok = audit_write(w, AUDIT_CONN_ACCEPTED, 1, NULL, NULL, f) == 0;
	json_decref(f);
}

static int
file_ends_clean(const char *path, off_t *size)
{
	struct stat st;
	char last = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) == -1)
		return 0;
	*size = st.st_size;
	if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
		last = 0;
	close(fd);
	return st.st_size == 0 || last == '\n';
}

/* After the log comes back: the queue drains in order and the chain has no hole. */
static void
child_check_recovered(struct audit_writer *w, uint64_t expect_lost)
{
	const char *files[1] = { cfg.audit_log };
	char *out = NULL, *e = NULL;
	size_t ol, el;
	FILE *fo, *fe;
	int rc;

	audit_writer_tick(w);
	CHECK(audit_writer_healthy(w));
	CHECK(audit_writer_queued(w) == 0);
	CHECK(audit_writer_lost(w) == expect_lost);
	audit_writer_close(w);
	fo = open_memstream(&out, &ol);
	fe = open_memstream(&e, &el);
	rc = audit_verify((char *const *)files, 1, NULL, fo, fe);
	fclose(fo);
	fclose(fe);
	if (rc != 0 || strstr(out, "intact:") == NULL) {
		fprintf(stderr, "verify: %d\n%s%s", rc, out, e);
		_exit(1);
	}
	free(out);
	free(e);
}

/*
 * RLIMIT_FSIZE makes the kernel do what a full disk does: a short write, then EFBIG.  The
 * writer must cut the half record, keep it, refuse nothing from the chain, and catch up.
 */
static void
child_fsize(void)
{
	struct audit_writer *w;
	struct rlimit rl;
	rlim_t saved;
	char err[512], *log;
	uint64_t seq;
	off_t size, first;
	int ok = 1;
	size_t i;

	signal(SIGXFSZ, SIG_IGN);
	w = audit_writer_open(&cfg, err, sizeof(err));
	CHECK(w != NULL);
	for (i = 0; i < 3; i++)
		child_event(w, i, &ok);
	CHECK(ok && file_ends_clean(cfg.audit_log, &first));
	/* Room for one record and part of the next. */
	CHECK(getrlimit(RLIMIT_FSIZE, &rl) == 0);
	saved = rl.rlim_cur;
	rl.rlim_cur = (rlim_t)first + 150 + 60;
	CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	for (; ok && i < 10; i++)
		child_event(w, i, &ok);
	CHECK(!ok && !audit_writer_healthy(w));
	CHECK(file_ends_clean(cfg.audit_log, &size));     /* no torn line */
	CHECK(size < (off_t)rl.rlim_cur);
	for (; i < 40; i++)
		child_event(w, i, &ok);
	CHECK(!ok && audit_writer_queued(w) > 0);
	seq = audit_writer_seq(w);
	/* Everything accepted is in the chain (seq counts queued records too). */
	CHECK(seq >= 41);
	audit_writer_tick(w);
	CHECK(!audit_writer_healthy(w) && audit_writer_next_ms(w) <= 1000);
	rl.rlim_cur = saved;
	CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	child_check_recovered(w, 0);
	log = slurp(cfg.audit_log, NULL);
	CHECK(strstr(log, "\"event\":\"audit.recovered\",\"outcome\":\"failure\","
	    "\"reason\":\"audit log could not be written: File too large\"") != NULL);
	CHECK(strstr(log, "\"lost\":0") != NULL);
	free(log);
	_exit(0);
}

/* Filling the queue loses events, counted, but never a record that is in the chain. */
static void
child_queue_full(void)
{
	struct audit_writer *w;
	struct rlimit rl;
	rlim_t saved;
	char err[512];
	off_t size;
	int ok = 1;
	size_t i;

	signal(SIGXFSZ, SIG_IGN);
	w = audit_writer_open(&cfg, err, sizeof(err));
	CHECK(w != NULL);
	CHECK(file_ends_clean(cfg.audit_log, &size));
	CHECK(getrlimit(RLIMIT_FSIZE, &rl) == 0);
	saved = rl.rlim_cur;
	rl.rlim_cur = (rlim_t)size;
	CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	for (i = 0; audit_writer_lost(w) < 5 && i < 200000; i++)
		child_event(w, i, &ok);
	CHECK(audit_writer_lost(w) == 5);
	CHECK(audit_writer_queued(w) > 10000);
	rl.rlim_cur = saved;
	CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	child_check_recovered(w, 5);
	_exit(0);
}

/* Enters a private mount namespace (as root, or through a user namespace). */
static int
child_private_mounts(void)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	char map[64];
	int fd;

	if (unshare(CLONE_NEWNS) == -1) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) == -1)
			return -1;
		if ((fd = open("/proc/self/setgroups", O_WRONLY)) >= 0) {
			(void)!write(fd, "deny", 4);
			close(fd);
		}
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
		if ((fd = open("/proc/self/uid_map", O_WRONLY)) < 0 ||
		    write(fd, map, strlen(map)) < 0)
			return -1;
		close(fd);
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
		if ((fd = open("/proc/self/gid_map", O_WRONLY)) < 0 ||
		    write(fd, map, strlen(map)) < 0)
			return -1;
		close(fd);
	}
	/* Type and source are ignored for a propagation change; named for valgrind. */
	return mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL);
}

/* A real full filesystem: a 64 KiB tmpfs, filled up, then freed. */
static void
child_tmpfs(void)
{
	char fs[128], filler[160], block[4096], err[512];
	struct audit_writer *w;
	off_t size;
	int ok = 1, fd;
	size_t i;

	snprintf(fs, sizeof(fs), "%s/fs", tdir);
	CHECK(mkdir(fs, 0700) == 0);
	if (child_private_mounts() == -1 || mount("tmpfs", fs, "tmpfs", 0, "size=64k") == -1)
		_exit(CHILD_SKIP);
	cfg_for(fs, 10);
	w = audit_writer_open(&cfg, err, sizeof(err));
	CHECK(w != NULL);
	snprintf(filler, sizeof(filler), "%s/filler", fs);
	fd = open(filler, O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0);
	memset(block, 'x', sizeof(block));
	while (write(fd, block, sizeof(block)) > 0)
		;
	CHECK(errno == ENOSPC);
	close(fd);
	for (i = 0; ok && i < 1000; i++)
		child_event(w, i, &ok);
	CHECK(!ok && !audit_writer_healthy(w));
	CHECK(file_ends_clean(cfg.audit_log, &size));
	for (size_t j = 0; j < 20; j++, i++)
		child_event(w, i, &ok);
	CHECK(audit_writer_queued(w) >= 20);
	CHECK(unlink(filler) == 0);                        /* the operator frees space */
	child_check_recovered(w, 0);
	_exit(0);
}

static void
run_child(void (*fn)(void))
{
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0)
		fn();
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == CHILD_SKIP)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void
test_writer_partial_write_efbig(void **state)
{
	run_child(child_fsize);
}

static void
test_writer_queue_full_counts_lost(void **state)
{
	run_child(child_queue_full);
}

static void
test_writer_full_tmpfs(void **state)
{
	run_child(child_tmpfs);
}

/* ---------- verifier: each kind of tampering is found and named ---------- */

/* A 40-event log with checkpoints every 10 records, as lines to edit. */
static void
tamper_base(struct lines *ls)
{
	gen_log(tdir, 40, 0, 10);
	lines_read(cfg.audit_log, ls);
}

static void
tamper_check(struct lines *ls, int want_rc, const char *needle)
{
	char *out;
	int rc;

	lines_write(cfg.audit_log, ls);
	lines_free(ls);
	rc = verify1(cfg.audit_log, &out);
	assert_report(rc, want_rc, out, needle);
	free(out);
}

static void
test_verify_untouched(void **state)
{
	struct lines ls;

	tamper_base(&ls);
	tamper_check(&ls, AUDIT_EXIT_INTACT, "intact: 46 records, seq 1..46, 5 checkpoints");
}

static void
test_verify_edited_byte(void **state)
{
	struct lines ls;
	char *t;

	tamper_base(&ls);
	t = strstr(ls.l[16], "\"time\":\"") + 20;   /* a digit of the hour */
	*t = *t == '1' ? '2' : '1';
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:17: seq 17: record altered (hash "
	    "chain broken at the next record");
}

static void
test_verify_edited_prev(void **state)
{
	struct lines ls;
	char *t;

	tamper_base(&ls);
	t = strstr(ls.l[16], "\"prev\":\"") + 8;
	*t = *t == 'a' ? 'b' : 'a';
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:17: seq 17: record altered (its prev "
	    "does not match line 16");
}

static void
test_verify_edited_unparseable(void **state)
{
	struct lines ls;

	tamper_base(&ls);
	*strchr(ls.l[20], '"') = '\'';
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:21: not a valid record");
}

static void
test_verify_deleted(void **state)
{
	struct lines ls;

	tamper_base(&ls);
	lines_delete(&ls, 39);               /* seq 40 */
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:40: seq 41: seq gap: 41 follows 39 "
	    "(record 40 deleted)");
}

static void
test_verify_deleted_first(void **state)
{
	struct lines ls;

	tamper_base(&ls);
	lines_delete(&ls, 0);
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:1: seq 2: the log does not start "
	    "with audit.opened");
}

static void
test_verify_swapped(void **state)
{
	struct lines ls;
	char *t;

	tamper_base(&ls);
	t = ls.l[23];
	ls.l[23] = ls.l[24];
	ls.l[24] = t;
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:24: seq 25: records out of order: "
	    "seq 25 comes before seq 24");
}

static void
test_verify_moved_far(void **state)
{
	struct lines ls;
	char *t;

	tamper_base(&ls);
	t = strdup(ls.l[5]);
	lines_delete(&ls, 5);
	lines_insert(&ls, 30, t);
	free(t);
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "records out of order: seq 7 comes before seq 6");
}

static void
test_verify_duplicate(void **state)
{
	struct lines ls;

	tamper_base(&ls);
	lines_insert(&ls, 13, ls.l[12]);
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:14: seq 13: duplicate record");
}

static void
test_verify_torn_tail(void **state)
{
	char *buf, *out;
	size_t len;
	int rc;

	gen_log(tdir, 10, 0, 10);
	buf = slurp(cfg.audit_log, &len);
	spit(cfg.audit_log, buf, len - 30);
	free(buf);
	rc = verify1(cfg.audit_log, &out);
	assert_report(rc, AUDIT_EXIT_TAMPERED, out, "torn record: the last line has no newline");
	free(out);
}

static void
test_verify_truncated_before_next_file(void **state)
{
	const char *files[2] = { tpath("audit.jsonl.1"), tpath("audit.jsonl") };
	struct lines ls;
	char *out;
	int rc;

	gen_log(tdir, 30, 17, 10);
	lines_read(files[0], &ls);
	lines_delete(&ls, ls.n - 1);
	lines_delete(&ls, ls.n - 1);
	lines_delete(&ls, ls.n - 1);
	lines_write(files[0], &ls);
	lines_free(&ls);
	rc = verify_files(files, 2, NULL, &out);
	assert_report(rc, AUDIT_EXIT_TAMPERED, out, "truncated tail, records ");
	assert_non_null(strstr(out, "audit.jsonl.1:"));
	assert_non_null(strstr(out, "but "));
	free(out);
}

static void
test_verify_forged_signature(void **state)
{
	struct lines ls;
	size_t a, b;
	char *sa, *sb, *line;

	tamper_base(&ls);
	a = lines_find(&ls, "audit.checkpoint", 0);
	b = lines_find(&ls, "audit.checkpoint", 1);
	/* Checkpoint 1 gets checkpoint 2's (valid, but other) signature. */
	sa = strstr(ls.l[a], ",\"sig\":\"");
	sb = strstr(ls.l[b], ",\"sig\":\"");
	line = malloc(strlen(ls.l[a]) + strlen(sb) + 1);
	sprintf(line, "%.*s%s", (int)(sa - ls.l[a]), ls.l[a], sb);
	free(ls.l[a]);
	ls.l[a] = line;
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:11: seq 11: checkpoint at seq 11: "
	    "signature does not verify with ");
}

static void
test_verify_other_key(void **state)
{
	char other[300], *out;
	const char *files[1];
	int rc;

	/* Another deployment's public key: the key ids differ. */
	gen_log(tdir, 10, 0, 10);
	snprintf(other, sizeof(other), "%s/other", tdir);
	assert_int_equal(mkdir(other, 0700), 0);
	gen_log(other, 3, 0, 10);
	files[0] = tpath("audit.jsonl");
	rc = verify_files(files, 1, tpath("other/audit.pub"), &out);
	assert_report(rc, AUDIT_EXIT_TAMPERED, out, "checkpoint signed by another key");
	free(out);
	cfg_for(tdir, 10);
}

static void
test_verify_spliced(void **state)
{
	struct lines ls, foreign;
	char other[300];

	snprintf(other, sizeof(other), "%s/other", tdir);
	assert_int_equal(mkdir(other, 0700), 0);
	gen_log(other, 40, 0, 10);
	lines_read(tpath("other/audit.jsonl"), &foreign);
	tamper_base(&ls);
	lines_insert(&ls, 20, foreign.l[20]);
	lines_free(&foreign);
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:21: seq 21: record inserted: it is "
	    "not part of this chain");
}

static void
test_verify_spliced_replacing(void **state)
{
	struct lines ls, foreign;
	char other[300];

	snprintf(other, sizeof(other), "%s/other", tdir);
	assert_int_equal(mkdir(other, 0700), 0);
	gen_log(other, 40, 0, 10);
	lines_read(tpath("other/audit.jsonl"), &foreign);
	tamper_base(&ls);
	free(ls.l[20]);
	ls.l[20] = strdup(foreign.l[20]);
	lines_free(&foreign);
	tamper_check(&ls, AUDIT_EXIT_TAMPERED, "audit.jsonl:21: seq 21: record altered (its "
	    "prev does not match line 20");
}

static void
test_verify_unreadable(void **state)
{
	const char *files[1];
	char *out;
	int rc;

	rc = verify1(tpath("missing.jsonl"), &out);
	assert_report(rc, AUDIT_EXIT_UNREADABLE, out, "cannot read audit public key");
	free(out);
	gen_log(tdir, 3, 0, 10);
	files[0] = tpath("nothere.jsonl");
	rc = verify_files(files, 1, tpath("audit.pub"), &out);
	assert_report(rc, AUDIT_EXIT_UNREADABLE, out, "cannot open");
	free(out);
}

/* ---------- reader ---------- */

static char *
show_capture(const struct audit_filter *f, enum audit_show_format fmt)
{
	char *files[1] = { cfg.audit_log }, *o = NULL;
	size_t ol;
	FILE *fo = open_memstream(&o, &ol);

	assert_non_null(fo);
	assert_int_equal(audit_show(files, 1, f, fmt, fo, stderr), 0);
	fclose(fo);
	return o;
}

static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void
test_show_filters(void **state)
{
	const char *ev_hs[] = { "tls.handshake" }, *ev_cat[] = { "connection" };
	struct audit_filter f;
	char *o;

	gen_log(tdir, 40, 0, 100);
	memset(&f, 0, sizeof(f));
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 42);              /* opened + 40 + checkpoint */
	free(o);

	f.af_events = ev_hs;
	f.af_nevents = 1;
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 10);
	free(o);
	f.af_outcome = "failure";
	o = show_capture(&f, AUDIT_SHOW_JSON);              /* i = 9, 21, 33 */
	assert_int_equal(count_lines(o), 3);
	free(o);

	memset(&f, 0, sizeof(f));
	f.af_events = ev_cat;
	f.af_nevents = 1;
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 20);
	free(o);

	memset(&f, 0, sizeof(f));
	f.af_peer = "10.0.0.5";                            /* host part of 10.0.0.5:40004 */
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 1);
	free(o);
	f.af_peer = "10.0.0.1?:*";                         /* i = 9..18 but 11, 15 (no peer) */
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 8);
	free(o);

	memset(&f, 0, sizeof(f));
	f.af_identity = "CLIENT.example";                  /* substring, any case: i = 1, 17, 25 */
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 3);
	free(o);
	f.af_identity = "DNS:*.example";
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 7);
	free(o);

	memset(&f, 0, sizeof(f));
	f.af_has_since = 1;
	assert_int_equal(audit_time_parse("2000-01-01", &f.af_since), 0);
	f.af_has_until = 1;
	assert_int_equal(audit_time_parse("2000-01-02", &f.af_until), 0);
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 0);
	free(o);
	f.af_until = INT64_MAX;
	o = show_capture(&f, AUDIT_SHOW_JSON);
	assert_int_equal(count_lines(o), 42);
	free(o);
}

static void
test_show_table_and_csv(void **state)
{
	struct audit_writer *w;
	struct audit_filter f;
	char err[512], *o;
	json_t *fl;

	w = audit_writer_open(&cfg, err, sizeof(err));
	assert_non_null(w);
	/* A hostile certificate subject: terminal escape, bidi override, formula. */
	fl = json_pack("{s:s, s:s, s:s, s:s}", "listener", "main", "peer", "[2001:db8::1]:6380",
	    "peer_subject", "/CN=\x1b[31mevil\xe2\x80\xae", "outcome", "failure");
	assert_int_equal(audit_write(w, AUDIT_HANDSHAKE, 0, NULL, "=HYPERLINK(\"x\"), \"quoted\"",
	    fl), 0);
	json_decref(fl);
	audit_writer_close(w);

	memset(&f, 0, sizeof(f));
	f.af_outcome = "failure";
	f.af_peer = "2001:db8::1";
	o = show_capture(&f, AUDIT_SHOW_TABLE);
	assert_non_null(strstr(o, "TIME                         EVENT"));
	if (strstr(o, "tls.handshake         failure  [2001:db8::1]:6380     "
	    "/CN=?[31mevil?  ") == NULL)
		fail_msg("table:\n%s", o);
	assert_null(strchr(o, '\x1b'));
	assert_null(strstr(o, "\xe2\x80\xae"));
	free(o);
	o = show_capture(&f, AUDIT_SHOW_CSV);
	assert_non_null(strstr(o, "seq,time,event,outcome,worker,peer,identity,listener,reason\r\n"));
	assert_non_null(strstr(o, ",tls.handshake,failure,0,[2001:db8::1]:6380,"));
	assert_non_null(strstr(o, ",main,\"'=HYPERLINK(\"\"x\"\"), \"\"quoted\"\"\"\r\n"));
	free(o);
}

/* ---------- generator and benchmark modes (for the system test and the report) ---------- */

static int
mode_generate(int argc, char **argv)
{
	snprintf(tdir, sizeof(tdir), "%s", argv[2]);
	gen_log(argv[2], strtoul(argv[3], NULL, 10), argc > 4 ? strtoul(argv[4], NULL, 10) : 0,
	    10);
	return 0;
}

static int
mode_bench(int argc, char **argv)
{
	struct audit_writer *w;
	struct timespec a, b;
	size_t n = strtoul(argv[3], NULL, 10);
	char err[512];
	double s;

	cfg_for(argv[2], 1000);
	if ((w = audit_writer_open(&cfg, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	gen_events(w, 0, n);
	audit_writer_close(w);
	clock_gettime(CLOCK_MONOTONIC, &b);
	s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("%zu records in %.3f s: %.0f records/s (checkpoint every 1000, fdatasync each)\n",
	    n, s, (double)n / s);
	return 0;
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_path_sibling),
		cmocka_unit_test(test_record_format),
		cmocka_unit_test(test_record_parse),
		cmocka_unit_test_setup_teardown(test_checkpoint_sign_verify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_chain_and_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_checkpoint_by_records_and_time, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_writer_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_reopen_not_moved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_restart_after_rotation_while_stopped,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_state_ahead_of_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_fields_cannot_override, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_partial_write_efbig, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_queue_full_counts_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_full_tmpfs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_untouched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_edited_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_edited_prev, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_edited_unparseable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_deleted_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_swapped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_moved_far, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_duplicate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_truncated_before_next_file, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_verify_forged_signature, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_other_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_spliced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_spliced_replacing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_unreadable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_show_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_show_table_and_csv, setup, teardown),
	};

	log_init("test_audit", LOG_LVL_ERROR);
	if (argc == 4 || argc == 5) {
		if (strcmp(argv[1], "generate") == 0)
			return mode_generate(argc, argv);
		if (argc == 4 && strcmp(argv[1], "bench") == 0)
			return mode_bench(argc, argv);
	}
	if (argc > 1) {
		fprintf(stderr, "usage: %s [generate DIR N [ROTATE_AT] | bench DIR N]\n", argv[0]);
		return 64;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
