/*
 * Checkpoint signing and checking, and the audit key's files.  The key is ECDSA P-256 with
 * SHA-256 (FIPS-approved, small signatures); it signs nothing but checkpoints.
 */
#include "audit/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/log.h"

#define AUDIT_SIG_MEMBER ",\"sig\":\""   /* how the signature member starts, always last */

/* ---------- key files ---------- */

static int
checkpoint_key_is_p256(EVP_PKEY *k)
{
	char group[32];

	return EVP_PKEY_is_a(k, "EC") &&
	    EVP_PKEY_get_group_name(k, group, sizeof(group), NULL) == 1 &&
	    strcmp(group, "prime256v1") == 0;
}

/*
 * Writes a PEM file through a temporary name and rename(2), so a crash never leaves half a
 * key; O_EXCL | O_NOFOLLOW on the temporary name, so a planted symlink is never followed.
 */
static int
checkpoint_write_pem(const char *path, mode_t mode, EVP_PKEY *k, int private,
    char *err, size_t errlen)
{
	char tmp[4096 + 8];
	BIO *b = NULL;
	int fd, ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "audit key path too long: %s", path);
		return -1;
	}
	if (unlink(tmp) == -1 && errno != ENOENT) {
		snprintf(err, errlen, "cannot remove %s: %s", tmp, strerror(errno));
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd == -1) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	/* Whatever the umask: the key is never readable by others, even for a moment. */
	ok = fchmod(fd, mode) == 0 && (b = BIO_new_fd(fd, BIO_NOCLOSE)) != NULL &&
	    (private ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) :
	    PEM_write_bio_PUBKEY(b, k)) == 1 && BIO_flush(b) == 1 && fsync(fd) == 0;
	BIO_free(b);
	if (close(fd) == -1)
		ok = 0;
	if (!ok || rename(tmp, path) == -1) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int
checkpoint_key_load(const char *path, EVP_PKEY **key, char *err, size_t errlen)
{
	struct stat st;
	FILE *f;

	f = fopen(path, "re");
	if (f == NULL)
		return -1;                        /* errno says whether it exists */
	if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "audit key %s is not a regular file", path);
		fclose(f);
		errno = EINVAL;
		return -1;
	}
	/* Whoever can read it can forge checkpoints. */
	if ((st.st_mode & 077) != 0) {
		snprintf(err, errlen, "audit key %s is accessible by group or others (mode %04o): "
		    "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
		fclose(f);
		errno = EPERM;
		return -1;
	}
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (*key == NULL || !checkpoint_key_is_p256(*key)) {
		snprintf(err, errlen, "audit key %s is not an unencrypted ECDSA P-256 PEM key", path);
		EVP_PKEY_free(*key);
		*key = NULL;
		ERR_clear_error();
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int
audit_pubkey_load(const char *path, EVP_PKEY **pub, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");

	*pub = NULL;
	if (f == NULL) {
		snprintf(err, errlen, "cannot read audit public key %s: %s", path, strerror(errno));
		return -1;
	}
	*pub = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (*pub == NULL || !checkpoint_key_is_p256(*pub)) {
		snprintf(err, errlen, "%s is not an ECDSA P-256 PEM public key", path);
		EVP_PKEY_free(*pub);
		*pub = NULL;
		ERR_clear_error();
		return -1;
	}
	return 0;
}

int
audit_key_open(const char *keypath, const char *pubpath, EVP_PKEY **key, int *created,
    char *err, size_t errlen)
{
	EVP_PKEY *pub = NULL;
	char perr[256];
	int same;

	*key = NULL;
	*created = 0;
	if (checkpoint_key_load(keypath, key, err, errlen) == -1) {
		if (errno != ENOENT)
			return -1;
		*key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		if (*key == NULL) {
			snprintf(err, errlen, "cannot generate the audit key");
			ERR_clear_error();
			return -1;
		}
		if (checkpoint_write_pem(keypath, 0600, *key, 1, err, errlen) == -1)
			goto fail;
		*created = 1;
	}
	/* The public key is derived: rewrite it when missing or not ours (the key decides). */
	same = audit_pubkey_load(pubpath, &pub, perr, sizeof(perr)) == 0 &&
	    EVP_PKEY_eq(pub, *key) == 1;
	EVP_PKEY_free(pub);
	if (!same) {
		if (access(pubpath, F_OK) == 0)
			log_warnx("audit: %s does not hold the public audit key; rewriting it", pubpath);
		if (checkpoint_write_pem(pubpath, 0644, *key, 0, err, errlen) == -1)
			goto fail;
	}
	return 0;
fail:
	EVP_PKEY_free(*key);
	*key = NULL;
	return -1;
}

int
audit_key_id(EVP_PKEY *k, char out[AUDIT_HASH_HEX_LEN + 1])
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(k, &der);

	if (n <= 0)
		return -1;
	audit_hash_hex(der, (size_t)n, out);
	OPENSSL_free(der);
	return 0;
}

/* ---------- signing ---------- */

static int
checkpoint_sign(EVP_PKEY *key, const char *msg, size_t len, char *b64, size_t b64len)
{
	unsigned char sig[128];
	size_t siglen = sizeof(sig);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSign(md, sig, &siglen, (const unsigned char *)msg, len) == 1 &&
	    4 * ((siglen + 2) / 3) < b64len;
	EVP_MD_CTX_free(md);
	if (!ok) {
		ERR_clear_error();
		return -1;
	}
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	return 0;
}

char *
audit_checkpoint_make(const struct audit_chain *c, const char *time, uint64_t first_seq,
    EVP_PKEY *key, const char *key_id, size_t *len)
{
	char b64[AUDIT_SIG_B64_MAX], *body, *line;
	size_t n, total;
	json_t *rec;

	rec = audit_record_make(c, time, AUDIT_CHECKPOINT_EVENT, -1, "success", "", NULL);
	if (rec == NULL || json_object_set_new(rec, "first_seq", json_integer((json_int_t)first_seq)) ||
	    json_object_set_new(rec, "last_seq", json_integer((json_int_t)c->ac_seq)) ||
	    json_object_set_new(rec, "key", json_string(key_id))) {
		json_decref(rec);
		return NULL;
	}
	body = audit_record_dump(rec, &n);
	json_decref(rec);
	/* The signed bytes are exactly the line without its sig member. */
	if (body == NULL || checkpoint_sign(key, body, n, b64, sizeof(b64)) == -1) {
		free(body);
		return NULL;
	}
	total = n - 1 + strlen(AUDIT_SIG_MEMBER) + strlen(b64) + 2;
	if ((line = malloc(total + 1)) != NULL) {
		snprintf(line, total + 1, "%.*s%s%s\"}", (int)(n - 1), body, AUDIT_SIG_MEMBER, b64);
		*len = total;
	}
	free(body);
	return line;
}

/* ---------- checking ---------- */

static int
checkpoint_b64_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	    ch == '+' || ch == '/' || ch == '=';
}

