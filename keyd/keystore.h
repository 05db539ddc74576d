/*
 * keyd's key store: loads one identity's certificate chain and private key (one
 * "generation"), validates the pair before it may replace anything, and signs with it.
 * Only keyd links this in a code path; workers never call it.
 */
#ifndef REDOUBT_KEYSTORE_H
#define REDOUBT_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ipc/ipc.h"
#include "policy/config.h"

#define KEYSTORE_ERR_MAX 512

struct tpm_key;
#define KEYSTORE_PASSPHRASE_ENV "REDOUBT_KEY_PASSPHRASE"

struct keyd_key {
	uint32_t          generation;
	EVP_PKEY         *pkey;                 /* private key; its secrets live in the secure heap */
	struct tpm_key   *tpm;                  /* tpm: key: pkey is only the public key (keyd/tpm.h) */
	enum ipc_key_type type;
	unsigned          bits;
	uint8_t           key_id[IPC_KEY_ID_LEN]; /* SHA-256 of the leaf's SPKI (DER) */
	X509             *leaf;
	char             *chain_pem;            /* public: leaf + intermediates, as PEM */
	size_t            chain_len;
	char             *ca_pem;               /* public: trust anchors, may be NULL */
	size_t            ca_len;
	char             *crl_pem;              /* public: may be NULL */
	size_t            crl_len;
	char              serial[96];           /* hex */
	char              fingerprint[96];      /* SHA-256 of the leaf DER, hex with colons */
	char              subject[256];
	time_t            not_before, not_after;
	/*
	 * EC keys: what every signature needs, made on the first one and kept until
	 * keystore_free() (keystore_sign.c): the digest, fetched once, and an ECDSA context
	 * initialised once.  Each signature still hashes the input here and draws a fresh nonce.
	 */
	EVP_MD           *sign_md;
	EVP_MD_CTX       *sign_mctx;
	EVP_PKEY_CTX     *sign_pctx;
};

/*
 * Loads and validates an identity's files: the chain parses and its first certificate is the
 * leaf; the key parses (passphrase from key_passphrase_file, else $REDOUBT_KEY_PASSPHRASE),
 * is P-256, P-384 or RSA 2048..4096 (fips: no RSA < 2048, which is already the floor), and
 * matches the leaf; the leaf is valid now (neither expired nor not yet valid); when a CA is
 * configured the chain verifies against it (and the CRL, when configured).  Every buffer
 * that held key bytes is wiped.  Returns 0, or -1 with err saying which file and why.
 */
int  keystore_load(const struct config *cfg, const struct config_identity *id,
    uint32_t generation, struct keyd_key **out, char *err, size_t errlen);
void keystore_free(struct keyd_key *k);

/*
 * Signs tbs with the key for the TLS SignatureScheme sigalg (the caller has already checked
 * the input with sign_policy_check()).  The signature size comes from the key, never from
 * the request.  RSA signatures are verified before they are returned (fault attacks).
 * Returns 0 and *siglen, or -1.
 */
int  keystore_sign(struct keyd_key *k, uint16_t sigalg, const uint8_t *tbs,
    size_t tbslen, uint8_t *sig, size_t sigcap, size_t *siglen);
/* Frees what keystore_sign() kept with the key (called by keystore_free()). */
void keystore_sign_forget(struct keyd_key *k);

/* SHA-256 of the certificate's SubjectPublicKeyInfo: the key id both sides compute. */
int  keyid_of_cert(X509 *x, uint8_t out[IPC_KEY_ID_LEN]);

#endif
