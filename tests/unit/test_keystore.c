/*
 * keyd's key store (keyd/keystore_*.c): loads good identities, refuses bad ones with a message
 * that names the file and the problem, and signs so that the leaf's public key verifies.
 *
 * Every fixture (CA, intermediate, leaves, keys, CRL) is generated at start-up with the
 * OpenSSL API into a mkdtemp() directory that is removed at the end; no key is committed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/limits.h"
#include "common/log.h"
#include "keyd/keystore.h"
#include "keyd/sign_policy.h"

#define DAY       (24L * 3600)
#define PASSPHRASE "correct horse battery staple"

struct fx {
	char      dir[64];
	EVP_PKEY *ca_key, *int_key, *other_ca_key;
	X509     *ca, *inter, *other_ca;
	EVP_PKEY *k_p256, *k_p384, *k_rsa;    /* leaf keys, kept to compute expected key ids */
	X509     *c_p256, *c_p384, *c_rsa;
};

static struct fx fx;
static struct config cfg;

/* ---- fixture generation ------------------------------------------------------------- */

static char *
fx_path(const char *name)
{
	static char buf[8][256];
	static unsigned i;
	char *p = buf[i++ % 8];

	snprintf(p, sizeof(buf[0]), "%s/%s", fx.dir, name);
	return p;
}

static EVP_PKEY *
gen_key(const char *type, const char *param)
{
	EVP_PKEY *k;

	if (strcmp(type, "RSA") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(param));
	else if (strcmp(type, "EC") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", param);
	else
		k = EVP_PKEY_Q_keygen(NULL, NULL, type);
	assert_non_null(k);
	return k;
}

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
}

