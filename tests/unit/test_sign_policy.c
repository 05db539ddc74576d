/*
 * keyd's signing policy (keyd/sign_policy.c): every permitted TLS handshake input is accepted
 * and every near miss is refused with its own reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keyd/sign_policy.h"

#define TLS13_CTX_LEN 34
#define TBS_BUF       (IPC_TBS_MAX + 8)

static const char server_ctx[TLS13_CTX_LEN] = "TLS 1.3, server CertificateVerify";
static const char client_ctx[TLS13_CTX_LEN] = "TLS 1.3, client CertificateVerify";
static const uint8_t sentinel[8] = { 'D', 'O', 'W', 'N', 'G', 'R', 'D', 0x01 };

struct key_case {
	enum ipc_key_type kt;
	unsigned bits;
};

static const struct key_case keys[] = {
	{ IPC_KEY_EC_P256, 256 }, { IPC_KEY_EC_P384, 384 },
	{ IPC_KEY_RSA, 2048 }, { IPC_KEY_RSA, 3072 }, { IPC_KEY_RSA, 4096 },
};

/* The sigalgs permitted for TLS 1.3 input with each key type. */
static const uint16_t sigalgs_p256[] = { TLS_SIGALG_ECDSA_P256_SHA256 };
static const uint16_t sigalgs_p384[] = { TLS_SIGALG_ECDSA_P384_SHA384 };
static const uint16_t sigalgs_rsa13[] = { TLS_SIGALG_RSA_PSS_SHA256, TLS_SIGALG_RSA_PSS_SHA384,
	TLS_SIGALG_RSA_PSS_SHA512 };
static const uint16_t sigalgs_pkcs1[] = { TLS_SIGALG_RSA_PKCS1_SHA256,
	TLS_SIGALG_RSA_PKCS1_SHA384, TLS_SIGALG_RSA_PKCS1_SHA512 };

static const struct sign_policy pol_13 = { .tls12 = 0 };
static const struct sign_policy pol_12 = { .tls12 = 1 };

static uint16_t
first_sigalg(enum ipc_key_type kt)
{
	return kt == IPC_KEY_EC_P256 ? TLS_SIGALG_ECDSA_P256_SHA256 :
	    kt == IPC_KEY_EC_P384 ? TLS_SIGALG_ECDSA_P384_SHA384 : TLS_SIGALG_RSA_PSS_SHA256;
}

/* 64 x 0x20 || ctx (34 bytes incl. NUL) || hash; returns the length. */
static size_t
mk13(uint8_t *b, const char *ctx, size_t hashlen)
{
	memset(b, 0x20, 64);
	memcpy(b + 64, ctx, TLS13_CTX_LEN);
	for (size_t i = 0; i < hashlen; i++)
		b[98 + i] = (uint8_t)(0xA5 ^ i);
	return 98 + hashlen;
}

/* client_random || server_random || 03 || group || n || point; returns the length. */
static size_t
mkske(uint8_t *b, uint16_t group, size_t n, int downgrd)
{
	for (size_t i = 0; i < 64; i++)
		b[i] = (uint8_t)(i * 7 + 1);
	if (downgrd)
		memcpy(b + 56, sentinel, sizeof(sentinel));
	b[64] = 0x03;
	b[65] = (uint8_t)(group >> 8);
	b[66] = (uint8_t)group;
	b[67] = (uint8_t)n;
	for (size_t i = 0; i < n; i++)
		b[68 + i] = (uint8_t)(0x3C + i);
	if (group != TLS_GROUP_X25519)
		b[68] = 0x04;
	return 68 + n;
}

static int
check(const struct sign_policy *p, enum ipc_key_type kt, unsigned bits, uint16_t sigalg,
    const uint8_t *tbs, size_t len)
{
	return sign_policy_check(p, kt, bits, sigalg, tbs, len);
}

/* ---- TLS 1.3 ------------------------------------------------------------------------- */

