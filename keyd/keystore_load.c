/*
 * keyd's key store, loading side: reads one identity's chain and private key, checks that they
 * form a usable pair (type and size, key matches leaf, leaf valid now, chain verifies against
 * the configured CA and CRL) and records what workers and the audit trail need.  Nothing here
 * replaces a running generation: the caller swaps only after keystore_load() returned 0.
 *
 * Secret handling:
 *   - the key file and the passphrase are read into OpenSSL's secure heap when it is
 *     initialised (keyd calls CRYPTO_secure_malloc_init(cfg->secure_heap,
 *     KEYD_SECURE_HEAP_MINSIZE) at start-up), else into ordinary memory; either way they are
 *     wiped before they are freed (OPENSSL_secure_clear_free() handles both cases);
 *   - OpenSSL 3 decodes PEM private keys through secure buffers and puts the private BIGNUMs
 *     (RSA d, p, q, dmp1, dmq1, iqmp; the EC scalar) in the secure heap when it is
 *     initialised, so the parsed key lives in mlocked, MADV_DONTDUMP memory and
 *     EVP_PKEY_free() wipes it;
 *   - certificate, CA and CRL files are public but are wiped too: an operator may have put
 *     the key into the certificate file, and nothing of that file except certificates
 *     re-encoded by us (chain_pem) ever leaves keyd.
 *
 * Every error names the file and the problem: check-config and rotate show it to operators.
 */
#include "keyd/keystore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include "common/limits.h"
#include "common/errbuf.h"
#include "common/log.h"
#include "keyd/tpm.h"

/*
 * Local limits (ask for them in common/limits.h): a PEM private key is a few KiB (RSA-4096
 * encrypted PKCS#8 is about 3.4 KiB); 64 KiB leaves room for a key bundled with its chain.
 */
#define KEYSTORE_KEY_FILE_MAX   (64u << 10)  /* bytes of a private key file */
#define KEYSTORE_PASS_FILE_MAX  4096         /* bytes of a passphrase file */
#define KEYSTORE_RSA_BITS_MIN   2048
#define KEYSTORE_RSA_BITS_MAX   4096
#define KEYSTORE_TPM_PREFIX     "tpm:"

struct ks_file {
	char  *buf;              /* NUL-terminated; wiped and freed by ks_file_free() */
	size_t len;              /* excludes the NUL */
	size_t cap;
};

/* What the PEM passphrase callback had and what happened. */
struct ks_pass {
	char  *pass;             /* secure heap when available; NULL: none configured */
	size_t len;
	int    asked;            /* the key is encrypted: the callback ran */
	int    too_long;         /* longer than OpenSSL's buffer ... */
	int    limit;            /* ... of this many bytes */
};

/* The last OpenSSL reason, for messages; the queue is cleared so nothing stale lingers. */
static const char *
ks_ssl_reason(void)
{
	const char *r = ERR_reason_error_string(ERR_peek_last_error());

	ERR_clear_error();
	return r != NULL ? r : "unknown error";
}

static void
ks_file_free(struct ks_file *f)
{
	if (f->buf != NULL)
		OPENSSL_secure_clear_free(f->buf, f->cap);
	f->buf = NULL;
	f->len = f->cap = 0;
}

/*
 * Reads a regular file of at most max bytes.  secret: try the secure heap first (a full heap
 * falls back to ordinary memory, which is wiped all the same).  what names the file in
 * messages ("key", "certificate", ...).
 */