/* issuer NULL: self-signed with key. */
static X509 *
make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, long serial,
    long from, long until, int ca)
{
	X509 *x = X509_new();
	X509_NAME *name;

	assert_non_null(x);
	assert_true(X509_set_version(x, 2));
	assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), serial));
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), until));
	assert_true(X509_set_pubkey(x, key));
	name = X509_get_subject_name(x);
	assert_true(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	    (const unsigned char *)"redoubt test", -1, -1, 0));
	assert_true(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0));
	assert_true(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) :
	    name));
	if (ca) {
		add_ext(x, issuer != NULL ? issuer : x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, issuer != NULL ? issuer : x, NID_key_usage,
		    "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, issuer, NID_subject_alt_name, "DNS:node.example");
	}
	add_ext(x, issuer != NULL ? issuer : x, NID_subject_key_identifier, "hash");
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static BIO *
open_out(const char *name)
{
	BIO *b = BIO_new_file(fx_path(name), "w");

	assert_non_null(b);
	return b;
}

/* Writes a certificate, and a second one after it when given (a chain), to name. */
static void
write_certs(const char *name, X509 *first, X509 *second)
{
	BIO *b = open_out(name);

	assert_true(PEM_write_bio_X509(b, first));
	if (second != NULL)
		assert_true(PEM_write_bio_X509(b, second));
	BIO_free(b);
}

static void
write_key(const char *name, EVP_PKEY *k, const char *pass)
{
	BIO *b = open_out(name);

	if (pass != NULL)
		assert_true(PEM_write_bio_PrivateKey(b, k, EVP_aes_256_cbc(),
		    (const unsigned char *)pass, (int)strlen(pass), NULL, NULL));
	else
		assert_true(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
	BIO_free(b);
	assert_int_equal(chmod(fx_path(name), 0600), 0);
}

static void
write_text(const char *name, const char *text, size_t len)
{
	FILE *f = fopen(fx_path(name), "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static char *
read_text(const char *name, size_t *len)
{
	FILE *f = fopen(fx_path(name), "r");
	char *buf = calloc(1, 1 << 20);

	assert_non_null(f);
	assert_non_null(buf);
	*len = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	return buf;
}

/* A copy of src cut to its first `keep` bytes. */
static void
write_truncated(const char *dst, const char *src, size_t keep)
{
	size_t len;
	char *t = read_text(src, &len);

	assert_true(keep < len);
	write_text(dst, t, keep);
	free(t);
}

static void
write_crl(const char *name, X509 *ca, EVP_PKEY *ca_key, long revoked_serial)
{
	X509_CRL *crl = X509_CRL_new();
	X509_REVOKED *r = X509_REVOKED_new();
	ASN1_TIME *t = ASN1_TIME_new();
	ASN1_INTEGER *sn = ASN1_INTEGER_new();
	BIO *b;

	assert_non_null(crl);
	assert_non_null(r);
	assert_true(X509_CRL_set_version(crl, 1));
	assert_true(X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)));
	assert_non_null(X509_gmtime_adj(t, -3600));
	assert_true(X509_CRL_set1_lastUpdate(crl, t));
	assert_non_null(X509_gmtime_adj(t, 7 * DAY));
	assert_true(X509_CRL_set1_nextUpdate(crl, t));
	assert_true(ASN1_INTEGER_set(sn, revoked_serial));
	assert_true(X509_REVOKED_set_serialNumber(r, sn));
	assert_non_null(X509_gmtime_adj(t, -60));
	assert_true(X509_REVOKED_set_revocationDate(r, t));
	assert_true(X509_CRL_add0_revoked(crl, r));
	assert_true(X509_CRL_sort(crl));
	assert_true(X509_CRL_sign(crl, ca_key, EVP_sha256()) > 0);
	b = open_out(name);
	assert_true(PEM_write_bio_X509_CRL(b, crl));
	BIO_free(b);
	ASN1_INTEGER_free(sn);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
}

static int
fx_setup(void **state)
{
	EVP_PKEY *k;
	X509 *x;

	umask(077);     /* key and passphrase files as an operator should keep them */
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/redoubt-test-keystore-XXXXXX");
	assert_non_null(mkdtemp(fx.dir));

	fx.ca_key = gen_key("EC", "P-256");
	fx.ca = make_cert("redoubt test root", fx.ca_key, NULL, NULL, 1, -10 * DAY, 3650 * DAY, 1);
	fx.int_key = gen_key("EC", "P-384");
	fx.inter = make_cert("redoubt test intermediate", fx.int_key, fx.ca, fx.ca_key, 2,
	    -10 * DAY, 3650 * DAY, 1);
	fx.other_ca_key = gen_key("EC", "P-256");
	fx.other_ca = make_cert("some other root", fx.other_ca_key, NULL, NULL, 1, -10 * DAY,
	    3650 * DAY, 1);
	write_certs("ca.pem", fx.ca, NULL);
	write_certs("other-ca.pem", fx.other_ca, NULL);
	write_crl("ca.crl", fx.ca, fx.ca_key, 0x5005);

	/* Good leaves: P-256 and RSA from the root, P-384 through the intermediate. */
	fx.k_p256 = gen_key("EC", "P-256");
	fx.c_p256 = make_cert("leaf-p256", fx.k_p256, fx.ca, fx.ca_key, 0x1001, -DAY,
	    365 * DAY, 0);
	write_certs("p256.crt", fx.c_p256, NULL);
	write_key("p256.key", fx.k_p256, NULL);
	write_key("p256-enc.key", fx.k_p256, PASSPHRASE);

	fx.k_p384 = gen_key("EC", "P-384");
	fx.c_p384 = make_cert("leaf-p384", fx.k_p384, fx.inter, fx.int_key, 0x1002, -DAY,
	    365 * DAY, 0);
	write_certs("p384.crt", fx.c_p384, fx.inter);
	write_key("p384.key", fx.k_p384, NULL);

	fx.k_rsa = gen_key("RSA", "2048");
	fx.c_rsa = make_cert("leaf-rsa", fx.k_rsa, fx.ca, fx.ca_key, 0x00ABCDEF01L, -DAY,
	    365 * DAY, 0);
	write_certs("rsa.crt", fx.c_rsa, NULL);
	write_key("rsa.key", fx.k_rsa, NULL);

	/* Certificate and key in one file: the key must not reach chain_pem. */
	write_certs("bundle.pem", fx.c_p256, NULL);
	{
		BIO *b = BIO_new_file(fx_path("bundle.pem"), "a");
		assert_non_null(b);
		assert_true(PEM_write_bio_PrivateKey(b, fx.k_p256, NULL, NULL, 0, NULL, NULL));
		BIO_free(b);
	}

	/* Expired, not yet valid, another CA, revoked. */
	x = make_cert("expired", fx.k_p256, fx.ca, fx.ca_key, 0x2001, -20 * DAY, -10 * DAY, 0);
	write_certs("expired.crt", x, NULL);
	X509_free(x);
	x = make_cert("future", fx.k_p256, fx.ca, fx.ca_key, 0x2002, 10 * DAY, 20 * DAY, 0);
	write_certs("future.crt", x, NULL);
	X509_free(x);
	x = make_cert("foreign", fx.k_p256, fx.other_ca, fx.other_ca_key, 0x2003, -DAY, DAY, 0);
	write_certs("foreign.crt", x, NULL);
	X509_free(x);
	x = make_cert("revoked", fx.k_p256, fx.ca, fx.ca_key, 0x5005, -DAY, DAY, 0);
	write_certs("revoked.crt", x, NULL);
	X509_free(x);
	/* P-384 leaf without its intermediate in the chain file. */
	write_certs("p384-nochain.crt", fx.c_p384, NULL);

	/* A P-256 key that matches no certificate. */
	k = gen_key("EC", "P-256");
	write_key("other-p256.key", k, NULL);
	EVP_PKEY_free(k);

	/* Keys of types and sizes keyd does not hold. */
	k = gen_key("RSA", "1024");
	x = make_cert("rsa1024", k, fx.ca, fx.ca_key, 0x3001, -DAY, DAY, 0);
	write_certs("rsa1024.crt", x, NULL);
	write_key("rsa1024.key", k, NULL);
	X509_free(x);
	EVP_PKEY_free(k);
	k = gen_key("ED25519", NULL);
	x = make_cert("ed25519", k, fx.ca, fx.ca_key, 0x3002, -DAY, DAY, 0);
	write_certs("ed25519.crt", x, NULL);
	write_key("ed25519.key", k, NULL);
	X509_free(x);
	EVP_PKEY_free(k);
	k = gen_key("EC", "P-521");
	x = make_cert("p521", k, fx.ca, fx.ca_key, 0x3003, -DAY, DAY, 0);
	write_certs("p521.crt", x, NULL);
	write_key("p521.key", k, NULL);
	X509_free(x);
	EVP_PKEY_free(k);

	/* Truncated files: mid-base64 of the chain's second certificate, of the key. */
	write_certs("p384-chain-full.crt", fx.c_p384, fx.inter);
	{
		size_t len;
		free(read_text("p384-chain-full.crt", &len));
		write_truncated("truncated-chain.crt", "p384-chain-full.crt", len - 200);
		write_truncated("truncated-leaf.crt", "p256.crt", 300);
	}
	write_truncated("truncated.key", "p256.key", 100);
	write_text("empty.crt", "", 0);

	write_text("pass.txt", PASSPHRASE "\n", strlen(PASSPHRASE) + 1);
	write_text("pass-crlf.txt", PASSPHRASE "\r\nsecond line\n", strlen(PASSPHRASE) + 15);
	write_text("wrong-pass.txt", "Tr0ub4dor&3\n", 12);
	write_text("empty-pass.txt", "\n", 1);
	return 0;
}

static int
fx_teardown(void **state)
{
	static const char *const files[] = { "ca.pem", "other-ca.pem", "ca.crl", "p256.crt",
		"p256.key", "p256-enc.key", "p384.crt", "p384.key", "rsa.crt", "rsa.key",
		"bundle.pem", "expired.crt", "future.crt", "foreign.crt", "revoked.crt",
		"p384-nochain.crt", "other-p256.key", "rsa1024.crt", "rsa1024.key", "ed25519.crt",
		"ed25519.key", "p521.crt", "p521.key", "p384-chain-full.crt",
		"truncated-chain.crt", "truncated-leaf.crt", "truncated.key", "empty.crt",
		"pass.txt", "pass-crlf.txt", "wrong-pass.txt", "empty-pass.txt" };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(fx_path(files[i]));
	assert_int_equal(rmdir(fx.dir), 0);
	EVP_PKEY_free(fx.ca_key);
	EVP_PKEY_free(fx.int_key);
	EVP_PKEY_free(fx.other_ca_key);
	EVP_PKEY_free(fx.k_p256);
	EVP_PKEY_free(fx.k_p384);
	EVP_PKEY_free(fx.k_rsa);
	X509_free(fx.ca);
	X509_free(fx.inter);
	X509_free(fx.other_ca);
	X509_free(fx.c_p256);
	X509_free(fx.c_p384);
	X509_free(fx.c_rsa);
	return 0;
}

/* ---- helpers ------------------------------------------------------------------------- */

static void
ident(struct config_identity *id, const char *cert, const char *key, const char *ca,
    const char *crl, const char *passfile)
{
	memset(id, 0, sizeof(*id));
	snprintf(id->name, sizeof(id->name), "node");
	snprintf(id->cert, sizeof(id->cert), "%s", fx_path(cert));
	if (strncmp(key, "tpm:", 4) == 0)
		snprintf(id->key, sizeof(id->key), "%s", key);
	else
		snprintf(id->key, sizeof(id->key), "%s", fx_path(key));
	if (ca != NULL)
		snprintf(id->ca, sizeof(id->ca), "%s", fx_path(ca));
	if (crl != NULL)
		snprintf(id->crl, sizeof(id->crl), "%s", fx_path(crl));
	if (passfile != NULL)
		snprintf(id->key_passphrase_file, sizeof(id->key_passphrase_file), "%s",
		    fx_path(passfile));
}

static struct keyd_key *
load_ok(const char *cert, const char *key, const char *ca, const char *crl,
    const char *passfile)
{
	struct config_identity id;
	struct keyd_key *k = NULL;
	char err[KEYSTORE_ERR_MAX] = "";

	ident(&id, cert, key, ca, crl, passfile);
	if (keystore_load(&cfg, &id, 7, &k, err, sizeof(err)) != 0)
		fail_msg("load %s + %s: %s", cert, key, err);
	assert_non_null(k);
	assert_int_equal(k->generation, 7);
	assert_int_equal(ERR_peek_error(), 0);
	return k;
}

/* The load fails, *out stays NULL, and the message contains every fragment given. */
static void
load_fails(const char *cert, const char *key, const char *ca, const char *crl,
    const char *passfile, const char *frag1, const char *frag2)
{
	struct config_identity id;
	struct keyd_key *k = (struct keyd_key *)&id;  /* must be reset to NULL */
	char err[KEYSTORE_ERR_MAX] = "";

	ident(&id, cert, key, ca, crl, passfile);
	assert_int_equal(keystore_load(&cfg, &id, 1, &k, err, sizeof(err)), -1);
	assert_null(k);
	if (getenv("TEST_VERBOSE") != NULL)
		fprintf(stderr, "    refused: %s\n", err);
	if (strstr(err, frag1) == NULL || (frag2 != NULL && strstr(err, frag2) == NULL))
		fail_msg("expected \"%s\"%s%s%s in: %s", frag1, frag2 ? " and \"" : "",
		    frag2 ? frag2 : "", frag2 ? "\"" : "", err);
	assert_int_equal(ERR_peek_error(), 0);
}

static void
expect_key_id(const struct keyd_key *k, EVP_PKEY *pub)
{
	unsigned char *der = NULL, md[32];
	unsigned mdlen = 0;
	int len = i2d_PUBKEY(pub, &der);
	uint8_t id2[IPC_KEY_ID_LEN];

	assert_true(len > 0);
	assert_true(EVP_Digest(der, (size_t)len, md, &mdlen, EVP_sha256(), NULL));
	OPENSSL_free(der);
	assert_memory_equal(k->key_id, md, 32);
	assert_int_equal(keyid_of_cert(k->leaf, id2), 0);
	assert_memory_equal(id2, md, 32);
}

static void
expect_meta(const struct keyd_key *k, X509 *leaf, const char *serial, const char *subject)
{
	unsigned char md[32];
	unsigned mdlen = 0;
	char fp[96];

	assert_string_equal(k->serial, serial);
	assert_string_equal(k->subject, subject);
	assert_true(X509_digest(leaf, EVP_sha256(), md, &mdlen));
	for (unsigned i = 0; i < 32; i++)
		snprintf(fp + 3 * i, sizeof(fp) - 3 * i, i < 31 ? "%02X:" : "%02X", md[i]);
	assert_string_equal(k->fingerprint, fp);
	assert_int_equal(strlen(k->fingerprint), 95);
	for (size_t i = 0; i < 95; i++)
		assert_true(i % 3 == 2 ? k->fingerprint[i] == ':' :
		    strchr("0123456789ABCDEF", k->fingerprint[i]) != NULL);
	assert_int_equal(X509_cmp(k->leaf, leaf), 0);
	assert_true(k->not_before < time(NULL) && k->not_after > time(NULL));
	assert_true(k->not_after - k->not_before > 365 * DAY);
	assert_true(k->not_after - k->not_before < 367 * DAY);
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/* ---- loading ------------------------------------------------------------------------- */

static void
test_load_p256(void **state)
{
	struct keyd_key *k = load_ok("p256.crt", "p256.key", "ca.pem", NULL, NULL);
	size_t calen;
	char *ca = read_text("ca.pem", &calen);

	assert_int_equal(k->type, IPC_KEY_EC_P256);
	assert_int_equal(k->bits, 256);
	expect_key_id(k, fx.k_p256);
	expect_meta(k, fx.c_p256, "1001", "CN=leaf-p256,O=redoubt test");
	assert_int_equal(count(k->chain_pem, "-----BEGIN CERTIFICATE-----"), 1);
	assert_int_equal(strlen(k->chain_pem), k->chain_len);
	assert_non_null(k->ca_pem);
	assert_int_equal(k->ca_len, calen);
	assert_memory_equal(k->ca_pem, ca, calen);
	assert_null(k->crl_pem);
	assert_int_equal(k->crl_len, 0);
	free(ca);
	keystore_free(k);
}

static void
test_load_p384_intermediate(void **state)
{
	struct keyd_key *k = load_ok("p384.crt", "p384.key", "ca.pem", NULL, NULL);
	BIO *b;
	X509 *x;

	assert_int_equal(k->type, IPC_KEY_EC_P384);
	assert_int_equal(k->bits, 384);
	expect_key_id(k, fx.k_p384);
	expect_meta(k, fx.c_p384, "1002", "CN=leaf-p384,O=redoubt test");
	/* Leaf first, then the intermediate. */
	assert_int_equal(count(k->chain_pem, "-----BEGIN CERTIFICATE-----"), 2);
	b = BIO_new_mem_buf(k->chain_pem, (int)k->chain_len);
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	assert_int_equal(X509_cmp(x, fx.c_p384), 0);
	X509_free(x);
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	assert_int_equal(X509_cmp(x, fx.inter), 0);
	X509_free(x);
	BIO_free(b);
	keystore_free(k);

	/* Without a CA the chain is not checked, so a missing intermediate loads. */
	k = load_ok("p384-nochain.crt", "p384.key", NULL, NULL, NULL);
	assert_null(k->ca_pem);
	keystore_free(k);
}

static void
test_load_rsa(void **state)
{
	struct keyd_key *k = load_ok("rsa.crt", "rsa.key", "ca.pem", "ca.crl", NULL);

	assert_int_equal(k->type, IPC_KEY_RSA);
	assert_int_equal(k->bits, 2048);
	expect_key_id(k, fx.k_rsa);
	expect_meta(k, fx.c_rsa, "ABCDEF01", "CN=leaf-rsa,O=redoubt test");
	assert_non_null(k->crl_pem);
	assert_non_null(strstr(k->crl_pem, "-----BEGIN X509 CRL-----"));
	assert_int_equal(strlen(k->crl_pem), k->crl_len);
	keystore_free(k);
}

static void
test_load_bundle_keeps_key_out_of_chain(void **state)
{
	struct keyd_key *k = load_ok("bundle.pem", "bundle.pem", "ca.pem", NULL, NULL);

	assert_int_equal(count(k->chain_pem, "-----BEGIN CERTIFICATE-----"), 1);
	assert_null(strstr(k->chain_pem, "PRIVATE KEY"));
	keystore_free(k);
}

static void
test_load_with_secure_heap(void **state)
{
	size_t before = CRYPTO_secure_used();
	struct keyd_key *k;

	if (!CRYPTO_secure_malloc_initialized())
		skip();
	/* The private scalar / factors go to the secure heap, and come back on free. */
	k = load_ok("p256.crt", "p256.key", NULL, NULL, NULL);
	assert_true(CRYPTO_secure_used() > before);
	keystore_free(k);
	k = load_ok("rsa.crt", "rsa.key", NULL, NULL, NULL);
	assert_true(CRYPTO_secure_used() > before);
	keystore_free(k);
	assert_int_equal(CRYPTO_secure_used(), before);
}

static void
test_passphrase(void **state)
{
	struct keyd_key *k;

	unsetenv(KEYSTORE_PASSPHRASE_ENV);
	k = load_ok("p256.crt", "p256-enc.key", "ca.pem", NULL, "pass.txt");
	expect_key_id(k, fx.k_p256);
	keystore_free(k);
	k = load_ok("p256.crt", "p256-enc.key", "ca.pem", NULL, "pass-crlf.txt");
	keystore_free(k);

	assert_int_equal(setenv(KEYSTORE_PASSPHRASE_ENV, PASSPHRASE, 1), 0);
	k = load_ok("p256.crt", "p256-enc.key", "ca.pem", NULL, NULL);
	expect_key_id(k, fx.k_p256);
	keystore_free(k);
	/* The file wins over the environment. */
	load_fails("p256.crt", "p256-enc.key", NULL, NULL, "wrong-pass.txt",
	    fx_path("p256-enc.key"), ": wrong passphrase or corrupt key");
	/* An unencrypted key ignores the passphrase. */
	k = load_ok("p256.crt", "p256.key", NULL, NULL, NULL);
	keystore_free(k);

	assert_int_equal(setenv(KEYSTORE_PASSPHRASE_ENV, "not it", 1), 0);
	load_fails("p256.crt", "p256-enc.key", NULL, NULL, NULL, "wrong passphrase or corrupt key",
	    NULL);
	{
		char longpass[4096];

		memset(longpass, 'x', sizeof(longpass) - 1);
		longpass[sizeof(longpass) - 1] = '\0';
		assert_int_equal(setenv(KEYSTORE_PASSPHRASE_ENV, longpass, 1), 0);
		load_fails("p256.crt", "p256-enc.key", NULL, NULL, NULL,
		    "passphrase is longer than OpenSSL accepts", NULL);
	}
	unsetenv(KEYSTORE_PASSPHRASE_ENV);

	load_fails("p256.crt", "p256-enc.key", NULL, NULL, NULL, "key-passphrase-file",
	    KEYSTORE_PASSPHRASE_ENV);
	load_fails("p256.crt", "p256-enc.key", NULL, NULL, "empty-pass.txt", "empty-pass.txt",
	    "first line is empty");
	load_fails("p256.crt", "p256-enc.key", NULL, NULL, "no-such-pass.txt", "no-such-pass.txt",
	    "cannot open");
}

static void
test_refusals(void **state)
{
	load_fails("expired.crt", "p256.key", NULL, NULL, NULL, fx_path("expired.crt"),
	    "has expired: valid until 20");
	load_fails("future.crt", "p256.key", NULL, NULL, NULL, fx_path("future.crt"),
	    "is not yet valid: valid from 20");
	load_fails("foreign.crt", "p256.key", "ca.pem", NULL, NULL,
	    "does not verify against CA file", "unable to get local issuer certificate");
	/* The intermediate is needed: the CA file holds only the root. */
	load_fails("p384-nochain.crt", "p384.key", "ca.pem", NULL, NULL,
	    fx_path("p384-nochain.crt"), "unable to get local issuer certificate");
	load_fails("p256.crt", "other-p256.key", NULL, NULL, NULL, "does not match certificate",
	    fx_path("p256.crt"));
	load_fails("rsa.crt", "p256.key", NULL, NULL, NULL, fx_path("p256.key"),
	    "does not match certificate");
	load_fails("revoked.crt", "p256.key", "ca.pem", "ca.crl", NULL, "certificate revoked",
	    fx_path("ca.crl"));
	/* Without the CRL the same certificate passes. */
	keystore_free(load_ok("revoked.crt", "p256.key", "ca.pem", NULL, NULL));

	load_fails("truncated-chain.crt", "p384.key", NULL, NULL, NULL,
	    fx_path("truncated-chain.crt"), "certificate 2 does not parse");
	load_fails("truncated-leaf.crt", "p256.key", NULL, NULL, NULL,
	    fx_path("truncated-leaf.crt"), "certificate 1 does not parse");
	load_fails("empty.crt", "p256.key", NULL, NULL, NULL, fx_path("empty.crt"),
	    "no PEM certificate");
	load_fails("p256.crt", "truncated.key", NULL, NULL, NULL, fx_path("truncated.key"),
	    "no private key found");
	load_fails("p256.crt", "p256.crt", NULL, NULL, NULL, "no private key found", NULL);
	load_fails("p256.crt", "missing.key", NULL, NULL, NULL, fx_path("missing.key"),
	    "cannot open");
	load_fails("missing.crt", "p256.key", NULL, NULL, NULL, fx_path("missing.crt"),
	    "cannot open");
	load_fails("p256.crt", "p256.key", "missing-ca.pem", NULL, NULL,
	    fx_path("missing-ca.pem"), "cannot open");
	load_fails("p256.crt", "p256.key", "p256.key", NULL, NULL, "CA file", "no PEM certificate");
	load_fails("p256.crt", "p256.key", "ca.pem", "ca.pem", NULL, fx_path("ca.pem"),
	    "no PEM CRL");
}

static void
test_key_types(void **state)
{
	load_fails("rsa1024.crt", "rsa1024.key", NULL, NULL, NULL, fx_path("rsa1024.key"),
	    "RSA key of 1024 bits is not supported");
	load_fails("ed25519.crt", "ed25519.key", NULL, NULL, NULL, fx_path("ed25519.key"),
	    "key type ED25519 is not supported");
	load_fails("p521.crt", "p521.key", NULL, NULL, NULL, "secp521r1", "not supported");
	load_fails("p256.crt", "tpm:/etc/redoubt/node.tpmkey", NULL, NULL, NULL,
	    "TPM key blob /etc/redoubt/node.tpmkey", "cannot open");
	load_fails("p256.crt", "tpm:/dev/null", NULL, NULL, NULL, "TPM key blob /dev/null",
	    "not a regular file");
	load_fails("p256.crt", "/", NULL, NULL, NULL, "not a regular file", NULL);
}

/* ---- signing ------------------------------------------------------------------------- */

static size_t
mk13(uint8_t *b, size_t hashlen)
{
	memset(b, 0x20, 64);
	memcpy(b + 64, "TLS 1.3, server CertificateVerify", 34);
	for (size_t i = 0; i < hashlen; i++)
		b[98 + i] = (uint8_t)(i * 13);
	return 98 + hashlen;
}

/*
 * Verifies with the leaf's public key (not the key store's object), with the padding spelt
 * out: PSS with salt length = digest length and MGF1 = the signature digest.  saltlen < 0:
 * the digest length.
 */
static int
verify(X509 *leaf, uint16_t sigalg, const uint8_t *tbs, size_t tbslen, const uint8_t *sig,
    size_t siglen, int saltlen)
{
	EVP_PKEY *pub = X509_get0_pubkey(leaf);
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *p = NULL;
	const char *md = sign_sigalg_digest(sigalg);
	int ok;

	assert_non_null(md);
	assert_true(EVP_DigestVerifyInit_ex(m, &p, md, NULL, NULL, pub, NULL) == 1);
	if (sign_sigalg_is_pss(sigalg)) {
		if (saltlen < 0)
			saltlen = EVP_MD_get_size(EVP_MD_CTX_get0_md(m));
		assert_true(EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PSS_PADDING) > 0);
		assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(p, saltlen) > 0);
		assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md_name(p, md, NULL) > 0);
	} else if (EVP_PKEY_is_a(pub, "RSA")) {
		assert_true(EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PADDING) > 0);
	}
	ok = EVP_DigestVerify(m, sig, siglen, tbs, tbslen) == 1;
	EVP_MD_CTX_free(m);
	ERR_clear_error();
	return ok;
}