static void
test_tls13_server_accepted(void **state)
{
	uint8_t b[TBS_BUF];
	static const size_t hashes[] = { 32, 48 };
	const struct sign_policy *pols[] = { &pol_13, &pol_12 };

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		const uint16_t *algs;
		size_t nalgs;

		if (keys[k].kt == IPC_KEY_EC_P256) {
			algs = sigalgs_p256;
			nalgs = 1;
		} else if (keys[k].kt == IPC_KEY_EC_P384) {
			algs = sigalgs_p384;
			nalgs = 1;
		} else {
			algs = sigalgs_rsa13;
			nalgs = 3;
		}
		for (size_t a = 0; a < nalgs; a++)
			for (size_t h = 0; h < 2; h++)
				for (size_t p = 0; p < 2; p++) {
					size_t len = mk13(b, server_ctx, hashes[h]);
					assert_int_equal(check(pols[p], keys[k].kt, keys[k].bits,
					    algs[a], b, len), SIGN_OK);
				}
	}
}

static void
test_tls13_client_context(void **state)
{
	uint8_t b[TBS_BUF];
	struct sign_policy client = { .client_role = 1 };

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		uint16_t alg = first_sigalg(keys[k].kt);
		for (size_t h = 32; h <= 48; h += 16) {
			size_t len = mk13(b, client_ctx, h);
			assert_int_equal(check(&pol_13, keys[k].kt, keys[k].bits, alg, b, len),
			    SIGN_BAD_CONTEXT);
			assert_int_equal(check(&client, keys[k].kt, keys[k].bits, alg, b, len),
			    SIGN_OK);
			/* A client-role key still signs server CertificateVerify. */
			len = mk13(b, server_ctx, h);
			assert_int_equal(check(&client, keys[k].kt, keys[k].bits, alg, b, len),
			    SIGN_OK);
		}
	}
}

static void
test_tls13_context_near_misses(void **state)
{
	uint8_t b[TBS_BUF];
	struct sign_policy client = { .client_role = 1 };
	size_t len;

	/* Every byte of the context, NUL included, is compared. */
	for (size_t i = 0; i < TLS13_CTX_LEN; i++)
		for (size_t h = 32; h <= 48; h += 16) {
			len = mk13(b, server_ctx, h);
			b[64 + i] ^= 0x01;
			assert_int_equal(check(&client, IPC_KEY_EC_P256, 256,
			    TLS_SIGALG_ECDSA_P256_SHA256, b, len), SIGN_BAD_CONTEXT);
			b[64 + i] = 0x00;
			if (i != TLS13_CTX_LEN - 1)
				assert_int_equal(check(&client, IPC_KEY_EC_P256, 256,
				    TLS_SIGALG_ECDSA_P256_SHA256, b, len), SIGN_BAD_CONTEXT);
		}
	/* "Server" capitalised, TLS 1.2-ish wording. */
	len = mk13(b, server_ctx, 32);
	b[64 + 9] = 'S';
	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_BAD_CONTEXT);
	len = mk13(b, server_ctx, 32);
	memcpy(b + 64, "TLS 1.2", 7);
	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_BAD_CONTEXT);

	/* Missing NUL: the context is 33 bytes, the hash follows at once. */
	memset(b, 0x20, 64);
	memcpy(b + 64, server_ctx, 33);
	memset(b + 97, 0x5A, 33);
	assert_int_equal(check(&pol_13, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
	    130), SIGN_BAD_CONTEXT);
	assert_int_equal(check(&pol_13, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
	    129), SIGN_BAD_LENGTH);
	/* An extra byte before the hash (context with two NULs). */
	len = mk13(b, server_ctx, 32);
	memmove(b + 99, b + 98, 32);
	b[98] = 0x00;
	assert_int_equal(check(&pol_13, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
	    len + 1), SIGN_BAD_LENGTH);
	/* Context at the wrong offset (63 spaces). */
	memset(b, 0x20, 63);
	memcpy(b + 63, server_ctx, TLS13_CTX_LEN);
	memset(b + 97, 0x11, 33);
	assert_int_equal(check(&pol_13, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
	    130), SIGN_BAD_PREFIX);
}

