/*
 * Signed checkpoints: the audit key (ECDSA P-256, keyd's own, never a TLS key), the
 * checkpoint record, and its check.  A checkpoint's signature covers its own line without
 * the trailing ,"sig":"..." member, and that line includes prev, the hash of the record
 * before it: one signature vouches for every record up to it.
 */
#ifndef REDOUBT_AUDIT_CHECKPOINT_H
#define REDOUBT_AUDIT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit/record.h"

#define AUDIT_CHECKPOINT_EVENT "audit.checkpoint"
#define AUDIT_SIG_B64_MAX      128   /* base64 of a DER ECDSA P-256 signature (<= 72 bytes: 96) */

/*
 * Loads the audit signing key from keypath, or creates it (0600) when there is none
 * (*created = 1); refuses a key that group or others may access, or that is not P-256.
 * Writes the public key to pubpath (0644) when that file is missing or holds another key.
 * Returns 0, or -1 with err.
 */
int  audit_key_open(const char *keypath, const char *pubpath, EVP_PKEY **key, int *created,
    char *err, size_t errlen);
/* Reads a PEM public key (SubjectPublicKeyInfo).  Returns 0, or -1 with err. */
int  audit_pubkey_load(const char *path, EVP_PKEY **pub, char *err, size_t errlen);
/* SHA-256 hex of the DER SubjectPublicKeyInfo: the key id in every checkpoint. */
int  audit_key_id(EVP_PKEY *k, char out[AUDIT_HASH_HEX_LEN + 1]);

/*
 * The checkpoint that follows c: records first_seq..c->ac_seq are those added since the
 * previous checkpoint.  Returns the signed line (malloc'd, no newline), or NULL.
 */
char *audit_checkpoint_make(const struct audit_chain *c, const char *time, uint64_t first_seq,
    EVP_PKEY *key, const char *key_id, size_t *len);

enum audit_cp_status {
	AUDIT_CP_OK = 0,
	AUDIT_CP_MALFORMED,     /* fields missing, or sig is not the last member */
	AUDIT_CP_OTHER_KEY,     /* key names another key than the one we verify with */
	AUDIT_CP_BAD_SIG        /* the signature does not verify: forged or altered */
};

/*
 * Checks the checkpoint line (r is its parse) with pub (whose id is key_id).  On
 * AUDIT_CP_OK, *first and *last are the range it states.  why says what is wrong.
 */
enum audit_cp_status audit_checkpoint_check(const char *line, size_t len,
    const struct audit_rec *r, EVP_PKEY *pub, const char *key_id, uint64_t *first,
    uint64_t *last, char *why, size_t whylen);

#endif