static int
ks_file_read(const char *what, const char *path, size_t max, int secret, struct ks_file *f,
    char *err, size_t errlen)
{
	struct stat st;
	size_t off = 0;
	ssize_t n;
	int fd;

	memset(f, 0, sizeof(*f));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		errbuf_set(err, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		errbuf_set(err, errlen, "%s %s: cannot stat: %s", what, path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		errbuf_set(err, errlen, "%s %s: not a regular file", what, path);
		goto fail;
	}
	if (st.st_size < 0 || (unsigned long long)st.st_size > max) {
		errbuf_set(err, errlen, "%s %s: larger than %zu bytes", what, path, max);
		goto fail;
	}
	if (secret && (st.st_mode & S_IROTH))
		log_warnx("keystore: %s %s is readable by every user; chmod o-rwx it", what, path);

	/* One spare byte for the NUL and one to notice a file that grew since fstat(). */
	f->cap = (size_t)st.st_size + 2;
	if (secret)
		f->buf = OPENSSL_secure_zalloc(f->cap);
	if (f->buf == NULL)
		f->buf = OPENSSL_zalloc(f->cap);
	if (f->buf == NULL) {
		errbuf_set(err, errlen, "%s %s: out of memory", what, path);
		goto fail;
	}
	for (;;) {
		n = read(fd, f->buf + off, f->cap - 1 - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			errbuf_set(err, errlen, "%s %s: read: %s", what, path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		off += (size_t)n;
		if (off == f->cap - 1) {
			errbuf_set(err, errlen, "%s %s: changed while being read", what, path);
			goto fail;
		}
	}
	f->buf[off] = '\0';
	f->len = off;
	close(fd);
	return 0;
fail:
	close(fd);
	ks_file_free(f);
	return -1;
}

/* ---- passphrase --------------------------------------------------------------------- */

static void
ks_pass_free(struct ks_pass *pw)
{
	if (pw->pass != NULL)
		OPENSSL_secure_clear_free(pw->pass, pw->len + 1);
	memset(pw, 0, sizeof(*pw));
}

static int
ks_pass_set(struct ks_pass *pw, const char *s, size_t len)
{
	pw->pass = OPENSSL_secure_malloc(len + 1);
	if (pw->pass == NULL)
		pw->pass = OPENSSL_malloc(len + 1);
	if (pw->pass == NULL)
		return -1;
	memcpy(pw->pass, s, len);
	pw->pass[len] = '\0';
	pw->len = len;
	return 0;
}

/*
 * The passphrase: the first line of key-passphrase-file (its newline, and a CR before it,
 * stripped), else $REDOUBT_KEY_PASSPHRASE, else none (fine for an unencrypted key).  Never
 * from the config file itself, and never from a terminal prompt.
 */
static int
ks_pass_load(const struct config_identity *id, struct ks_pass *pw, char *err, size_t errlen)
{
	struct ks_file f;
	const char *env;
	int rc;

	memset(pw, 0, sizeof(*pw));
	if (id->key_passphrase_file[0] != '\0') {
		size_t n;

		if (ks_file_read("key-passphrase-file", id->key_passphrase_file,
		    KEYSTORE_PASS_FILE_MAX, 1, &f, err, errlen) == -1)
			return -1;
		n = strcspn(f.buf, "\n");
		if (n > 0 && f.buf[n - 1] == '\r')
			n--;
		if (n == 0) {
			ks_file_free(&f);
			errbuf_set(err, errlen, "key-passphrase-file %s: the first line is empty",
			    id->key_passphrase_file);
			return -1;
		}
		rc = ks_pass_set(pw, f.buf, n);
		ks_file_free(&f);
	} else if ((env = getenv(KEYSTORE_PASSPHRASE_ENV)) != NULL && env[0] != '\0') {
		rc = ks_pass_set(pw, env, strlen(env));
	} else
		return 0;
	if (rc == -1)
		errbuf_set(err, errlen, "key %s: out of memory for the passphrase", id->key);
	return rc;
}

/* pem_password_cb: hands over the passphrase we have, or fails; it never prompts. */
static int
ks_pass_cb(char *buf, int size, int rwflag, void *u)
{
	struct ks_pass *pw = u;

	pw->asked = 1;
	if (pw->pass == NULL || size <= 0)
		return -1;
	if (pw->len > (size_t)size) {
		pw->too_long = 1;
		pw->limit = size;
		return -1;
	}
	memcpy(buf, pw->pass, pw->len);
	return (int)pw->len;
}

/* ---- private key -------------------------------------------------------------------- */

/* A PEM key file (optionally encrypted). */
static int
ks_load_pem_key(const struct config_identity *id, struct keyd_key *k, char *err, size_t errlen)
{
	struct ks_file f;
	struct ks_pass pw;
	BIO *bio = NULL;
	int rc = -1;

	if (ks_pass_load(id, &pw, err, errlen) == -1)
		return -1;
	if (ks_file_read("key", id->key, KEYSTORE_KEY_FILE_MAX, 1, &f, err, errlen) == -1) {
		ks_pass_free(&pw);
		return -1;
	}
	if ((bio = BIO_new_mem_buf(f.buf, (int)f.len)) == NULL) {
		errbuf_set(err, errlen, "key %s: out of memory", id->key);
		goto out;
	}
	ERR_clear_error();
	k->pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, ks_pass_cb, &pw, NULL, NULL);
	if (k->pkey != NULL)
		rc = 0;
	else if (pw.asked && pw.too_long)
		errbuf_set(err, errlen, "key %s: the passphrase is longer than OpenSSL accepts (%d "
		    "bytes)", id->key, pw.limit);
	else if (pw.asked && pw.pass == NULL)
		errbuf_set(err, errlen, "key %s is encrypted but no passphrase is available: set "
		    "key-passphrase-file in the identity, or the environment variable %s",
		    id->key, KEYSTORE_PASSPHRASE_ENV);
	else if (pw.asked)
		errbuf_set(err, errlen, "key %s: wrong passphrase or corrupt key", id->key);
	else
		errbuf_set(err, errlen, "key %s: no private key found (not PEM, truncated or corrupt)",
		    id->key);
	ERR_clear_error();
out:
	BIO_free(bio);
	ks_file_free(&f);
	ks_pass_free(&pw);
	return rc;
}

/*
 * TPM 2.0 key blobs ("tpm:/path"): only the public part and the TPM-encrypted private part are
 * read; k->pkey is the public key and k->tpm the blob.  The private key never leaves the TPM;
 * keyd signs with it on its TPM thread (tpm_signer.c), which checks at start-up that the TPM
 * can use the blob.
 */
static int
ks_load_tpm_key(const struct config *cfg, const struct config_identity *id,
    struct keyd_key *k, char *err, size_t errlen)
{
	return tpm_key_read(id->key + strlen(KEYSTORE_TPM_PREFIX), &k->tpm, &k->pkey, err, errlen);
}

static int
ks_load_key(const struct config *cfg, const struct config_identity *id, struct keyd_key *k,
    char *err, size_t errlen)
{
	if (strncmp(id->key, KEYSTORE_TPM_PREFIX, strlen(KEYSTORE_TPM_PREFIX)) == 0)
		return ks_load_tpm_key(cfg, id, k, err, errlen);
	return ks_load_pem_key(id, k, err, errlen);
}

/*
 * P-256, P-384 or RSA 2048..4096: what sign_policy_check() knows how to bind to a sigalg.
 * FIPS needs nothing more here (RSA >= 2048 is already the floor).  "RSA-PSS" (restricted)
 * keys are refused: they cannot serve TLS 1.2 PKCS#1 and libssl treats them differently.
 */
static int
ks_check_key_type(const struct config_identity *id, struct keyd_key *k, char *err,
    size_t errlen)
{
	const char *tname = EVP_PKEY_get0_type_name(k->pkey);
	int bits = EVP_PKEY_get_bits(k->pkey);

	if (tname == NULL)
		tname = "unknown";
	if (EVP_PKEY_is_a(k->pkey, "EC")) {
		char group[64];

		if (!EVP_PKEY_get_group_name(k->pkey, group, sizeof(group), NULL))
			group[0] = '\0';
		if (strcmp(group, "prime256v1") == 0 && bits == 256)
			k->type = IPC_KEY_EC_P256;
		else if (strcmp(group, "secp384r1") == 0 && bits == 384)
			k->type = IPC_KEY_EC_P384;
		else {
			errbuf_set(err, errlen, "key %s: EC curve %s is not supported (use P-256 or "
			    "P-384)", id->key, group[0] != '\0' ? group : "(explicit parameters)");
			return -1;
		}
	} else if (EVP_PKEY_is_a(k->pkey, "RSA") && !EVP_PKEY_is_a(k->pkey, "RSA-PSS")) {
		if (bits < KEYSTORE_RSA_BITS_MIN || bits > KEYSTORE_RSA_BITS_MAX) {
			errbuf_set(err, errlen, "key %s: RSA key of %d bits is not supported (use %d to "
			    "%d bits)", id->key, bits, KEYSTORE_RSA_BITS_MIN, KEYSTORE_RSA_BITS_MAX);
			return -1;
		}
		k->type = IPC_KEY_RSA;
	} else {
		errbuf_set(err, errlen, "key %s: key type %s is not supported (use EC P-256, EC P-384 "
		    "or RSA 2048..4096)", id->key, tname);
		return -1;
	}
	k->bits = (unsigned)bits;
	return 0;
}

/* ---- certificates ------------------------------------------------------------------- */

/*
 * Every certificate in a PEM buffer, in order.  trusted: also accept "TRUSTED CERTIFICATE"
 * blocks (CA bundles).  Other PEM blocks (a key bundled with the chain) are skipped.  The
 * loop ends on "no start line" after at least one certificate; anything else (a truncated or
 * corrupt block) is an error naming the certificate's position.
 */
static int
ks_parse_certs(const char *what, const char *path, const struct ks_file *f, int trusted,
    STACK_OF(X509) **out, char *err, size_t errlen)
{
	STACK_OF(X509) *sk;
	BIO *bio;
	X509 *x;
	unsigned long e;

	*out = NULL;
	if ((sk = sk_X509_new_null()) == NULL ||
	    (bio = BIO_new_mem_buf(f->buf, (int)f->len)) == NULL) {
		sk_X509_free(sk);
		errbuf_set(err, errlen, "%s %s: out of memory", what, path);
		return -1;
	}
	ERR_clear_error();
	for (;;) {
		x = trusted ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) :
		    PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (x == NULL)
			break;
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			errbuf_set(err, errlen, "%s %s: out of memory", what, path);
			goto fail;
		}
	}
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
		errbuf_set(err, errlen, "%s %s: certificate %d does not parse (truncated or corrupt "
		    "PEM: %s)", what, path, sk_X509_num(sk) + 1, ks_ssl_reason());
		goto fail;
	}
	ERR_clear_error();
	if (sk_X509_num(sk) == 0) {
		errbuf_set(err, errlen, "%s %s: no PEM certificate found", what, path);
		goto fail;
	}
	BIO_free(bio);
	*out = sk;
	return 0;
