/*
 * What keyd agrees to sign (notes/key-isolation.md §9.4, steps 4 and 5).  Pure functions over
 * bytes: no I/O, no allocation, no OpenSSL, so the unit tests and the fuzzer drive them
 * directly and the worker may run the same check before it bothers keyd.
 *
 * Order of the checks: the key itself, then sigalg <-> key, then the shape of the input, then
 * what the configuration permits (TLS 1.2 enabled, downgrade sentinel).  The first failure is
 * the answer; each has its own code so the audit trail says which rule fired.
 */
#include "keyd/sign_policy.h"

#include <string.h>

/* TLS 1.3 CertificateVerify input (RFC 8446 4.4.3): 64 x 0x20 || context || 0x00 || hash. */
#define TLS13_PAD_LEN       64
#define TLS13_PAD_BYTE      0x20
#define TLS13_CONTEXT_LEN   34          /* "TLS 1.3, server CertificateVerify" + its NUL */
#define TLS13_PREAMBLE_LEN  (TLS13_PAD_LEN + TLS13_CONTEXT_LEN)     /* 98 */
#define TLS13_TBS_SHA256    (TLS13_PREAMBLE_LEN + 32)               /* 130 */
#define TLS13_TBS_SHA384    (TLS13_PREAMBLE_LEN + 48)               /* 146 */

/* TLS 1.2 ServerKeyExchange input (RFC 8422 5.4): randoms || ECParameters || ECPoint. */
#define TLS12_RANDOMS_LEN   64          /* client_random(32) || server_random(32) */
#define TLS12_CURVE_TYPE_AT 64          /* ECCurveType */
#define TLS12_GROUP_AT      65          /* NamedCurve, u16 big-endian */
#define TLS12_POINT_LEN_AT  67          /* u8 */
#define TLS12_POINT_AT      68
#define TLS12_NAMED_CURVE   0x03
#define TLS12_POINT_UNCOMPRESSED 0x04
#define TLS12_SENTINEL_AT   56          /* last 8 bytes of server_random */
#define TLS12_SENTINEL_LEN  8

#define SKE_LEN_X25519      (TLS12_POINT_AT + 32)   /* 100 */
#define SKE_LEN_P256        (TLS12_POINT_AT + 65)   /* 133 */
#define SKE_LEN_P384        (TLS12_POINT_AT + 97)   /* 165 */

#define RSA_BITS_MIN        2048
#define RSA_BITS_MAX        4096

/* Built from the RFC 8446 strings; the NUL counts and is compared. */
static const char tls13_server_context[TLS13_CONTEXT_LEN] = "TLS 1.3, server CertificateVerify";
static const char tls13_client_context[TLS13_CONTEXT_LEN] = "TLS 1.3, client CertificateVerify";
/* RFC 8446 4.1.3: a TLS 1.3 server negotiating TLS 1.2 ends server_random with this. */
static const char tls12_downgrade_sentinel[TLS12_SENTINEL_LEN] = { 'D', 'O', 'W', 'N', 'G', 'R',
    'D', 0x01 };

static const char *const sign_refusal_names[] = {
	[-SIGN_OK]          = "ok",
	[-SIGN_BAD_SIGALG]  = "sigalg does not fit the key",
	[-SIGN_BAD_LENGTH]  = "not a TLS handshake input (length)",
	[-SIGN_BAD_PREFIX]  = "not a TLS 1.3 CertificateVerify input (prefix)",
	[-SIGN_BAD_CONTEXT] = "TLS 1.3 context string not permitted",
	[-SIGN_BAD_SKE]     = "not a permitted TLS 1.2 ServerKeyExchange (curve, group or point)",
	[-SIGN_NO_TLS12]    = "TLS 1.2 input while TLS 1.2 is disabled",
	[-SIGN_NO_DOWNGRD]  = "TLS 1.2 input without the downgrade sentinel",
	[-SIGN_BAD_KEY]     = "key type or size not permitted",
};

const char *
sign_refusal_name(int refusal)
{
	const int n = (int)(sizeof(sign_refusal_names) / sizeof(sign_refusal_names[0]));

	/* Range first, so that negating refusal cannot overflow. */
	if (refusal > 0 || refusal <= -n || sign_refusal_names[-refusal] == NULL)
		return "unknown refusal";
	return sign_refusal_names[-refusal];
}

