/*
 * What keyd agrees to sign: TLS 1.3 CertificateVerify input and, when TLS 1.2 is enabled,
 * TLS 1.2 ServerKeyExchange input, each with the signature scheme that fits the key.  Pure
 * functions over bytes, so the unit tests and the fuzzer drive them directly.
 */
#ifndef REDOUBT_SIGN_POLICY_H
#define REDOUBT_SIGN_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "ipc/ipc.h"

/* TLS SignatureScheme values (RFC 8446 4.2.3). */
#define TLS_SIGALG_ECDSA_P256_SHA256 0x0403
#define TLS_SIGALG_ECDSA_P384_SHA384 0x0503
#define TLS_SIGALG_RSA_PSS_SHA256    0x0804
#define TLS_SIGALG_RSA_PSS_SHA384    0x0805
#define TLS_SIGALG_RSA_PSS_SHA512    0x0806
#define TLS_SIGALG_RSA_PKCS1_SHA256  0x0401  /* TLS 1.2 ServerKeyExchange only */
#define TLS_SIGALG_RSA_PKCS1_SHA384  0x0501
#define TLS_SIGALG_RSA_PKCS1_SHA512  0x0601

/* TLS NamedGroup values allowed in a TLS 1.2 ServerKeyExchange. */
#define TLS_GROUP_SECP256R1 0x0017
#define TLS_GROUP_SECP384R1 0x0018
#define TLS_GROUP_X25519    0x001d

struct sign_policy {
	int tls12;            /* TLS 1.2 ServerKeyExchange input may be signed */
	int require_downgrd;  /* TLS 1.3 is also enabled: server_random must end in DOWNGRD\x01 */
	int fips;             /* no X25519 in SKE */
	int client_role;      /* TLS 1.3 client CertificateVerify may be signed (connectors) */
};

enum sign_refusal {
	SIGN_OK = 0,
	SIGN_BAD_SIGALG = -1,   /* sigalg unknown or does not fit the key */
	SIGN_BAD_LENGTH = -2,   /* no permitted input has this length */
	SIGN_BAD_PREFIX = -3,   /* not 64 x 0x20 */
	SIGN_BAD_CONTEXT = -4,  /* context string (incl. its NUL) not a permitted one */
	SIGN_BAD_SKE = -5,      /* TLS 1.2 SKE shape (curve type, group, point length) */
	SIGN_NO_TLS12 = -6,     /* TLS 1.2 input while TLS 1.2 is disabled */
	SIGN_NO_DOWNGRD = -7,   /* TLS 1.2 input without the downgrade sentinel */
	SIGN_BAD_KEY = -8       /* key type / size not permitted */
};

/*
 * Returns SIGN_OK when tbs is a permitted input for a key of this type and size signed with
 * sigalg, else the refusal (sign_refusal_name() gives its reason for logs and audit).
 */
int sign_policy_check(const struct sign_policy *p, enum ipc_key_type kt, unsigned key_bits,
    uint16_t sigalg, const uint8_t *tbs, size_t tbs_len);
const char *sign_refusal_name(int refusal);
/* The digest name for a sigalg ("SHA256", ...), NULL for unknown ones. */
const char *sign_sigalg_digest(uint16_t sigalg);
/* 1 for the RSA-PSS schemes. */
int sign_sigalg_is_pss(uint16_t sigalg);

#endif