fail:
	BIO_free(bio);
	sk_X509_pop_free(sk, X509_free);
	return -1;
}

static int
ks_parse_crls(const char *path, const struct ks_file *f, STACK_OF(X509_CRL) **out, char *err,
    size_t errlen)
{
	STACK_OF(X509_CRL) *sk;
	X509_CRL *c;
	BIO *bio;
	unsigned long e;

	*out = NULL;
	if ((sk = sk_X509_CRL_new_null()) == NULL ||
	    (bio = BIO_new_mem_buf(f->buf, (int)f->len)) == NULL) {
		sk_X509_CRL_free(sk);
		errbuf_set(err, errlen, "CRL %s: out of memory", path);
		return -1;
	}
	ERR_clear_error();
	while ((c = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_CRL_push(sk, c)) {
			X509_CRL_free(c);
			errbuf_set(err, errlen, "CRL %s: out of memory", path);
			goto fail;
		}
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
		errbuf_set(err, errlen, "CRL %s: CRL %d does not parse (truncated or corrupt PEM: %s)",
		    path, sk_X509_CRL_num(sk) + 1, ks_ssl_reason());
		goto fail;
	}
	ERR_clear_error();
	if (sk_X509_CRL_num(sk) == 0) {
		errbuf_set(err, errlen, "CRL %s: no PEM CRL found", path);
		goto fail;
	}
	BIO_free(bio);
	*out = sk;
	return 0;
fail:
	BIO_free(bio);
	sk_X509_CRL_pop_free(sk, X509_CRL_free);
	return -1;
}

