/*
 * The audit log reader: filters records and prints them as a table, raw JSON lines or CSV.
 * Field values come from the network (certificate subjects, SNI): the table never lets a
 * control character or a bidirectional override reach the terminal, and the CSV never
 * lets a cell start a spreadsheet formula.
 */
#include "audit/show.h"

#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <strings.h>

#include "audit/record.h"
#include "audit/verify.h"

/* Table columns (the last one, reason, is not cut). */
static const struct show_col {
	const char *sc_title;
	int         sc_width;
} show_cols[] = {
	{ "TIME", AUDIT_TIME_LEN }, { "EVENT", 20 }, { "OUTCOME", 7 }, { "PEER", 21 },
	{ "IDENTITY", 32 }, { "LISTENER", 12 }, { "REASON", 0 },
};
#define SHOW_NCOLS (sizeof(show_cols) / sizeof(show_cols[0]))

/* ---------- the values shown ---------- */

/* Who: the certificate identity, else its subject, else the admin's uid. */
static const char *
show_identity(const struct audit_rec *r, char *buf, size_t len)
{
	json_t *uid = json_object_get(r->ar_obj, "uid");
	const char *s = audit_rec_str(r, "peer_identity");

	if (s[0] == '\0')
		s = audit_rec_str(r, "peer_subject");
	if (s[0] == '\0' && json_is_integer(uid)) {
		snprintf(buf, len, "uid %lld", (long long)json_integer_value(uid));
		s = buf;
	}
	return s;
}

static const char *
show_where(const struct audit_rec *r)
{
	const char *s = audit_rec_str(r, "listener");

	return s[0] != '\0' ? s : audit_rec_str(r, "connector");
}

/* ---------- filters ---------- */

static int
show_has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

static int
show_event_match(const struct audit_filter *f, const char *ev)
{
	size_t n;

	if (f->af_nevents == 0)
		return 1;
	for (size_t i = 0; i < f->af_nevents; i++) {
		const char *p = f->af_events[i];

		if (fnmatch(p, ev, 0) == 0)
			return 1;
		/* "tls" or "connection": every event of that category. */
		n = strlen(p);
		if (!show_has_glob(p) && strchr(p, '.') == NULL && strncmp(ev, p, n) == 0 &&
		    ev[n] == '.')
			return 1;
	}
	return 0;
}

/* "10.0.0.5:51234" -> "10.0.0.5", "[::1]:6379" -> "::1", "unix" -> "unix". */
static void
show_peer_host(const char *peer, char *host, size_t len)
{
	const char *colon = strrchr(peer, ':');

	if (peer[0] == '[' && strchr(peer, ']') != NULL)
		snprintf(host, len, "%.*s", (int)(strchr(peer, ']') - peer - 1), peer + 1);
	else if (colon != NULL && strchr(peer, ':') == colon)
		snprintf(host, len, "%.*s", (int)(colon - peer), peer);
	else
		snprintf(host, len, "%s", peer);
}

static int
show_peer_match(const char *want, const char *peer)
{
	char host[256], whost[256];

	if (peer[0] == '\0')
		return 0;
	if (fnmatch(want, peer, 0) == 0)
		return 1;
	show_peer_host(peer, host, sizeof(host));
	show_peer_host(want, whost, sizeof(whost));
	return fnmatch(want, host, 0) == 0 || strcmp(whost, host) == 0;
}

static int
show_identity_match(const char *want, const struct audit_rec *r)
{
	static const char *const keys[] = { "peer_identity", "peer_subject", "peer_sha256",
	    "peer_serial" };
	char uid[32];

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) + 1; i++) {
		const char *s = i < sizeof(keys) / sizeof(keys[0]) ? audit_rec_str(r, keys[i]) :
		    show_identity(r, uid, sizeof(uid));

		if (s[0] == '\0')
			continue;
		if (show_has_glob(want) ? fnmatch(want, s, 0) == 0 : strcasestr(s, want) != NULL)
			return 1;
	}
	return 0;
}

static int
show_match(const struct audit_filter *f, const struct audit_rec *r)
{
	int64_t t;

	if ((f->af_has_since || f->af_has_until) && audit_time_parse(r->ar_time, &t) == 0 &&
	    ((f->af_has_since && t < f->af_since) || (f->af_has_until && t >= f->af_until)))
		return 0;
	return show_event_match(f, r->ar_event) &&
	    (f->af_outcome == NULL || strcmp(f->af_outcome, r->ar_outcome) == 0) &&
	    (f->af_peer == NULL || show_peer_match(f->af_peer, audit_rec_str(r, "peer"))) &&
	    (f->af_identity == NULL || show_identity_match(f->af_identity, r));
}

/* ---------- table ---------- */

/*
 * Length in bytes of the UTF-8 character at s, and whether a terminal must not get it:
 * C0/C1 controls, DEL, and bidirectional overrides that reorder what the reader sees.
 */
static size_t
show_char(const unsigned char *s, int *unsafe)
{
	size_t n = s[0] < 0x80 ? 1 : s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;

	for (size_t i = 1; i < n; i++)
		if (s[i] == '\0')
			n = i;
	*unsafe = s[0] < 0x20 || s[0] == 0x7f || (s[0] == 0xc2 && n == 2 && s[1] < 0xa0) ||
	    (s[0] == 0xe2 && n == 3 && ((s[1] == 0x80 && s[2] >= 0xaa && s[2] <= 0xae) ||
	    (s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)));
	return n;
}

