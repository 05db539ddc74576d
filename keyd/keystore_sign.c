/*
 * keyd's key store, signing side: one TLS handshake signature with a loaded key.  The caller
 * has already run sign_policy_check() on the input; this file re-checks only that the sigalg
 * fits the key (cheap, and it keeps a caller's mistake from reaching the key), hashes the
 * input itself (keyd never signs a digest it was given) and, for RSA, verifies the signature
 * before it leaves (a faulty CRT computation would otherwise leak the factors).
 *
 * EC keys sign through a context kept with the key (ks_ec_sign()): EVP_DigestSignInit_ex()
 * per signature fetched the digest, looked up the key's signature implementation and built
 * a context each time, about a tenth of keyd's work per handshake.  Kept per key, not per
 * process, so the context (which holds a reference to the key) goes when the key goes.
 */
#include "keyd/keystore.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "common/log.h"
#include "keyd/sign_policy.h"

static int
ks_sigalg_fits(const struct keyd_key *k, uint16_t sigalg)
{
	switch (k->type) {
	case IPC_KEY_EC_P256:
		return sigalg == TLS_SIGALG_ECDSA_P256_SHA256;
	case IPC_KEY_EC_P384:
		return sigalg == TLS_SIGALG_ECDSA_P384_SHA384;
	case IPC_KEY_RSA:
		return sign_sigalg_is_pss(sigalg) || sigalg == TLS_SIGALG_RSA_PKCS1_SHA256 ||
		    sigalg == TLS_SIGALG_RSA_PKCS1_SHA384 || sigalg == TLS_SIGALG_RSA_PKCS1_SHA512;
	default:
		return 0;
	}
}

/*
 * RSA padding for a sigalg, the same for signing and for the self-check: PSS with
 * salt length = digest length and MGF1 over the signature digest (RFC 8446 4.2.3; what
 * libssl asks for), or PKCS#1 v1.5.
 */
static int
ks_set_rsa_padding(EVP_PKEY_CTX *pctx, uint16_t sigalg, const char *md)
{
	if (sign_sigalg_is_pss(sigalg))
		return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0 &&
		    EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, md, NULL) > 0;
	return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
}

static int
ks_rsa_selfcheck(const struct keyd_key *k, uint16_t sigalg, const char *md,
    const uint8_t *tbs, size_t tbslen, const uint8_t *sig, size_t siglen)
{
	EVP_MD_CTX *mctx;
	EVP_PKEY_CTX *pctx = NULL;
	int ok;

	if ((mctx = EVP_MD_CTX_new()) == NULL)
		return -1;
	ok = EVP_DigestVerifyInit_ex(mctx, &pctx, md, NULL, NULL, k->pkey, NULL) == 1 &&
	    ks_set_rsa_padding(pctx, sigalg, md) &&
	    EVP_DigestVerify(mctx, sig, siglen, tbs, tbslen) == 1;
	EVP_MD_CTX_free(mctx);
	return ok ? 0 : -1;
}

void
keystore_sign_forget(struct keyd_key *k)
{
	EVP_PKEY_CTX_free(k->sign_pctx);
	EVP_MD_CTX_free(k->sign_mctx);
	EVP_MD_free(k->sign_md);
	k->sign_pctx = NULL;
	k->sign_mctx = NULL;
	k->sign_md = NULL;
}

/*
 * The kept context of an EC key, made on first use.  An EC key has one sigalg (ks_sigalg_fits
 * checked it), so one digest.  EVP_PKEY_CTX_set_signature_md() makes the provider check the
 * digest length on every signature, as EVP_DigestSign() would.
 */
static int
ks_ec_ready(struct keyd_key *k, const char *md)
{
	if (k->sign_pctx != NULL)
		return 0;
	if ((k->sign_md = EVP_MD_fetch(NULL, md, NULL)) == NULL ||
	    (k->sign_mctx = EVP_MD_CTX_new()) == NULL ||
	    (k->sign_pctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL)) == NULL ||
	    EVP_PKEY_sign_init(k->sign_pctx) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(k->sign_pctx, k->sign_md) != 1) {
		keystore_sign_forget(k);
		return -1;
	}
	return 0;
}