/* A public buffer for workers: malloc'd, NUL-terminated, len without the NUL. */
static int
ks_dup_public(const struct ks_file *f, char **out, size_t *outlen)
{
	if ((*out = malloc(f->len + 1)) == NULL)
		return -1;
	memcpy(*out, f->buf, f->len + 1);
	*outlen = f->len;
	return 0;
}

/*
 * chain_pem is re-encoded from the parsed certificates rather than copied from the file: what
 * reaches the workers is then certificates and nothing else, even when the operator bundled
 * the private key (or comments, or stray blocks) into the certificate file.
 */
static int
ks_encode_chain(const char *path, STACK_OF(X509) *chain, struct keyd_key *k, char *err,
    size_t errlen)
{
	BIO *bio;
	char *data;
	long n;
	int i;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		goto oom;
	for (i = 0; i < sk_X509_num(chain); i++)
		if (!PEM_write_bio_X509(bio, sk_X509_value(chain, i))) {
			BIO_free(bio);
			goto oom;
		}
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || (unsigned long)n > PEM_SIZE_MAX || (k->chain_pem = malloc((size_t)n + 1)) == NULL) {
		BIO_free(bio);
		goto oom;
	}
	memcpy(k->chain_pem, data, (size_t)n);
	k->chain_pem[n] = '\0';
	k->chain_len = (size_t)n;
	BIO_free(bio);
	return 0;