static void
test_tls13_prefix(void **state)
{
	uint8_t b[TBS_BUF];

	for (size_t i = 0; i < 64; i++)
		for (size_t h = 32; h <= 48; h += 16) {
			size_t len = mk13(b, server_ctx, h);
			b[i] = 0x21;
			assert_int_equal(check(&pol_12, IPC_KEY_EC_P384, 384,
			    TLS_SIGALG_ECDSA_P384_SHA384, b, len), SIGN_BAD_PREFIX);
			b[i] = 0x00;
			assert_int_equal(check(&pol_12, IPC_KEY_EC_P384, 384,
			    TLS_SIGALG_ECDSA_P384_SHA384, b, len), SIGN_BAD_PREFIX);
		}
}

static void
test_tls13_lengths(void **state)
{
	uint8_t b[TBS_BUF];
	static const size_t bad[] = { 129, 131, 145, 147, 98, 99, 162, 194 };
	struct sign_policy all = { .tls12 = 1, .client_role = 1 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(b, 0, sizeof(b));
		mk13(b, server_ctx, 48);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_int_equal(check(&all, keys[k].kt, keys[k].bits,
			    first_sigalg(keys[k].kt), b, bad[i]), SIGN_BAD_LENGTH);
	}
}

static void
test_bare_digests(void **state)
{
	uint8_t b[TBS_BUF];
	static const size_t lens[] = { 20, 32, 48, 64, 1 };
	struct sign_policy all = { .tls12 = 1, .client_role = 1 };

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (size_t j = 0; j < lens[i]; j++)
			b[j] = (uint8_t)(j * 31 + 3);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_int_equal(check(&all, keys[k].kt, keys[k].bits,
			    first_sigalg(keys[k].kt), b, lens[i]), SIGN_BAD_LENGTH);
		memset(b, 0x20, lens[i]);
		assert_int_equal(check(&all, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA256, b,
		    lens[i]), SIGN_BAD_LENGTH);
	}
	assert_int_equal(check(&all, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA256, b, 0),
	    SIGN_BAD_LENGTH);
	assert_int_equal(check(&all, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA256, NULL, 130),
	    SIGN_BAD_LENGTH);
}

static void
test_sigalg_binding(void **state)
{
	uint8_t b[TBS_BUF];
	size_t len = mk13(b, server_ctx, 32);
	struct sign_policy all = { .tls12 = 1 };

	assert_int_equal(check(&all, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P384_SHA384, b, len),
	    SIGN_BAD_SIGALG);
	assert_int_equal(check(&all, IPC_KEY_EC_P384, 384, TLS_SIGALG_ECDSA_P256_SHA256, b, len),
	    SIGN_BAD_SIGALG);
	assert_int_equal(check(&all, IPC_KEY_RSA, 2048, TLS_SIGALG_ECDSA_P256_SHA256, b, len),
	    SIGN_BAD_SIGALG);
	assert_int_equal(check(&all, IPC_KEY_RSA, 2048, TLS_SIGALG_ECDSA_P384_SHA384, b, len),
	    SIGN_BAD_SIGALG);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(check(&all, IPC_KEY_EC_P256, 256, sigalgs_rsa13[i], b, len),
		    SIGN_BAD_SIGALG);
		assert_int_equal(check(&all, IPC_KEY_EC_P384, 384, sigalgs_pkcs1[i], b, len),
		    SIGN_BAD_SIGALG);
		/* PKCS#1 v1.5 never signs TLS 1.3 input, at either hash length. */
		assert_int_equal(check(&all, IPC_KEY_RSA, 2048, sigalgs_pkcs1[i], b, len),
		    SIGN_BAD_SIGALG);
		len = mk13(b, server_ctx, 48);
		assert_int_equal(check(&all, IPC_KEY_RSA, 4096, sigalgs_pkcs1[i], b, len),
		    SIGN_BAD_SIGALG);
		len = mk13(b, server_ctx, 32);
	}
	/* Ed25519, Ed448, rsa_pss_pss_*, ecdsa_secp521r1, SHA-1 and SHA-224 schemes. */
	static const uint16_t unknown[] = { 0x0807, 0x0808, 0x0809, 0x080a, 0x080b, 0x0603,
		0x0201, 0x0203, 0x0303, 0x0301, 0x0000, 0xffff };
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_int_equal(check(&all, keys[k].kt, keys[k].bits, unknown[i], b, len),
			    SIGN_BAD_SIGALG);
}

