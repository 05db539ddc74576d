/* The parsed TPM key blob, shared by tpm.c and keyd's TPM signer thread (tpm_signer.c). */
#ifndef REDOUBT_TPM_INTERNAL_H
#define REDOUBT_TPM_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "keyd/tpm.h"

struct tpm_key {
	atomic_int    refs;
	uint8_t       id[32];         /* SHA-256 of the marshalled blob: the loaded-object cache key */
	TPM2B_PUBLIC  pub;
	TPM2B_PRIVATE priv;           /* encrypted by the TPM's storage key: not a secret here */
	EVP_PKEY     *pub_pkey;       /* the public key, for the signature self-check */
};

#endif