oom:
	ERR_clear_error();
	errbuf_set(err, errlen, "certificate %s: cannot re-encode the chain", path);
	return -1;
}

static int
ks_load_chain(const struct config_identity *id, struct keyd_key *k, STACK_OF(X509) **chain,
    char *err, size_t errlen)
{
	struct ks_file f;
	int rc;

	if (ks_file_read("certificate", id->cert, PEM_SIZE_MAX, 0, &f, err, errlen) == -1)
		return -1;
	rc = ks_parse_certs("certificate", id->cert, &f, 0, chain, err, errlen);
	ks_file_free(&f);
	if (rc == -1)
		return -1;
	k->leaf = sk_X509_value(*chain, 0);
	if (!X509_up_ref(k->leaf)) {
		k->leaf = NULL;
		errbuf_set(err, errlen, "certificate %s: out of memory", id->cert);
		return -1;
	}
	return ks_encode_chain(id->cert, *chain, k, err, errlen);
}

static int
ks_check_match(const struct config_identity *id, const struct keyd_key *k, char *err,
    size_t errlen)
{
	if (X509_check_private_key(k->leaf, k->pkey) != 1) {
		ERR_clear_error();
		errbuf_set(err, errlen, "key %s does not match certificate %s", id->key, id->cert);
		return -1;
	}
	return 0;
}

static int
ks_asn1_time(const ASN1_TIME *t, time_t *out)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return -1;
	*out = timegm(&tm);
	return 0;
}

static void
ks_format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

/* The leaf is valid now: neither expired nor not yet valid. */
static int
ks_check_validity(const struct config_identity *id, struct keyd_key *k, char *err,
    size_t errlen)
{
	const ASN1_TIME *nb = X509_get0_notBefore(k->leaf), *na = X509_get0_notAfter(k->leaf);
	char when[64];
	int c;

	if (ks_asn1_time(nb, &k->not_before) == -1 || ks_asn1_time(na, &k->not_after) == -1) {
		ERR_clear_error();
		errbuf_set(err, errlen, "certificate %s: invalid validity dates", id->cert);
		return -1;
	}
	if ((c = X509_cmp_current_time(nb)) == 0 || X509_cmp_current_time(na) == 0) {
		ERR_clear_error();
		errbuf_set(err, errlen, "certificate %s: invalid validity dates", id->cert);
		return -1;
	}
	if (c > 0) {
		ks_format_time(k->not_before, when, sizeof(when));
		errbuf_set(err, errlen, "certificate %s is not yet valid: valid from %s", id->cert,
		    when);
		return -1;
	}
	if (X509_cmp_current_time(na) < 0) {
		ks_format_time(k->not_after, when, sizeof(when));
		errbuf_set(err, errlen, "certificate %s has expired: valid until %s", id->cert, when);
		return -1;
	}
	return 0;
}

