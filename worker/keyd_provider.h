/*
 * A built-in OpenSSL 3 provider whose private keys are handles: every signature becomes an
 * IPC_SIGN request to keyd, while the TLS job is paused (SSL_MODE_ASYNC).  Only keymgmt
 * (public half + key id) and signature (one-shot digest_sign) are implemented: no decrypt,
 * no export of anything private, no key generation.
 */
#ifndef REDOUBT_KEYD_PROVIDER_H
#define REDOUBT_KEYD_PROVIDER_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ipc/ipc.h"

#define KEYD_PROVIDER_NAME "redoubt-keyd"

/*
 * Registers and loads the provider next to "default" and makes "default" the preferred
 * provider for everything else (otherwise our keymgmt would shadow certificate decoding).
 * Must run before the first SSL_CTX_new().  Returns 0 or -1.
 */
int keyd_provider_load(void);

/* A key handle for the certificate's public key, signing through keyd with key_id. */
EVP_PKEY *keyd_provider_key(X509 *leaf, const uint8_t key_id[IPC_KEY_ID_LEN]);

#endif
