/*
 * Making keys and X.509 certificates in-process, for `redoubt cert dev` and for tests that need
 * a throw-away CA.  Nothing here is meant for production PKI: there is no CSR, no policy, no
 * revocation; the caller decides names and lifetimes.
 *
 * Errors are logged (OpenSSL's queue included) and reported as NULL / -1.
 */
#ifndef REDOUBT_X509_MAKE_H
#define REDOUBT_X509_MAKE_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define X509_MAKE_DAYS_MAX     7300  /* days of validity; 20 years covers a 2 x 3650-day dev CA */
#define X509_MAKE_CN_MAX       64    /* characters in a CN (RFC 5280 ub-common-name) */
#define X509_MAKE_DNSNAME_MAX  253   /* characters in a DNS name (RFC 1035, without the root dot) */
#define X509_MAKE_SKEW_SECS    300   /* notBefore lies this far in the past, for clock skew */

enum x509_make_keytype {
	X509_MAKE_P256 = 0,
	X509_MAKE_P384,
	X509_MAKE_RSA2048,
	X509_MAKE_RSA3072,
	X509_MAKE_RSA4096,
};

/* What a certificate is for; decides basicConstraints, keyUsage and extendedKeyUsage. */
enum x509_make_role {
	X509_MAKE_ROLE_CA = 0,     /* CA:TRUE, keyCertSign + cRLSign */
	X509_MAKE_ROLE_NODE,       /* serverAuth + clientAuth: a node both accepts and originates */
	X509_MAKE_ROLE_CLIENT,     /* clientAuth only */
};

struct x509_make_req {
	enum x509_make_role  xr_role;
	const char          *xr_cn;        /* subject CN, at most X509_MAKE_CN_MAX characters */
	const char *const   *xr_names;     /* subjectAltName: IP literal -> IP SAN, else DNS SAN */
	size_t               xr_nnames;    /* may be 0 (for a CA) */
	long                 xr_days;      /* 1 .. X509_MAKE_DAYS_MAX */
	EVP_PKEY            *xr_key;       /* the subject's key (its public half goes in) */
	X509                *xr_issuer;    /* NULL: self-signed with xr_key */
	EVP_PKEY            *xr_issuer_key;/* signs when xr_issuer != NULL */
};

/* "p256", "p384", "rsa2048", "rsa3072", "rsa4096" -> 0, else -1. */
int         x509_make_keytype_parse(const char *s, enum x509_make_keytype *out);
const char *x509_make_keytype_name(enum x509_make_keytype t);

/* A fresh private key of the given type, or NULL. */
EVP_PKEY   *x509_make_key(enum x509_make_keytype t);

/* 1 if s is an IPv4 or IPv6 literal (it would become an IP SAN), else 0. */
int         x509_make_name_is_ip(const char *s);

/*
 * 1 if s may go into a certificate as a name: an IP literal, or a DNS name of LDH labels
 * (a leading "*." wildcard allowed), at most X509_MAKE_DNSNAME_MAX characters.  Anything
 * else (spaces, commas, control characters) is refused rather than escaped.
 */
int         x509_make_name_valid(const char *s);

/* A signed certificate as described, or NULL. */
X509       *x509_make_cert(const struct x509_make_req *req);

#endif