/* CA bundle and CRL: public copies for the workers, parsed for the chain check. */
static int
ks_load_trust(const struct config_identity *id, struct keyd_key *k, STACK_OF(X509) **cas,
    STACK_OF(X509_CRL) **crls, char *err, size_t errlen)
{
	struct ks_file f;
	int rc;

	if (id->ca[0] != '\0') {
		if (ks_file_read("CA file", id->ca, PEM_SIZE_MAX, 0, &f, err, errlen) == -1)
			return -1;
		rc = ks_parse_certs("CA file", id->ca, &f, 1, cas, err, errlen);
		if (rc == 0 && ks_dup_public(&f, &k->ca_pem, &k->ca_len) == -1) {
			errbuf_set(err, errlen, "CA file %s: out of memory", id->ca);
			rc = -1;
		}
		ks_file_free(&f);
		if (rc == -1)
			return -1;
	}
	if (id->crl[0] != '\0') {
		if (ks_file_read("CRL", id->crl, PEM_SIZE_MAX, 0, &f, err, errlen) == -1)
			return -1;
		rc = ks_parse_crls(id->crl, &f, crls, err, errlen);
		if (rc == 0 && ks_dup_public(&f, &k->crl_pem, &k->crl_len) == -1) {
			errbuf_set(err, errlen, "CRL %s: out of memory", id->crl);
			rc = -1;
		}
		ks_file_free(&f);
		if (rc == -1)
			return -1;
	}
	return 0;
}

/*
 * With a CA configured, the chain file's certificates must lead from the leaf to one of its
 * anchors (the intermediates are untrusted, only the CA file is trusted), and, with a CRL,
 * the leaf must not be revoked (X509_V_FLAG_CRL_CHECK: the leaf's issuer needs a current CRL
 * in the file).  No purpose is set: one identity may serve listeners and connectors.
 */
static int
ks_verify_chain(const struct config_identity *id, const struct keyd_key *k,
    STACK_OF(X509) *chain, STACK_OF(X509) *cas, STACK_OF(X509_CRL) *crls, char *err,
    size_t errlen)
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	STACK_OF(X509) *untrusted = NULL;
	int i, rc = -1, verr;

	if (cas == NULL)
		return 0;
	if ((store = X509_STORE_new()) == NULL || (ctx = X509_STORE_CTX_new()) == NULL ||
	    (untrusted = sk_X509_new_null()) == NULL)
		goto oom;
	for (i = 0; i < sk_X509_num(cas); i++)
		if (!X509_STORE_add_cert(store, sk_X509_value(cas, i)))
			goto oom;
	for (i = 0; crls != NULL && i < sk_X509_CRL_num(crls); i++)
		if (!X509_STORE_add_crl(store, sk_X509_CRL_value(crls, i)))
			goto oom;
	if (crls != NULL && !X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK))
		goto oom;
	/* Intermediates only: the leaf is the target. */
	for (i = 1; i < sk_X509_num(chain); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(chain, i)))
			goto oom;
	if (!X509_STORE_CTX_init(ctx, store, k->leaf, untrusted))
		goto oom;
	ERR_clear_error();
	if (X509_verify_cert(ctx) == 1)
		rc = 0;
	else {
		verr = X509_STORE_CTX_get_error(ctx);
		errbuf_set(err, errlen, "certificate %s does not verify against CA file %s%s%s: %s "
		    "(depth %d)", id->cert, id->ca, crls != NULL ? " and CRL " : "",
		    crls != NULL ? id->crl : "", X509_verify_cert_error_string(verr),
		    X509_STORE_CTX_get_error_depth(ctx));
	}
	ERR_clear_error();
	goto out;
oom:
	ERR_clear_error();
	errbuf_set(err, errlen, "certificate %s: out of memory while verifying the chain", id->cert);
out:
	sk_X509_free(untrusted);   /* the certificates belong to chain */
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