static void
test_bad_keys(void **state)
{
	uint8_t b[TBS_BUF];
	size_t len = mk13(b, server_ctx, 32);

	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 1024, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 2047, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 4097, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 8192, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_EC_P256, 384, TLS_SIGALG_ECDSA_P256_SHA256, b,
	    len), SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_EC_P384, 256, TLS_SIGALG_ECDSA_P384_SHA384, b,
	    len), SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, (enum ipc_key_type)0, 256, TLS_SIGALG_ECDSA_P256_SHA256,
	    b, len), SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_TYPE_MAX, 2048, TLS_SIGALG_RSA_PSS_SHA256, b,
	    len), SIGN_BAD_KEY);
	assert_int_equal(check(&pol_13, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA256, b, len),
	    SIGN_OK);
}

/* ---- TLS 1.2 ServerKeyExchange ------------------------------------------------------- */

struct ske_group {
	uint16_t group;
	size_t n;
};

static const struct ske_group groups[] = {
	{ TLS_GROUP_SECP256R1, 65 }, { TLS_GROUP_SECP384R1, 97 }, { TLS_GROUP_X25519, 32 },
};

static void
test_ske_accepted(void **state)
{
	uint8_t b[TBS_BUF];
	struct sign_policy down = { .tls12 = 1, .require_downgrd = 1 };

	for (size_t g = 0; g < 3; g++) {
		size_t len = mkske(b, groups[g].group, groups[g].n, 0);
		assert_int_equal(len, 68 + groups[g].n);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_int_equal(check(&pol_12, keys[k].kt, keys[k].bits,
			    first_sigalg(keys[k].kt), b, len), SIGN_OK);
		for (size_t i = 0; i < 3; i++) {
			assert_int_equal(check(&pol_12, IPC_KEY_RSA, 2048, sigalgs_pkcs1[i], b,
			    len), SIGN_OK);
			assert_int_equal(check(&pol_12, IPC_KEY_RSA, 3072, sigalgs_rsa13[i], b,
			    len), SIGN_OK);
		}
		len = mkske(b, groups[g].group, groups[g].n, 1);
		assert_int_equal(check(&down, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256,
		    b, len), SIGN_OK);
		/* A client may pick 32 x 0x20 as its random: still an SKE, not 1.3 input. */
		memset(b, 0x20, 32);
		assert_int_equal(check(&down, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256,
		    b, len), SIGN_OK);
		memset(b, 0x20, 56);
		assert_int_equal(check(&down, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256,
		    b, len), SIGN_OK);
	}
}

static void
test_ske_disabled(void **state)
{
	uint8_t b[TBS_BUF];

	for (size_t g = 0; g < 3; g++) {
		size_t len = mkske(b, groups[g].group, groups[g].n, 1);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_int_equal(check(&pol_13, keys[k].kt, keys[k].bits,
			    first_sigalg(keys[k].kt), b, len), SIGN_NO_TLS12);
		assert_int_equal(check(&pol_13, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PKCS1_SHA256, b,
		    len), SIGN_NO_TLS12);
	}
}

static void
test_ske_downgrd(void **state)
{
	uint8_t b[TBS_BUF];
	struct sign_policy down = { .tls12 = 1, .require_downgrd = 1 };

	for (size_t g = 0; g < 3; g++) {
		size_t len = mkske(b, groups[g].group, groups[g].n, 0);
		assert_int_equal(check(&down, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256,
		    b, len), SIGN_NO_DOWNGRD);
		len = mkske(b, groups[g].group, groups[g].n, 1);
		assert_int_equal(check(&down, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PKCS1_SHA256, b,
		    len), SIGN_OK);
		/* The TLS 1.1-and-below sentinel (DOWNGRD\0) is not the TLS 1.2 one. */
		b[63] = 0x00;
		assert_int_equal(check(&down, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PKCS1_SHA256, b,
		    len), SIGN_NO_DOWNGRD);
		/* Each sentinel byte counts. */
		for (size_t i = 56; i < 64; i++) {
			len = mkske(b, groups[g].group, groups[g].n, 1);
			b[i] ^= 0x40;
			assert_int_equal(check(&down, IPC_KEY_EC_P256, 256,
			    TLS_SIGALG_ECDSA_P256_SHA256, b, len), SIGN_NO_DOWNGRD);
		}
		/* The sentinel in client_random does not count. */
		len = mkske(b, groups[g].group, groups[g].n, 0);
		memcpy(b + 24, sentinel, sizeof(sentinel));
		assert_int_equal(check(&down, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256,
		    b, len), SIGN_NO_DOWNGRD);
	}
}