static void
sign_roundtrip(struct keyd_key *k, X509 *leaf, uint16_t sigalg, const uint8_t *tbs,
    size_t tbslen)
{
	uint8_t sig[IPC_SIG_MAX];
	size_t siglen = 0;

	assert_int_equal(keystore_sign(k, sigalg, tbs, tbslen, sig, sizeof(sig), &siglen), 0);
	assert_true(siglen > 0 && siglen <= (size_t)EVP_PKEY_get_size(k->pkey));
	assert_true(verify(leaf, sigalg, tbs, tbslen, sig, siglen, -1));
	/* Tampered input or signature does not verify. */
	sig[siglen / 2] ^= 0x01;
	assert_false(verify(leaf, sigalg, tbs, tbslen, sig, siglen, -1));
	sig[siglen / 2] ^= 0x01;
	if (sign_sigalg_is_pss(sigalg)) {
		/* The salt is exactly the digest length: other fixed lengths do not verify. */
		const int dl = strcmp(sign_sigalg_digest(sigalg), "SHA256") == 0 ? 32 :
		    strcmp(sign_sigalg_digest(sigalg), "SHA384") == 0 ? 48 : 64;
		assert_true(verify(leaf, sigalg, tbs, tbslen, sig, siglen, dl));
		assert_false(verify(leaf, sigalg, tbs, tbslen, sig, siglen, 20));
		assert_false(verify(leaf, sigalg, tbs, tbslen, sig, siglen, dl + 1));
		assert_false(verify(leaf, sigalg, tbs, tbslen, sig, siglen, 0));
	}
}