/* Strict base64 of a DER signature; returns its length or -1. */
static int
checkpoint_b64_decode(const char *s, size_t n, unsigned char *out, size_t outlen)
{
	int len, pad = 0;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 > outlen)
		return -1;
	if (s[n - 1] == '=')
		pad = s[n - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < n - (size_t)pad; i++)
		if (!checkpoint_b64_char(s[i]) || s[i] == '=')
			return -1;
	len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	/* EVP_DecodeBlock() counts the padding as zero bytes; DER must not have them. */
	return len < pad ? -1 : len - pad;
}

enum audit_cp_status
audit_checkpoint_check(const char *line, size_t len, const struct audit_rec *r, EVP_PKEY *pub,
    const char *key_id, uint64_t *first, uint64_t *last, char *why, size_t whylen)
{
	const size_t mlen = strlen(AUDIT_SIG_MEMBER);
	unsigned char der[AUDIT_SIG_B64_MAX];
	json_t *fs = json_object_get(r->ar_obj, "first_seq");
	json_t *ls = json_object_get(r->ar_obj, "last_seq");
	const char *key = json_string_value(json_object_get(r->ar_obj, "key"));
	const char *sig = json_string_value(json_object_get(r->ar_obj, "sig"));
	size_t b, e;
	int derlen, ok;
	EVP_MD_CTX *md;

	if (!json_is_integer(fs) || !json_is_integer(ls) || json_integer_value(fs) < 1 ||
	    json_integer_value(ls) < 0 || key == NULL || sig == NULL) {
		snprintf(why, whylen, "checkpoint lacks first_seq, last_seq, key or sig");
		return AUDIT_CP_MALFORMED;
	}
	/* The raw line must end with ,"sig":"BASE64"} and that BASE64 must be the parsed sig. */
	if (len < mlen + 2 || line[len - 1] != '}' || line[len - 2] != '"') {
		snprintf(why, whylen, "checkpoint's sig is not its last member");
		return AUDIT_CP_MALFORMED;
	}
	e = len - 2;
	for (b = e; b > 0 && checkpoint_b64_char(line[b - 1]); b--)
		;
	if (b < mlen || memcmp(line + b - mlen, AUDIT_SIG_MEMBER, mlen) != 0 ||
	    strlen(sig) != e - b || memcmp(sig, line + b, e - b) != 0) {
		snprintf(why, whylen, "checkpoint's sig is not its last member");
		return AUDIT_CP_MALFORMED;
	}
	*first = (uint64_t)json_integer_value(fs);
	*last = (uint64_t)json_integer_value(ls);
	if (strcmp(key, key_id) != 0) {
		snprintf(why, whylen, "signed by another key (key %.16s..., the public key's id is "
		    "%.16s...)", key, key_id);
		return AUDIT_CP_OTHER_KEY;
	}
	derlen = checkpoint_b64_decode(line + b, e - b, der, sizeof(der));
	md = EVP_MD_CTX_new();
	/* Signed message: the line up to the sig member, closed with "}". */
	ok = derlen > 0 && md != NULL &&
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
	    EVP_DigestVerifyUpdate(md, line, b - mlen) == 1 &&
	    EVP_DigestVerifyUpdate(md, "}", 1) == 1 &&
	    EVP_DigestVerifyFinal(md, der, (size_t)derlen) == 1;
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	if (!ok) {
		snprintf(why, whylen, "signature does not verify");
		return AUDIT_CP_BAD_SIG;
	}
	return AUDIT_CP_OK;
}
