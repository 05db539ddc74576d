/*
 * TPM 2.0 keys (tss2-esys): the key blob format, an ESYS session over a TCTI, and keyd's TPM
 * signer thread.
 *
 * A TPM key blob is the TPM2B_PUBLIC and the TPM2B_PRIVATE (the private part encrypted by the
 * TPM under its storage primary key) that TPM2_Create returned, marshalled one after the other
 * exactly as tpm2-tools writes key.pub and key.priv, wrapped in a PEM block named
 * TPM_BLOB_PEM_NAME.  The blob is useless without the TPM that made it: the private key never
 * exists outside the TPM.  The parent is the primary key derived from a fixed template in the
 * owner hierarchy (tpm_esys_open()), re-created at every start (deterministic: same seed, same
 * template, same key).
 *
 * ESYS is not thread-safe and a TPM runs one command at a time, so keyd talks to the TPM from a
 * single thread (tpm_signer.c) with a bounded queue; the event loop never waits for the TPM.
 */
#ifndef REDOUBT_TPM_H
#define REDOUBT_TPM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <tss2/tss2_esys.h>

#include "ipc/ipc.h"

#define TPM_BLOB_PEM_NAME   "REDOUBT TPM2 KEY"
#define TPM_BLOB_FILE_MAX   (16u << 10)   /* bytes: a blob is < 1 KiB; PEM and slack */
#define TPM_ERR_MAX         256

enum tpm_key_kind { TPM_KEY_P256 = 1, TPM_KEY_P384, TPM_KEY_RSA2048 };

/* A parsed blob, shared (reference-counted) by a key generation and queued TPM jobs. */
struct tpm_key;

/* Reads a blob file; *pub is its public key (a new reference).  Software only: no TPM. */
int  tpm_key_read(const char *path, struct tpm_key **out, EVP_PKEY **pub, char *err,
    size_t errlen);
struct tpm_key *tpm_key_ref(struct tpm_key *k);
void tpm_key_unref(struct tpm_key *k);
/* The public key of a blob's public area, or NULL. */
EVP_PKEY *tpm_public_to_pkey(const TPM2B_PUBLIC *pub);
/* PEM-encodes a blob to a file (mode 0600). */
int  tpm_blob_write(const char *path, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
    char *err, size_t errlen);

/* One ESYS context on one TCTI, with the storage primary key loaded. */
struct tpm_esys {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT      *ctx;
	ESYS_TR            primary;
};

/* Initialises the TCTI (never NULL: an explicit string, see docs/tpm.md), starts the TPM if
 * needed and creates the primary.  Returns 0, or -1 with err. */
int  tpm_esys_open(const char *tcti, struct tpm_esys *t, char *err, size_t errlen);
void tpm_esys_close(struct tpm_esys *t);
int  tpm_esys_primary(struct tpm_esys *t, char *err, size_t errlen);
/* Creates a signing key under the primary (fixedTPM, fixedParent, sensitiveDataOrigin,
 * sign only, scheme NULL so one key serves every TLS scheme of its type). */
int  tpm_esys_create(struct tpm_esys *t, enum tpm_key_kind kind, TPM2B_PUBLIC **pub,
    TPM2B_PRIVATE **priv, char *err, size_t errlen);
int  tpm_esys_load(struct tpm_esys *t, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
    ESYS_TR *handle, char *err, size_t errlen);
/*
 * Signs a digest made in software: ECDSA (DER ECDSA-Sig-Value out), RSA-PSS or RSASSA
 * (raw signature out); md is "SHA256", "SHA384" or "SHA512".  Returns 0 or -1 with err.
 */
int  tpm_esys_sign(struct tpm_esys *t, ESYS_TR key, int is_rsa, int pss, const char *md,
    const uint8_t *digest, size_t dlen, uint8_t *sig, size_t cap, size_t *siglen,
    char *err, size_t errlen);

/* ---- keyd: the TPM signer thread (tpm_signer.c) ---- */

struct keyd_worker;
struct ipc_msg;
struct keyd_key;
struct config;

#define TPM_QUEUE_MAX 32      /* TPM requests queued or running; more is IPC_ERR_BUSY */

/* Any identity with a tpm: key?  Then opens the TPM and checks every TPM key against its
 * certificate with a test signature.  Before the sandbox. */
int  keyd_tpm_init(char *err, size_t errlen);
/* Starts the signer thread, if keyd_tpm_init() opened a TPM.  After the sandbox, so that
 * Landlock confines the thread too. */
int  keyd_tpm_start(char *err, size_t errlen);
/* Queues a checked SIGN request for a TPM key; the answer is sent when the TPM is done. */
int  keyd_tpm_submit(struct keyd_worker *w, const struct ipc_msg *m, struct keyd_key *key,
    const char *ident);
/* A worker channel was replaced: answers to the old one are dropped. */
void keyd_tpm_channel_reset(unsigned worker);
/* `redoubt status`: "fips" {configured, active, provider} and "tpm" (null without TPM keys). */
void keyd_status_fips_tpm(json_t *o);
/* For status: queued + running, completed, timed out. */
void keyd_tpm_counters(unsigned *pending, uint64_t *signs, uint64_t *timeouts);

#endif