static void
test_sign_ec(void **state)
{
	uint8_t tbs[IPC_TBS_MAX];
	struct keyd_key *k;

	uint8_t s1[IPC_SIG_MAX], s2[IPC_SIG_MAX];
	size_t l1 = 0, l2 = 0, len;

	k = load_ok("p256.crt", "p256.key", NULL, NULL, NULL);
	for (size_t h = 32; h <= 48; h += 16)
		sign_roundtrip(k, fx.c_p256, TLS_SIGALG_ECDSA_P256_SHA256, tbs, mk13(tbs, h));
	/* The context kept with the key signs again, with a fresh nonce each time. */
	len = mk13(tbs, 32);
	assert_int_equal(keystore_sign(k, TLS_SIGALG_ECDSA_P256_SHA256, tbs, len, s1,
	    sizeof(s1), &l1), 0);
	assert_int_equal(keystore_sign(k, TLS_SIGALG_ECDSA_P256_SHA256, tbs, len, s2,
	    sizeof(s2), &l2), 0);
	assert_true(verify(fx.c_p256, TLS_SIGALG_ECDSA_P256_SHA256, tbs, len, s1, l1, -1));
	assert_true(verify(fx.c_p256, TLS_SIGALG_ECDSA_P256_SHA256, tbs, len, s2, l2, -1));
	assert_false(l1 == l2 && memcmp(s1, s2, l1) == 0);
	keystore_free(k);
	k = load_ok("p384.crt", "p384.key", NULL, NULL, NULL);
	for (size_t h = 32; h <= 48; h += 16)
		sign_roundtrip(k, fx.c_p384, TLS_SIGALG_ECDSA_P384_SHA384, tbs, mk13(tbs, h));
	keystore_free(k);
}