/* Serial (hex), SHA-256 fingerprint (AA:BB:...), subject (RFC 2253), key id. */
static int
ks_fill_meta(const struct config_identity *id, struct keyd_key *k, char *err, size_t errlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;
	BIGNUM *bn = NULL;
	char *hex = NULL;
	BIO *bio = NULL;
	char *data;
	long n;
	int rc = -1;

	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(k->leaf), NULL)) == NULL ||
	    (hex = BN_bn2hex(bn)) == NULL)
		goto oom;
	if (strlen(hex) >= sizeof(k->serial)) {
		errbuf_set(err, errlen, "certificate %s: serial number longer than %zu hex digits",
		    id->cert, sizeof(k->serial) - 1);
		goto out;
	}
	snprintf(k->serial, sizeof(k->serial), "%s", hex);

	if (!X509_digest(k->leaf, EVP_sha256(), md, &mdlen) || mdlen != 32)
		goto oom;
	for (i = 0; i < mdlen; i++)
		snprintf(k->fingerprint + (size_t)3 * i, sizeof(k->fingerprint) - (size_t)3 * i,
		    i + 1 < mdlen ? "%02X:" : "%02X", md[i]);

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    X509_NAME_print_ex(bio, X509_get_subject_name(k->leaf), 0, XN_FLAG_RFC2253) < 0)
		goto oom;
	n = BIO_get_mem_data(bio, &data);
	if (n < 0)
		goto oom;
	/* Cut at the field size; RFC 2253 output is one line (controls are escaped). */
	if ((size_t)n >= sizeof(k->subject))
		n = (long)sizeof(k->subject) - 1;
	memcpy(k->subject, data, (size_t)n);
	k->subject[n] = '\0';

	if (keyid_of_cert(k->leaf, k->key_id) == -1)
		goto oom;
	rc = 0;
	goto out;
oom:
	errbuf_set(err, errlen, "certificate %s: cannot read its serial, fingerprint, subject or "
	    "public key", id->cert);
out:
	ERR_clear_error();
	BIO_free(bio);
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

int
keyid_of_cert(X509 *x, uint8_t out[IPC_KEY_ID_LEN])
{
	unsigned char *der = NULL;
	unsigned mdlen = 0;
	int len, rc = -1;

	if (x == NULL || (len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der)) <= 0)
		return -1;
	if (EVP_Digest(der, (size_t)len, out, &mdlen, EVP_sha256(), NULL) &&
	    mdlen == IPC_KEY_ID_LEN)
		rc = 0;
	OPENSSL_free(der);
	return rc;
}

int
keystore_load(const struct config *cfg, const struct config_identity *id,
    uint32_t generation, struct keyd_key **out, char *err, size_t errlen)
{
	struct keyd_key *k;
	STACK_OF(X509) *chain = NULL, *cas = NULL;
	STACK_OF(X509_CRL) *crls = NULL;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (id == NULL || out == NULL) {
		errbuf_set(err, errlen, "keystore: no identity given");
		return -1;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		errbuf_set(err, errlen, "keystore: out of memory loading %s", id->cert);
		return -1;
	}
	k->generation = generation;

	rc = ks_load_chain(id, k, &chain, err, errlen) ||
	    ks_load_key(cfg, id, k, err, errlen) ||
	    ks_check_key_type(id, k, err, errlen) ||
	    ks_check_match(id, k, err, errlen) ||
	    ks_check_validity(id, k, err, errlen) ||
	    ks_load_trust(id, k, &cas, &crls, err, errlen) ||
	    ks_verify_chain(id, k, chain, cas, crls, err, errlen) ||
	    ks_fill_meta(id, k, err, errlen) ? -1 : 0;

	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(cas, X509_free);
	sk_X509_CRL_pop_free(crls, X509_CRL_free);
	ERR_clear_error();
	if (rc == -1) {
		keystore_free(k);
		return -1;
	}
	*out = k;
	return 0;
}

void
keystore_free(struct keyd_key *k)
{
	if (k == NULL)
		return;
	keystore_sign_forget(k);    /* before the key: the signing context holds a reference */
	EVP_PKEY_free(k->pkey);     /* wipes the private components (secure heap) */
	tpm_key_unref(k->tpm);
	X509_free(k->leaf);
	free(k->chain_pem);
	free(k->ca_pem);
	free(k->crl_pem);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}
