/*
 * TPM key blobs (keyd/tpm.c), without a TPM: a blob written from a public area made of a
 * software key reads back with the same public key; corrupt, truncated, foreign, restricted or
 * decrypt-only blobs are refused with a reason.  (Signing with a TPM: tests/system/test_tpm.py.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "keyd/tpm.h"

static char dir[] = "/tmp/redoubt-tpmblob-XXXXXX";

static const char *
path_of(const char *name)
{
	static char p[256];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return p;
}

/* A signing key's public area from a software EC key (what TPM2_Create would return). */
static EVP_PKEY *
ec_public_area(const char *curve, TPMI_ECC_CURVE id, size_t flen, TPM2B_PUBLIC *pub)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
	uint8_t pt[1 + 2 * 48];
	size_t len = 0;

	assert_non_null(k);
	assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt,
	    sizeof(pt), &len), 1);
	assert_int_equal(len, 1 + 2 * flen);
	memset(pub, 0, sizeof(*pub));
	pub->publicArea.type = TPM2_ALG_ECC;
	pub->publicArea.nameAlg = TPM2_ALG_SHA256;
	pub->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
	    TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT;
	pub->publicArea.parameters.eccDetail.curveID = id;
	pub->publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
	pub->publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
	pub->publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	pub->publicArea.unique.ecc.x.size = (UINT16)flen;
	memcpy(pub->publicArea.unique.ecc.x.buffer, pt + 1, flen);
	pub->publicArea.unique.ecc.y.size = (UINT16)flen;
	memcpy(pub->publicArea.unique.ecc.y.buffer, pt + 1 + flen, flen);
	return k;
}

static void
fake_private(TPM2B_PRIVATE *priv)
{
	memset(priv, 0, sizeof(*priv));
	priv->size = 126;
	memset(priv->buffer, 0xa5, priv->size);
}

static void
read_fails(const char *file, const char *frag)
{
	struct tpm_key *k = (struct tpm_key *)dir;
	EVP_PKEY *pub = (EVP_PKEY *)dir;
	char err[TPM_ERR_MAX] = "";

	assert_int_equal(tpm_key_read(path_of(file), &k, &pub, err, sizeof(err)), -1);
	assert_null(k);
	assert_null(pub);
	if (strstr(err, frag) == NULL)
		fail_msg("expected \"%s\" in: %s", frag, err);
}

static void
test_roundtrip(void **state)
{
	static const struct { const char *curve; TPMI_ECC_CURVE id; size_t flen; } c[] = {
		{ "P-256", TPM2_ECC_NIST_P256, 32 }, { "P-384", TPM2_ECC_NIST_P384, 48 },
	};
	char err[TPM_ERR_MAX];

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		TPM2B_PUBLIC pub;
		TPM2B_PRIVATE priv;
		struct tpm_key *k = NULL;
		EVP_PKEY *orig = ec_public_area(c[i].curve, c[i].id, c[i].flen, &pub), *got = NULL;

		fake_private(&priv);
		assert_int_equal(tpm_blob_write(path_of("k.tpmkey"), &pub, &priv, err, sizeof(err)),
		    0);
		assert_int_equal(tpm_key_read(path_of("k.tpmkey"), &k, &got, err, sizeof(err)), 0);
		assert_int_equal(EVP_PKEY_eq(orig, got), 1);
		assert_int_equal(EVP_PKEY_get_bits(got), (int)c[i].flen * 8);
		tpm_key_unref(k);
		EVP_PKEY_free(got);
		EVP_PKEY_free(orig);
	}
}

static void
write_file(const char *name, const char *text)
{
	FILE *f = fopen(path_of(name), "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_refusals(void **state)
{
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;
	EVP_PKEY *orig;
	char err[TPM_ERR_MAX];
	FILE *f;

	read_fails("missing.tpmkey", "cannot open");
	write_file("empty.tpmkey", "");
	read_fails("empty.tpmkey", "BEGIN REDOUBT TPM2 KEY");
	/* Another PEM type (a software private key must not be mistaken for a blob). */
	orig = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	f = fopen(path_of("pem.key"), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, orig, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	EVP_PKEY_free(orig);
	read_fails("pem.key", "BEGIN REDOUBT TPM2 KEY");
	/* Right PEM type, bytes that are not a public + private pair. */
	write_file("junk.tpmkey", "-----BEGIN REDOUBT TPM2 KEY-----\nAAECAwQFBgcICQ==\n"
	    "-----END REDOUBT TPM2 KEY-----\n");
	read_fails("junk.tpmkey", "corrupt");

	orig = ec_public_area("P-256", TPM2_ECC_NIST_P256, 32, &pub);
	fake_private(&priv);
	/* A restricted key (a storage or attestation key) is not a TLS signing key. */
	pub.publicArea.objectAttributes |= TPMA_OBJECT_RESTRICTED;
	assert_int_equal(tpm_blob_write(path_of("r.tpmkey"), &pub, &priv, err, sizeof(err)), 0);
	read_fails("r.tpmkey", "not an unrestricted signing key");
	/* A decrypt-only key. */
	pub.publicArea.objectAttributes &= ~(TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT);
	pub.publicArea.objectAttributes |= TPMA_OBJECT_DECRYPT;
	assert_int_equal(tpm_blob_write(path_of("d.tpmkey"), &pub, &priv, err, sizeof(err)), 0);
	read_fails("d.tpmkey", "not an unrestricted signing key");
	/* An unsupported curve. */
	pub.publicArea.objectAttributes |= TPMA_OBJECT_SIGN_ENCRYPT;
	pub.publicArea.parameters.eccDetail.curveID = TPM2_ECC_BN_P256;
	assert_int_equal(tpm_blob_write(path_of("c.tpmkey"), &pub, &priv, err, sizeof(err)), 0);
	read_fails("c.tpmkey", "not an ECC P-256/P-384 or RSA key");
	EVP_PKEY_free(orig);
}

static int
setup(void **state)
{
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	static const char *const files[] = { "k.tpmkey", "empty.tpmkey", "pem.key",
	    "junk.tpmkey", "r.tpmkey", "d.tpmkey", "c.tpmkey" };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(path_of(files[i]));
	return rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