/* Prints s in width characters (padded; cut with '~'); width 0: whole, no padding. */
static void
show_cell(FILE *out, const char *s, int width)
{
	const unsigned char *p = (const unsigned char *)s;
	int shown = 0, total = 0, unsafe;
	size_t n;

	for (const unsigned char *q = p; *q != '\0'; q += show_char(q, &unsafe))
		total++;
	while (*p != '\0') {
		if (width > 0 && total > width && shown == width - 1) {
			fputc('~', out);
			shown++;
			break;
		}
		n = show_char(p, &unsafe);
		if (unsafe)
			fputc('?', out);
		else
			fwrite(p, 1, n, out);
		p += n;
		shown++;
	}
	while (shown < width) {
		fputc(' ', out);
		shown++;
	}
}

static void
show_table_header(FILE *out)
{
	for (size_t i = 0; i < SHOW_NCOLS; i++) {
		show_cell(out, show_cols[i].sc_title, i + 1 < SHOW_NCOLS ? show_cols[i].sc_width : 0);
		fputs(i + 1 < SHOW_NCOLS ? "  " : "\n", out);
	}
}

static void
show_table_row(FILE *out, const struct audit_rec *r)
{
	char uid[32];
	const char *v[SHOW_NCOLS] = {
		r->ar_time, r->ar_event, r->ar_outcome, audit_rec_str(r, "peer"),
		show_identity(r, uid, sizeof(uid)), show_where(r), r->ar_reason,
	};
	size_t last = SHOW_NCOLS - 1;

	/* No padding after the last value: no trailing blanks for grep and diff. */
	while (last > 0 && v[last][0] == '\0')
		last--;
	for (size_t i = 0; i <= last; i++) {
		show_cell(out, v[i], i == last ? 0 : show_cols[i].sc_width);
		if (i < last)
			fputs("  ", out);
	}
	fputc('\n', out);
}

/* ---------- CSV (RFC 4180) ---------- */

static void
show_csv_cell(FILE *out, const char *s, int last)
{
	/* A cell starting like a formula would run in a spreadsheet: make it text. */
	int formula = strchr("=+-@\t\r", s[0]) != NULL && s[0] != '\0';

	if (formula || strpbrk(s, ",\"\r\n") != NULL) {
		fputc('"', out);
		if (formula)
			fputc('\'', out);
		for (const char *p = s; *p != '\0'; p++) {
			if (*p == '"')
				fputc('"', out);
			fputc(*p, out);
		}
		fputc('"', out);
	} else
		fputs(s, out);
	fputs(last ? "\r\n" : ",", out);
}

static void
show_csv_row(FILE *out, const struct audit_rec *r)
{
	char seq[24], worker[24], uid[32];

	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)r->ar_seq);
	worker[0] = '\0';
	if (r->ar_worker >= 0)
		snprintf(worker, sizeof(worker), "%lld", (long long)r->ar_worker);
	show_csv_cell(out, seq, 0);
	show_csv_cell(out, r->ar_time, 0);
	show_csv_cell(out, r->ar_event, 0);
	show_csv_cell(out, r->ar_outcome, 0);
	show_csv_cell(out, worker, 0);
	show_csv_cell(out, audit_rec_str(r, "peer"), 0);
	show_csv_cell(out, show_identity(r, uid, sizeof(uid)), 0);
	show_csv_cell(out, show_where(r), 0);
	show_csv_cell(out, r->ar_reason, 1);
}

/* ---------- files ---------- */

static int
show_file(const char *path, const struct audit_filter *f, enum audit_show_format fmt,
    FILE *out, FILE *err)
{
	struct audit_lines l;
	struct audit_rec r;
	char why[160];
	FILE *fp = fopen(path, "re");
	int n, bad = 0;

	if (fp == NULL) {
		fprintf(err, "redoubt audit show: cannot open %s: %s\n", path, strerror(errno));
		return AUDIT_EXIT_UNREADABLE;
	}
	audit_lines_init(&l, fp);
	while ((n = audit_lines_next(&l)) > 0) {
		if (l.al_toolong || audit_rec_parse(l.al_buf, l.al_len, &r, why, sizeof(why)) == -1) {
			if (bad++ == 0)
				fprintf(err, "redoubt audit show: %s:%llu: not a record, skipped (run "
				    "'redoubt audit verify')\n", path, (unsigned long long)l.al_lineno);
			continue;
		}
		if (show_match(f, &r)) {
			if (fmt == AUDIT_SHOW_JSON) {
				fwrite(l.al_buf, 1, l.al_len, out);
				fputc('\n', out);
			} else if (fmt == AUDIT_SHOW_CSV)
				show_csv_row(out, &r);
			else
				show_table_row(out, &r);
		}
		audit_rec_free(&r);
	}
	if (n == -1)
		fprintf(err, "redoubt audit show: cannot read %s: %s\n", path, strerror(errno));
	if (bad > 1)
		fprintf(err, "redoubt audit show: %s: %d lines were not records\n", path, bad);
	audit_lines_free(&l);
	fclose(fp);
	return n == -1 ? AUDIT_EXIT_UNREADABLE : 0;
}

int
audit_show(char *const *files, size_t nfiles, const struct audit_filter *f,
    enum audit_show_format fmt, FILE *out, FILE *err)
{
	int rc = 0;

	if (fmt == AUDIT_SHOW_TABLE)
		show_table_header(out);
	else if (fmt == AUDIT_SHOW_CSV)
		fputs("seq,time,event,outcome,worker,peer,identity,listener,reason\r\n", out);
	for (size_t i = 0; i < nfiles; i++)
		if (show_file(files[i], f, fmt, out, err) != 0)
			rc = AUDIT_EXIT_UNREADABLE;
	return rc;
}