static void
test_ske_fips(void **state)
{
	uint8_t b[TBS_BUF];
	struct sign_policy fips = { .tls12 = 1, .fips = 1 };
	size_t len;

	len = mkske(b, TLS_GROUP_X25519, 32, 1);
	assert_int_equal(check(&fips, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b, len),
	    SIGN_BAD_SKE);
	len = mkske(b, TLS_GROUP_SECP256R1, 65, 1);
	assert_int_equal(check(&fips, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b, len),
	    SIGN_OK);
	len = mkske(b, TLS_GROUP_SECP384R1, 97, 1);
	assert_int_equal(check(&fips, IPC_KEY_RSA, 2048, TLS_SIGALG_RSA_PSS_SHA384, b, len),
	    SIGN_OK);
}

static void
test_ske_near_misses(void **state)
{
	uint8_t b[TBS_BUF];
	size_t len;
	static const uint16_t other_groups[] = { 0x0019 /* secp521r1 */, 0x001e /* x448 */,
		0x0100 /* ffdhe2048 */, 0x0000, 0x1700, 0xff01 };

	for (size_t g = 0; g < 3; g++) {
		const uint16_t grp = groups[g].group;
		const size_t n = groups[g].n;

		/* Point length byte that does not fit the group (total length adjusted). */
		len = mkske(b, grp, n, 1);
		b[67] = (uint8_t)(n - 1);
		assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
		    TLS_SIGALG_ECDSA_P256_SHA256, b, len - 1), SIGN_BAD_SKE);
		b[67] = (uint8_t)(n + 1);
		assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
		    TLS_SIGALG_ECDSA_P256_SHA256, b, len + 1), SIGN_BAD_SKE);
		/* Curve type other than named_curve (explicit_prime 1, explicit_char2 2). */
		for (uint8_t ct = 0; ct < 8; ct++) {
			if (ct == 3)
				continue;
			len = mkske(b, grp, n, 1);
			b[64] = ct;
			assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
			    TLS_SIGALG_ECDSA_P256_SHA256, b, len), SIGN_BAD_SKE);
		}
		/* Trailing byte and one byte short. */
		len = mkske(b, grp, n, 1);
		b[len] = 0;
		assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
		    TLS_SIGALG_ECDSA_P256_SHA256, b, len + 1), SIGN_BAD_LENGTH);
		assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
		    TLS_SIGALG_ECDSA_P256_SHA256, b, len - 1), SIGN_BAD_LENGTH);
		/* Header only, or cut inside the header. */
		for (size_t cut = 65; cut <= 68; cut++)
			assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
			    TLS_SIGALG_ECDSA_P256_SHA256, b, cut), SIGN_BAD_LENGTH);
	}
	/* NIST points must be uncompressed (0x04). */
	for (size_t g = 0; g < 2; g++) {
		static const uint8_t firsts[] = { 0x00, 0x02, 0x03, 0x06, 0x07 };
		for (size_t i = 0; i < sizeof(firsts); i++) {
			len = mkske(b, groups[g].group, groups[g].n, 1);
			b[68] = firsts[i];
			assert_int_equal(check(&pol_12, IPC_KEY_RSA, 2048,
			    TLS_SIGALG_RSA_PSS_SHA256, b, len), SIGN_BAD_SKE);
		}
	}
	/* Groups that are not permitted, whatever the point length. */
	for (size_t i = 0; i < sizeof(other_groups) / sizeof(other_groups[0]); i++) {
		static const size_t ns[] = { 32, 56, 65, 97, 133 };
		for (size_t j = 0; j < sizeof(ns) / sizeof(ns[0]); j++) {
			len = mkske(b, other_groups[i], ns[j], 1);
			b[68] = 0x04;
			assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256,
			    TLS_SIGALG_ECDSA_P256_SHA256, b, len), SIGN_BAD_SKE);
		}
	}
	/* Swapped group bytes: 0x1700 instead of 0x0017. */
	len = mkske(b, TLS_GROUP_SECP256R1, 65, 1);
	b[65] = 0x17;
	b[66] = 0x00;
	assert_int_equal(check(&pol_12, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
	    len), SIGN_BAD_SKE);
}