const char *
sign_sigalg_digest(uint16_t sigalg)
{
	switch (sigalg) {
	case TLS_SIGALG_ECDSA_P256_SHA256:
	case TLS_SIGALG_RSA_PSS_SHA256:
	case TLS_SIGALG_RSA_PKCS1_SHA256:
		return "SHA256";
	case TLS_SIGALG_ECDSA_P384_SHA384:
	case TLS_SIGALG_RSA_PSS_SHA384:
	case TLS_SIGALG_RSA_PKCS1_SHA384:
		return "SHA384";
	case TLS_SIGALG_RSA_PSS_SHA512:
	case TLS_SIGALG_RSA_PKCS1_SHA512:
		return "SHA512";
	default:
		return NULL;
	}
}

int
sign_sigalg_is_pss(uint16_t sigalg)
{
	return sigalg == TLS_SIGALG_RSA_PSS_SHA256 || sigalg == TLS_SIGALG_RSA_PSS_SHA384 ||
	    sigalg == TLS_SIGALG_RSA_PSS_SHA512;
}

static int
sign_sigalg_is_pkcs1(uint16_t sigalg)
{
	return sigalg == TLS_SIGALG_RSA_PKCS1_SHA256 || sigalg == TLS_SIGALG_RSA_PKCS1_SHA384 ||
	    sigalg == TLS_SIGALG_RSA_PKCS1_SHA512;
}

/*
 * The key keyd holds: P-256, P-384 or RSA 2048..4096.  For EC the size must agree with the
 * curve (keystore fills bits from EVP_PKEY_get_bits(), 256 or 384); a disagreement means the
 * caller mixed up keys, which is not something to sign through.
 */
static int
sign_check_key(enum ipc_key_type kt, unsigned key_bits)
{
	switch (kt) {
	case IPC_KEY_EC_P256:
		return key_bits == 256 ? SIGN_OK : SIGN_BAD_KEY;
	case IPC_KEY_EC_P384:
		return key_bits == 384 ? SIGN_OK : SIGN_BAD_KEY;
	case IPC_KEY_RSA:
		return key_bits >= RSA_BITS_MIN && key_bits <= RSA_BITS_MAX ? SIGN_OK : SIGN_BAD_KEY;
	default:
		return SIGN_BAD_KEY;
	}
}

/*
 * Sigalg <-> key, for any input.  ECDSA is bound to its curve's hash even in TLS 1.2 (where
 * the protocol would allow a mismatch): we never need one.  Whether PKCS#1 v1.5 is allowed
 * depends on the input and is checked once its shape is known.
 */
static int
sign_check_sigalg(enum ipc_key_type kt, uint16_t sigalg)
{
	switch (kt) {
	case IPC_KEY_EC_P256:
		return sigalg == TLS_SIGALG_ECDSA_P256_SHA256 ? SIGN_OK : SIGN_BAD_SIGALG;
	case IPC_KEY_EC_P384:
		return sigalg == TLS_SIGALG_ECDSA_P384_SHA384 ? SIGN_OK : SIGN_BAD_SIGALG;
	case IPC_KEY_RSA:
		return sign_sigalg_is_pss(sigalg) || sign_sigalg_is_pkcs1(sigalg) ?
		    SIGN_OK : SIGN_BAD_SIGALG;
	default:
		return SIGN_BAD_SIGALG;
	}
}

static int
sign_has_tls13_pad(const uint8_t *tbs, size_t tbs_len)
{
	if (tbs_len < TLS13_PAD_LEN)
		return 0;
	for (size_t i = 0; i < TLS13_PAD_LEN; i++)
		if (tbs[i] != TLS13_PAD_BYTE)
			return 0;
	return 1;
}

/* TLS 1.3 CertificateVerify; the caller has checked the length (130 or 146). */
static int
sign_check_tls13(const struct sign_policy *p, uint16_t sigalg, const uint8_t *tbs)
{
	const uint8_t *ctx = tbs + TLS13_PAD_LEN;

	if (!sign_has_tls13_pad(tbs, TLS13_PAD_LEN))
		return SIGN_BAD_PREFIX;
	/* All 34 bytes, NUL included; the transcript hash after it is opaque. */
	if (memcmp(ctx, tls13_server_context, TLS13_CONTEXT_LEN) != 0 &&
	    !(p->client_role && memcmp(ctx, tls13_client_context, TLS13_CONTEXT_LEN) == 0))
		return SIGN_BAD_CONTEXT;
	/* RFC 8446 4.4.3: PKCS#1 v1.5 never signs a CertificateVerify. */
	if (sign_sigalg_is_pkcs1(sigalg))
		return SIGN_BAD_SIGALG;
	return SIGN_OK;
}