/* ECDSA over the digest of tbs, computed here; a fresh nonce per call (no kinv/r is set). */
static int
ks_ec_sign(struct keyd_key *k, const char *md, const uint8_t *tbs, size_t tbslen,
    uint8_t *sig, size_t *len)
{
	unsigned char dgst[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	int ok;

	if (ks_ec_ready(k, md) == -1)
		return -1;
	ok = EVP_DigestInit_ex2(k->sign_mctx, k->sign_md, NULL) == 1 &&
	    EVP_DigestUpdate(k->sign_mctx, tbs, tbslen) == 1 &&
	    EVP_DigestFinal_ex(k->sign_mctx, dgst, &dlen) == 1 &&
	    EVP_PKEY_sign(k->sign_pctx, sig, len, dgst, dlen) == 1;
	OPENSSL_cleanse(dgst, sizeof(dgst));
	return ok ? 0 : -1;
}

int
keystore_sign(struct keyd_key *k, uint16_t sigalg, const uint8_t *tbs, size_t tbslen,
    uint8_t *sig, size_t sigcap, size_t *siglen)
{
	EVP_MD_CTX *mctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	const char *md;
	size_t len;
	int size, rc = -1;

	if (siglen != NULL)
		*siglen = 0;
	if (k == NULL || k->pkey == NULL || tbs == NULL || tbslen == 0 || sig == NULL ||
	    siglen == NULL) {
		log_warnx("keystore_sign: missing key, input or output");
		return -1;
	}
	/* A TPM key's pkey is public only: the TPM thread signs (keyd_tpm_submit()). */
	if (k->tpm != NULL) {
		log_warnx("keystore_sign: generation %u is a TPM key; not signed here", k->generation);
		return -1;
	}
	if ((md = sign_sigalg_digest(sigalg)) == NULL || !ks_sigalg_fits(k, sigalg)) {
		log_warnx("keystore_sign: sigalg 0x%04x does not fit key generation %u", sigalg,
		    k->generation);
		return -1;
	}
	/* The size comes from the key (an upper bound for ECDSA's DER), never from the request. */
	if ((size = EVP_PKEY_get_size(k->pkey)) <= 0 || sigcap < (size_t)size) {
		log_warnx("keystore_sign: output buffer of %zu bytes, the key needs %d", sigcap,
		    size);
		return -1;
	}
	if (k->type != IPC_KEY_RSA) {
		len = sigcap;
		if (ks_ec_sign(k, md, tbs, tbslen, sig, &len) == -1 || len == 0 || len > sigcap) {
			log_ssl_errors("keystore_sign: sign");
			goto out;
		}
		*siglen = len;
		rc = 0;
		goto out;
	}
	if ((mctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit_ex(mctx, &pctx, md, NULL, NULL, k->pkey, NULL) != 1 ||
	    !ks_set_rsa_padding(pctx, sigalg, md)) {
		log_ssl_errors("keystore_sign: init");
		goto out;
	}
	len = sigcap;
	if (EVP_DigestSign(mctx, sig, &len, tbs, tbslen) != 1 || len == 0 || len > sigcap) {
		log_ssl_errors("keystore_sign: sign");
		goto out;
	}
	if (ks_rsa_selfcheck(k, sigalg, md, tbs, tbslen, sig, len) == -1) {
		OPENSSL_cleanse(sig, sigcap);
		log_ssl_errors("keystore_sign: self-check");
		log_warnx("keystore_sign: RSA signature (sigalg 0x%04x, generation %u) failed its "
		    "own verification; not returned (hardware fault?)", sigalg, k->generation);
		goto out;
	}
	*siglen = len;
	rc = 0;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(mctx);
	return rc;
}