/* ---- the two shapes cannot be confused ----------------------------------------------- */

static void
test_shapes_disjoint(void **state)
{
	uint8_t b[TBS_BUF];
	struct sign_policy all = { .tls12 = 1, .client_role = 1 };
	size_t len;

	/* A valid SKE header laid over a 1.3 prefix at a 1.3 length: refused as 1.3 input. */
	for (size_t h = 32; h <= 48; h += 16) {
		len = mk13(b, server_ctx, h);
		b[64] = 0x03;
		b[65] = 0x00;
		b[66] = 0x1d;
		b[67] = (uint8_t)(len - 68);
		assert_int_equal(check(&all, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
		    len), SIGN_BAD_CONTEXT);
	}
	/* A 1.3 prefix and context at an SKE length: refused as a wrong length. */
	for (size_t g = 0; g < 3; g++) {
		len = 68 + groups[g].n;
		mk13(b, server_ctx, 48);
		memset(b + 98, 0, sizeof(b) - 98);
		assert_int_equal(check(&all, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b,
		    len), SIGN_BAD_LENGTH);
	}
	/* An SKE header at a 1.3 length (no 1.3 prefix). */
	len = mkske(b, TLS_GROUP_SECP256R1, 65, 1);
	assert_int_equal(check(&all, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b, len),
	    SIGN_OK);
	assert_int_equal(check(&all, IPC_KEY_EC_P256, 256, TLS_SIGALG_ECDSA_P256_SHA256, b, 130),
	    SIGN_BAD_PREFIX);
}

/*
 * Random inputs (fixed seed): whatever the policy accepts must match one of the two
 * shapes exactly, as checked here by an independent, plain restatement of the rules.
 */
static int
oracle_ok(const struct sign_policy *p, uint16_t sigalg, const uint8_t *b, size_t len)
{
	int pkcs1 = sigalg == 0x0401 || sigalg == 0x0501 || sigalg == 0x0601;

	if (len == 130 || len == 146) {
		for (size_t i = 0; i < 64; i++)
			if (b[i] != 0x20)
				return 0;
		return !pkcs1 && (memcmp(b + 64, server_ctx, 34) == 0 ||
		    (p->client_role && memcmp(b + 64, client_ctx, 34) == 0));
	}
	if (!p->tls12 || len < 68 || b[64] != 3)
		return 0;
	if (p->require_downgrd && memcmp(b + 56, sentinel, 8) != 0)
		return 0;
	if (b[65] == 0 && b[66] == 0x17)
		return len == 133 && b[67] == 65 && b[68] == 4;
	if (b[65] == 0 && b[66] == 0x18)
		return len == 165 && b[67] == 97 && b[68] == 4;
	if (b[65] == 0 && b[66] == 0x1d)
		return !p->fips && len == 100 && b[67] == 32;
	return 0;
}