/*
 * TLS 1.2 ServerKeyExchange; the caller has checked tbs_len > 64 and tbs[64] == named_curve.
 * Shape first (so a malformed input is reported as such even when TLS 1.2 is off), then what
 * the configuration permits.
 */
static int
sign_check_ske(const struct sign_policy *p, const uint8_t *tbs, size_t tbs_len)
{
	uint16_t group;
	size_t point_len;

	if (tbs_len < TLS12_POINT_AT)
		return SIGN_BAD_LENGTH;
	group = (uint16_t)((unsigned)tbs[TLS12_GROUP_AT] << 8 | tbs[TLS12_GROUP_AT + 1]);
	switch (group) {
	case TLS_GROUP_SECP256R1:
		point_len = 65;
		break;
	case TLS_GROUP_SECP384R1:
		point_len = 97;
		break;
	case TLS_GROUP_X25519:
		if (p->fips)
			return SIGN_BAD_SKE;
		point_len = 32;
		break;
	default:
		return SIGN_BAD_SKE;
	}
	if (tbs[TLS12_POINT_LEN_AT] != point_len)
		return SIGN_BAD_SKE;
	/* Exactly the point: a trailing byte would be signed but not parsed by the client. */
	if (tbs_len != TLS12_POINT_AT + point_len)
		return SIGN_BAD_LENGTH;
	if (group != TLS_GROUP_X25519 && tbs[TLS12_POINT_AT] != TLS12_POINT_UNCOMPRESSED)
		return SIGN_BAD_SKE;

	if (!p->tls12)
		return SIGN_NO_TLS12;
	if (p->require_downgrd && memcmp(tbs + TLS12_SENTINEL_AT, tls12_downgrade_sentinel,
	    TLS12_SENTINEL_LEN) != 0)
		return SIGN_NO_DOWNGRD;
	return SIGN_OK;
}

/*
 * Telling TLS 1.3 from TLS 1.2 input.  The two accepted sets cannot overlap, for two
 * independent reasons:
 *   - lengths: a TLS 1.3 CertificateVerify input is 130 or 146 bytes; a permitted SKE input is
 *     100, 133 or 165 bytes (64 + 4 + 32/65/97).  No length is in both sets, and the length
 *     alone decides which checks run, so an input is validated against exactly one shape;
 *   - byte 64: TLS 1.3 requires 'T' (0x54, first byte of the context string) there, the SKE
 *     requires 0x03 (named_curve).  A client may choose its client_random freely, so an SKE may
 *     well start with 64 x 0x20, but it still cannot carry 'T' at byte 64.
 * So no byte string is accepted as both, and a signature made over one shape can never be
 * presented as a signature over the other: the signed bytes differ.
 *
 * Refusals are as specific as the input allows: a 130/146-byte input gets the prefix or
 * context reason; an input with named_curve at byte 64 gets the SKE reason; a 1.3-looking
 * prefix at any other length, or a bare digest (32/48/64 bytes), is a length refusal; an
 * SKE-sized input with a wrong curve type byte is an SKE refusal.
 */
int
sign_policy_check(const struct sign_policy *p, enum ipc_key_type kt, unsigned key_bits,
    uint16_t sigalg, const uint8_t *tbs, size_t tbs_len)
{
	int rc;

	if ((rc = sign_check_key(kt, key_bits)) != SIGN_OK ||
	    (rc = sign_check_sigalg(kt, sigalg)) != SIGN_OK)
		return rc;
	if (p == NULL || tbs == NULL || tbs_len == 0)
		return SIGN_BAD_LENGTH;

	if (tbs_len == TLS13_TBS_SHA256 || tbs_len == TLS13_TBS_SHA384)
		return sign_check_tls13(p, sigalg, tbs);
	if (tbs_len > TLS12_CURVE_TYPE_AT && tbs[TLS12_CURVE_TYPE_AT] == TLS12_NAMED_CURVE)
		return sign_check_ske(p, tbs, tbs_len);
	if (sign_has_tls13_pad(tbs, tbs_len))
		return SIGN_BAD_LENGTH;
	if (tbs_len == SKE_LEN_X25519 || tbs_len == SKE_LEN_P256 || tbs_len == SKE_LEN_P384)
		return SIGN_BAD_SKE;    /* curve type is not named_curve */
	return SIGN_BAD_LENGTH;
}
