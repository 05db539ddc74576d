/*
 * Audit record encoding and parsing, the hash chain, times and sibling file names: the part
 * of the format that the writer (keyd), the verifier and the reader must agree on byte for
 * byte, so it lives in one place.
 */
#include "audit/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

/* Keys the writer owns.  A field from a worker never takes one of these names. */
static const char *const audit_reserved[] = {
	"seq", "time", "event", "outcome", "reason", "worker", "prev",
	"first_seq", "last_seq", "key", "sig",
};

const char audit_genesis_prev[AUDIT_HASH_HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* ---------- hash chain ---------- */

/*
 * SHA-256 fetched once per process.  SHA256() is EVP_Q_digest() in OpenSSL 3.0, which fetches
 * the digest on every call: about a quarter of the chain's cost per record in keyd, which
 * hashes every record it writes, and in `audit verify`, which hashes every line.
 */
static EVP_MD *audit_sha256;
static CRYPTO_ONCE audit_sha256_once = CRYPTO_ONCE_STATIC_INIT;

static void
audit_sha256_fetch(void)
{
	audit_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void
audit_hash_hex(const void *buf, size_t len, char out[AUDIT_HASH_HEX_LEN + 1])
{
	static const char hexd[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];
	unsigned int mdlen = 0;

	/* Fetch failure (no provider at all): the one-shot call, which then fails the same way. */
	if (!CRYPTO_THREAD_run_once(&audit_sha256_once, audit_sha256_fetch) ||
	    audit_sha256 == NULL ||
	    !EVP_Digest(buf, len, md, &mdlen, audit_sha256, NULL) || mdlen != sizeof(md))
		SHA256(buf, len, md);
	for (size_t i = 0; i < sizeof(md); i++) {
		out[2 * i] = hexd[md[i] >> 4];
		out[2 * i + 1] = hexd[md[i] & 0xf];
	}
	out[AUDIT_HASH_HEX_LEN] = '\0';
}

void
audit_chain_init(struct audit_chain *c)
{
	c->ac_seq = 0;
	memcpy(c->ac_prev, audit_genesis_prev, sizeof(c->ac_prev));
}

void
audit_chain_advance(struct audit_chain *c, uint64_t seq, const char *line, size_t len)
{
	c->ac_seq = seq;
	audit_hash_hex(line, len, c->ac_prev);
}

/* ---------- time ---------- */

void
audit_time_format(const struct timespec *ts, char out[AUDIT_TIME_LEN + 1])
{
	struct tm tm;
	time_t t = ts->tv_sec;

	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	/* Unsigned and reduced, so the text is always exactly AUDIT_TIME_LEN characters. */
	snprintf(out, AUDIT_TIME_LEN + 1, "%04u-%02u-%02uT%02u:%02u:%02u.%06luZ",
	    (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
	    (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
	    (unsigned)tm.tm_sec % 100u, (unsigned long)(ts->tv_nsec / 1000) % 1000000ul);
}

/* Exactly n decimal digits at *p; no sign, no space (sscanf would take both). */
static int
audit_time_digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

static int
audit_time_zone(const char *p, int *offset_s)
{
	int hh, mm, sign;

	*offset_s = 0;
	if (*p == '\0' || ((*p == 'Z' || *p == 'z') && p[1] == '\0'))
		return 0;
	if (*p != '+' && *p != '-')
		return -1;
	sign = *p++ == '-' ? -1 : 1;
	if (audit_time_digits(&p, 2, &hh) || *p++ != ':' || audit_time_digits(&p, 2, &mm) ||
	    *p != '\0' || hh > 23 || mm > 59)
		return -1;
	*offset_s = sign * (hh * 3600 + mm * 60);
	return 0;
}

int
audit_time_parse(const char *s, int64_t *usec)
{
	const char *p = s;
	int y, mo, d, h = 0, mi = 0, sec = 0, off = 0;
	long frac = 0;
	struct tm tm, back;
	time_t t;

	if (audit_time_digits(&p, 4, &y) || *p++ != '-' || audit_time_digits(&p, 2, &mo) ||
	    *p++ != '-' || audit_time_digits(&p, 2, &d))
		return -1;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (audit_time_digits(&p, 2, &h) || *p++ != ':' || audit_time_digits(&p, 2, &mi))
			return -1;
		if (*p == ':') {
			p++;
			if (audit_time_digits(&p, 2, &sec))
				return -1;
			if (*p == '.') {
				long scale = 100000;
				int ndig = 0;

				for (p++; *p >= '0' && *p <= '9'; p++, ndig++) {
					frac += (*p - '0') * scale;   /* digits past µs are dropped */
					scale /= 10;
				}
				if (ndig == 0)
					return -1;
			}
		}
		if (audit_time_zone(p, &off) == -1)
			return -1;
	} else if (*p != '\0')
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec == 60 ? 59 : sec;     /* a leap second sorts with the second before it */
	t = timegm(&tm);
	/* timegm() quietly turns 2026-02-30 into 2026-03-02: refuse what it had to fix. */
	if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_mday != d ||
	    back.tm_mon != mo - 1)
		return -1;
	*usec = ((int64_t)t - off) * 1000000 + frac;
	return 0;
}

/* ---------- encoding ---------- */

int
audit_key_reserved(const char *key)
{
	for (size_t i = 0; i < sizeof(audit_reserved) / sizeof(audit_reserved[0]); i++)
		if (strcmp(key, audit_reserved[i]) == 0)
			return 1;
	return 0;
}

static int
audit_outcome_valid(const char *s)
{
	return s != NULL && (strcmp(s, "success") == 0 || strcmp(s, "failure") == 0);
}

/* Keeps a colliding field as x_KEY instead of dropping it: the evidence stays. */
static int
audit_record_rename(json_t *rec, const char *key, json_t *v)
{
	char name[256];
	int n = snprintf(name, sizeof(name), "%s%s", AUDIT_RENAME_PREFIX, key);

	if (n < 0 || (size_t)n >= sizeof(name))
		return 0;                         /* an absurd key: dropped, not truncated */
	return json_object_set(rec, name, v);
}

/*
 * outcome/reason: the caller's value wins; the worker's is used when the caller gave none;
 * a worker value that differs from the caller's (or an invalid outcome) is kept as x_*.
 */
static int
audit_record_merge(json_t *rec, json_t *fields, const char *outcome_arg,
    const char *reason_arg)
{
	const char *k;
	json_t *v;

	if (fields == NULL)
		return 0;
	if (!json_is_object(fields))
		return json_object_set(rec, AUDIT_RENAME_PREFIX "fields", fields);
	json_object_foreach(fields, k, v) {
		const char *arg = NULL;
		int special = 0;

		if (strcmp(k, "outcome") == 0) {
			arg = outcome_arg;
			special = outcome_arg != NULL || audit_outcome_valid(json_string_value(v));
		} else if (strcmp(k, "reason") == 0) {
			arg = reason_arg;
			special = reason_arg != NULL || json_is_string(v);
		}
		if (special && (arg == NULL || (json_is_string(v) &&
		    strcmp(arg, json_string_value(v)) == 0)))
			continue;                     /* already in the record */
		if (audit_key_reserved(k)) {
			if (audit_record_rename(rec, k, v) == -1)
				return -1;
		} else if (json_object_set(rec, k, v) == -1)
			return -1;
	}
	return 0;
}

json_t *
audit_record_make(const struct audit_chain *c, const char *time, const char *event,
    int worker, const char *outcome, const char *reason, json_t *fields)
{
	json_t *rec, *fo = NULL, *fr = NULL;
	const char *oc = outcome, *rs = reason;

	if (json_is_object(fields)) {
		fo = json_object_get(fields, "outcome");
		fr = json_object_get(fields, "reason");
	}
	if (oc == NULL) {
		/* A worker that sent something other than success/failure did not succeed. */
		oc = fo == NULL ? "success" : audit_outcome_valid(json_string_value(fo)) ?
		    json_string_value(fo) : "failure";
	}
	if (rs == NULL)
		rs = json_is_string(fr) ? json_string_value(fr) : "";
	if (!audit_outcome_valid(oc))
		oc = "failure";

	rec = json_object();
	if (rec == NULL)
		return NULL;
	if (json_object_set_new(rec, "seq", json_integer((json_int_t)c->ac_seq + 1)) ||
	    json_object_set_new(rec, "time", json_string(time)) ||
	    json_object_set_new(rec, "event", json_string(event)) ||
	    json_object_set_new(rec, "outcome", json_string(oc)) ||
	    json_object_set_new(rec, "reason", json_string(rs)) ||
	    (worker >= 0 && json_object_set_new(rec, "worker", json_integer(worker))) ||
	    json_object_set_new(rec, "prev", json_string(c->ac_prev)) ||
	    audit_record_merge(rec, fields, outcome, reason)) {
		json_decref(rec);
		return NULL;
	}
	return rec;
}

char *
audit_record_dump(const json_t *rec, size_t *len)
{
	char buf[AUDIT_LINE_MAX];
	size_t n;
	char *line;

	/* One serialisation into a bounded buffer: an oversized record is refused, not cut. */
	n = json_dumpb(rec, buf, sizeof(buf), JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (n == 0 || n >= sizeof(buf)) {
		errno = EMSGSIZE;
		return NULL;
	}
	if ((line = malloc(n + 1)) == NULL)
		return NULL;
	memcpy(line, buf, n);
	line[n] = '\0';
	*len = n;
	return line;
}

/* ---------- parsing ---------- */

static int
audit_hex64(const char *s)
{
	if (s == NULL || strlen(s) != AUDIT_HASH_HEX_LEN)
		return 0;
	for (const char *p = s; *p != '\0'; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

int
audit_rec_parse(const char *line, size_t len, struct audit_rec *r, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *v;
	int64_t us;

	memset(r, 0, sizeof(*r));
	r->ar_worker = -1;
	/* Duplicate keys would let a line say two things; a record never has them. */
	r->ar_obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (r->ar_obj == NULL) {
		snprintf(why, whylen, "not JSON (%s at column %d)", jerr.text, jerr.column);
		return -1;
	}
	if (!json_is_object(r->ar_obj)) {
		snprintf(why, whylen, "not a JSON object");
		goto bad;
	}
	v = json_object_get(r->ar_obj, "seq");
	if (!json_is_integer(v) || json_integer_value(v) < 1) {
		snprintf(why, whylen, "no valid \"seq\"");
		goto bad;
	}
	r->ar_seq = (uint64_t)json_integer_value(v);
	r->ar_time = json_string_value(json_object_get(r->ar_obj, "time"));
	r->ar_event = json_string_value(json_object_get(r->ar_obj, "event"));
	r->ar_outcome = json_string_value(json_object_get(r->ar_obj, "outcome"));
	r->ar_reason = json_string_value(json_object_get(r->ar_obj, "reason"));
	r->ar_prev = json_string_value(json_object_get(r->ar_obj, "prev"));
	if (r->ar_time == NULL || audit_time_parse(r->ar_time, &us) == -1) {
		snprintf(why, whylen, "no valid \"time\"");
		goto bad;
	}
	if (r->ar_event == NULL || r->ar_event[0] == '\0' || !audit_outcome_valid(r->ar_outcome) ||
	    r->ar_reason == NULL) {
		snprintf(why, whylen, "no valid \"event\", \"outcome\" or \"reason\"");
		goto bad;
	}
	if (!audit_hex64(r->ar_prev)) {
		snprintf(why, whylen, "no valid \"prev\"");
		goto bad;
	}
	v = json_object_get(r->ar_obj, "worker");
	if (v != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			snprintf(why, whylen, "no valid \"worker\"");
			goto bad;
		}
		r->ar_worker = json_integer_value(v);
	}
	return 0;
bad:
	json_decref(r->ar_obj);
	r->ar_obj = NULL;
	return -1;
}

void
audit_rec_free(struct audit_rec *r)
{
	json_decref(r->ar_obj);
	r->ar_obj = NULL;
}

const char *
audit_rec_str(const struct audit_rec *r, const char *key)
{
	const char *s = json_string_value(json_object_get(r->ar_obj, key));

	return s != NULL ? s : "";
}

/* ---------- line reader ---------- */

void
audit_lines_init(struct audit_lines *l, FILE *f)
{
	memset(l, 0, sizeof(*l));
	l->al_f = f;
}

int
audit_lines_next(struct audit_lines *l)
{
	int ch, any = 0;

	if (l->al_buf == NULL && (l->al_buf = malloc(AUDIT_READ_LINE_MAX + 1)) == NULL)
		return -1;
	l->al_len = 0;
	l->al_newline = 0;
	l->al_toolong = 0;
	while ((ch = getc_unlocked(l->al_f)) != EOF) {
		any = 1;
		if (ch == '\n') {
			l->al_newline = 1;
			break;
		}
		if (l->al_len < AUDIT_READ_LINE_MAX)
			l->al_buf[l->al_len++] = (char)ch;
		else
			l->al_toolong = 1;
	}
	if (ferror(l->al_f))
		return -1;
	if (!any)
		return 0;
	l->al_buf[l->al_len] = '\0';
	l->al_lineno++;
	return 1;
}

void
audit_lines_free(struct audit_lines *l)
{
	free(l->al_buf);
	l->al_buf = NULL;
}

/* ---------- files beside the log ---------- */

int
audit_path_sibling(const char *log, const char *ext, char *out, size_t outlen)
{
	const char *base = strrchr(log, '/'), *dot;
	size_t stem;
	int n;

	base = base != NULL ? base + 1 : log;
	/* From the second character: ".audit" is a name, not an extension. */
	dot = base[0] != '\0' ? strchr(base + 1, '.') : NULL;
	stem = dot != NULL ? (size_t)(dot - log) : strlen(log);
	n = snprintf(out, outlen, "%.*s%s", (int)stem, log, ext);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