static void
test_random_inputs(void **state)
{
	uint8_t b[TBS_BUF];
	unsigned seed = 12345, accepted = 0;
	static const size_t lens[] = { 100, 130, 133, 146, 165 };
	const struct sign_policy pols[] = {
		{ .tls12 = 1 }, { .tls12 = 1, .require_downgrd = 1, .fips = 1, .client_role = 1 },
		{ .tls12 = 0 },
	};

	for (unsigned it = 0; it < 200000; it++) {
		const struct sign_policy *p = &pols[it % 3];
		size_t len;
		uint16_t sigalg = (it & 4) ? TLS_SIGALG_RSA_PKCS1_SHA256 : TLS_SIGALG_RSA_PSS_SHA384;

		/* Start from a valid input of either shape, then mutate a few bytes. */
		if (it & 1)
			len = mk13(b, (it & 2) ? client_ctx : server_ctx, (it & 8) ? 48 : 32);
		else
			len = mkske(b, groups[(it >> 1) % 3].group, groups[(it >> 1) % 3].n,
			    (it & 16) != 0);
		seed = seed * 1103515245u + 12345u;
		if (seed & 0x10000)
			len = lens[(seed >> 20) % 5];
		for (unsigned m = (seed >> 8) % 3; m > 0; m--) {
			seed = seed * 1103515245u + 12345u;
			b[(seed >> 12) % len] = (uint8_t)(seed >> 24);
		}
		int rc = sign_policy_check(p, IPC_KEY_RSA, 2048, sigalg, b, len);
		assert_int_equal(rc == SIGN_OK, oracle_ok(p, sigalg, b, len));
		accepted += rc == SIGN_OK;
	}
	assert_true(accepted > 1000);
}

/* ---- helpers ------------------------------------------------------------------------- */

static void
test_names_and_digests(void **state)
{
	static const int codes[] = { SIGN_BAD_SIGALG, SIGN_BAD_LENGTH, SIGN_BAD_PREFIX,
		SIGN_BAD_CONTEXT, SIGN_BAD_SKE, SIGN_NO_TLS12, SIGN_NO_DOWNGRD, SIGN_BAD_KEY };

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *n = sign_refusal_name(codes[i]);
		assert_non_null(n);
		assert_string_not_equal(n, "unknown refusal");
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(n, sign_refusal_name(codes[j]));
	}
	assert_string_equal(sign_refusal_name(SIGN_BAD_SIGALG), "sigalg does not fit the key");
	assert_string_equal(sign_refusal_name(SIGN_BAD_LENGTH),
	    "not a TLS handshake input (length)");
	assert_string_equal(sign_refusal_name(-9), "unknown refusal");
	assert_string_equal(sign_refusal_name(1), "unknown refusal");
	assert_string_equal(sign_refusal_name(-2147483647 - 1), "unknown refusal");

	assert_string_equal(sign_sigalg_digest(0x0403), "SHA256");
	assert_string_equal(sign_sigalg_digest(0x0804), "SHA256");
	assert_string_equal(sign_sigalg_digest(0x0401), "SHA256");
	assert_string_equal(sign_sigalg_digest(0x0503), "SHA384");
	assert_string_equal(sign_sigalg_digest(0x0805), "SHA384");
	assert_string_equal(sign_sigalg_digest(0x0501), "SHA384");
	assert_string_equal(sign_sigalg_digest(0x0806), "SHA512");
	assert_string_equal(sign_sigalg_digest(0x0601), "SHA512");
	assert_null(sign_sigalg_digest(0x0807));
	assert_null(sign_sigalg_digest(0x0603));
	assert_null(sign_sigalg_digest(0x0201));

	assert_true(sign_sigalg_is_pss(0x0804));
	assert_true(sign_sigalg_is_pss(0x0805));
	assert_true(sign_sigalg_is_pss(0x0806));
	assert_false(sign_sigalg_is_pss(0x0809));   /* rsa_pss_pss_sha256: not ours */
	assert_false(sign_sigalg_is_pss(0x0401));
	assert_false(sign_sigalg_is_pss(0x0403));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls13_server_accepted),
		cmocka_unit_test(test_tls13_client_context),
		cmocka_unit_test(test_tls13_context_near_misses),
		cmocka_unit_test(test_tls13_prefix),
		cmocka_unit_test(test_tls13_lengths),
		cmocka_unit_test(test_bare_digests),
		cmocka_unit_test(test_sigalg_binding),
		cmocka_unit_test(test_bad_keys),
		cmocka_unit_test(test_ske_accepted),
		cmocka_unit_test(test_ske_disabled),
		cmocka_unit_test(test_ske_downgrd),
		cmocka_unit_test(test_ske_fips),
		cmocka_unit_test(test_ske_near_misses),
		cmocka_unit_test(test_shapes_disjoint),
		cmocka_unit_test(test_random_inputs),
		cmocka_unit_test(test_names_and_digests),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