static void
test_sign_rsa(void **state)
{
	static const uint16_t algs[] = { TLS_SIGALG_RSA_PSS_SHA256, TLS_SIGALG_RSA_PSS_SHA384,
		TLS_SIGALG_RSA_PSS_SHA512, TLS_SIGALG_RSA_PKCS1_SHA256, TLS_SIGALG_RSA_PKCS1_SHA384,
		TLS_SIGALG_RSA_PKCS1_SHA512 };
	uint8_t tbs[IPC_TBS_MAX];
	struct keyd_key *k = load_ok("rsa.crt", "rsa.key", NULL, NULL, NULL);

	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		for (size_t h = 32; h <= 48; h += 16)
			sign_roundtrip(k, fx.c_rsa, algs[i], tbs, mk13(tbs, h));
	/* A TLS 1.2 SKE-shaped input, as PKCS#1 would sign it. */
	memset(tbs, 0x42, 133);
	tbs[64] = 3, tbs[65] = 0, tbs[66] = 0x17, tbs[67] = 65, tbs[68] = 4;
	sign_roundtrip(k, fx.c_rsa, TLS_SIGALG_RSA_PKCS1_SHA256, tbs, 133);
	keystore_free(k);
}

static void
test_sign_refusals(void **state)
{
	uint8_t tbs[IPC_TBS_MAX], sig[IPC_SIG_MAX];
	size_t siglen = 99, len = mk13(tbs, 32);
	struct keyd_key *ec = load_ok("p256.crt", "p256.key", NULL, NULL, NULL);
	struct keyd_key *rsa = load_ok("rsa.crt", "rsa.key", NULL, NULL, NULL);

	/* Sigalg that does not fit the key, unknown sigalgs. */
	assert_int_equal(keystore_sign(ec, TLS_SIGALG_ECDSA_P384_SHA384, tbs, len, sig,
	    sizeof(sig), &siglen), -1);
	assert_int_equal(siglen, 0);
	assert_int_equal(keystore_sign(ec, TLS_SIGALG_RSA_PSS_SHA256, tbs, len, sig, sizeof(sig),
	    &siglen), -1);
	assert_int_equal(keystore_sign(rsa, TLS_SIGALG_ECDSA_P256_SHA256, tbs, len, sig,
	    sizeof(sig), &siglen), -1);
	assert_int_equal(keystore_sign(rsa, 0x0807, tbs, len, sig, sizeof(sig), &siglen), -1);
	assert_int_equal(keystore_sign(rsa, 0x0809, tbs, len, sig, sizeof(sig), &siglen), -1);
	/* Output smaller than the key's signature size. */
	assert_int_equal(keystore_sign(rsa, TLS_SIGALG_RSA_PSS_SHA256, tbs, len, sig, 255,
	    &siglen), -1);
	assert_int_equal(keystore_sign(ec, TLS_SIGALG_ECDSA_P256_SHA256, tbs, len, sig,
	    (size_t)EVP_PKEY_get_size(ec->pkey) - 1, &siglen), -1);
	assert_int_equal(keystore_sign(rsa, TLS_SIGALG_RSA_PSS_SHA256, tbs, len, sig, 256,
	    &siglen), 0);
	assert_int_equal(siglen, 256);
	/* Missing pieces. */
	assert_int_equal(keystore_sign(NULL, TLS_SIGALG_RSA_PSS_SHA256, tbs, len, sig,
	    sizeof(sig), &siglen), -1);
	assert_int_equal(keystore_sign(rsa, TLS_SIGALG_RSA_PSS_SHA256, NULL, len, sig,
	    sizeof(sig), &siglen), -1);
	assert_int_equal(keystore_sign(rsa, TLS_SIGALG_RSA_PSS_SHA256, tbs, 0, sig, sizeof(sig),
	    &siglen), -1);
	assert_int_equal(keystore_sign(rsa, TLS_SIGALG_RSA_PSS_SHA256, tbs, len, NULL,
	    sizeof(sig), &siglen), -1);
	assert_int_equal(ERR_peek_error(), 0);
	keystore_free(ec);
	keystore_free(rsa);
	keystore_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_p256),
		cmocka_unit_test(test_load_p384_intermediate),
		cmocka_unit_test(test_load_rsa),
		cmocka_unit_test(test_load_bundle_keeps_key_out_of_chain),
		cmocka_unit_test(test_load_with_secure_heap),
		cmocka_unit_test(test_passphrase),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_key_types),
		cmocka_unit_test(test_sign_ec),
		cmocka_unit_test(test_sign_rsa),
		cmocka_unit_test(test_sign_refusals),
	};
	int rc;

	/* keyd does this at start-up (cfg->secure_heap); 2 = works, but mlock() was refused. */
	if (CRYPTO_secure_malloc_init(KEYD_SECURE_HEAP_DEFAULT, KEYD_SECURE_HEAP_MINSIZE) == 0)
		fprintf(stderr, "test_keystore: no secure heap; the secure-heap test is skipped\n");
	log_init("test_keystore", LOG_LVL_WARN);
	memset(&cfg, 0, sizeof(cfg));
	cfg.secure_heap = KEYD_SECURE_HEAP_DEFAULT;
	rc = cmocka_run_group_tests(tests, fx_setup, fx_teardown);
	CRYPTO_secure_malloc_done();
	return rc;
}
