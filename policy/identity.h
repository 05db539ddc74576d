/*
 * Identity rules: does a peer certificate carry one of the identities an allow list names?
 * dns: matches a SAN dNSName (case-insensitive; "*.example.com" in the allow list matches
 * exactly one leftmost label), ip: a SAN iPAddress, uri: a SAN URI exactly, cn: the
 * subject's commonName exactly.  Wildcards in the certificate itself are not honoured:
 * an allow list names clients, it does not trust them to name themselves broadly.
 */
#ifndef REDOUBT_IDENTITY_H
#define REDOUBT_IDENTITY_H

#include <stddef.h>

#include <openssl/x509.h>

#include "policy/config.h"

/* 1 when cert matches an entry, 0 when not. */
int  identity_match(X509 *cert, const struct allow_entry *allow, size_t n);
/* One line naming what the certificate claims: "CN=app, DNS:app.example.com, URI:...". */
void identity_describe(X509 *cert, char *out, size_t outlen);
/* allow entry as written: "dns:app.example.com" */
void identity_entry_format(const struct allow_entry *e, char *out, size_t outlen);

#endif
