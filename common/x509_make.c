/*
 * Keys and certificates made with OpenSSL 3.0's APIs (no openssl(1), no config files).
 *
 * Names go into subjectAltName as GENERAL_NAMEs built one by one rather than through an
 * "DNS:a,IP:b" configuration string: a name containing a comma could otherwise smuggle in a
 * second SAN.  The fixed extensions (basicConstraints, keyUsage, ...) do use configuration
 * strings, because their values are constants in this file.
 */
#include "common/x509_make.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/log.h"

#define X509_MAKE_SERIAL_BYTES 16   /* 128-bit serial: unguessable, within RFC 5280's 20 octets */
#define X509_MAKE_LABEL_MAX    63   /* characters in one DNS label (RFC 1035) */

struct x509_make_keyspec {
	const char *xk_name;    /* as given on the command line */
	const char *xk_alg;     /* EVP_PKEY_Q_keygen() algorithm */
	const char *xk_group;   /* EC group, or NULL for RSA */
	size_t      xk_bits;    /* RSA modulus bits, or 0 for EC */
};

static const struct x509_make_keyspec x509_make_keyspecs[] = {
	[X509_MAKE_P256]    = { "p256",    "EC",  "P-256", 0 },
	[X509_MAKE_P384]    = { "p384",    "EC",  "P-384", 0 },
	[X509_MAKE_RSA2048] = { "rsa2048", "RSA", NULL,    2048 },
	[X509_MAKE_RSA3072] = { "rsa3072", "RSA", NULL,    3072 },
	[X509_MAKE_RSA4096] = { "rsa4096", "RSA", NULL,    4096 },
};

#define X509_MAKE_NKEYSPECS (sizeof(x509_make_keyspecs) / sizeof(x509_make_keyspecs[0]))

int
x509_make_keytype_parse(const char *s, enum x509_make_keytype *out)
{
	for (size_t i = 0; i < X509_MAKE_NKEYSPECS; i++)
		if (strcmp(s, x509_make_keyspecs[i].xk_name) == 0) {
			*out = (enum x509_make_keytype)i;
			return 0;
		}
	return -1;
}

const char *
x509_make_keytype_name(enum x509_make_keytype t)
{
	if ((size_t)t >= X509_MAKE_NKEYSPECS)
		return "unknown";
	return x509_make_keyspecs[t].xk_name;
}

EVP_PKEY *
x509_make_key(enum x509_make_keytype t)
{
	const struct x509_make_keyspec *ks;
	EVP_PKEY *key;

	if ((size_t)t >= X509_MAKE_NKEYSPECS) {
		log_warnx("x509_make_key: key type %d out of range", (int)t);
		return NULL;
	}
	ks = &x509_make_keyspecs[t];
	if (ks->xk_group != NULL)
		key = EVP_PKEY_Q_keygen(NULL, NULL, ks->xk_alg, ks->xk_group);
	else
		key = EVP_PKEY_Q_keygen(NULL, NULL, ks->xk_alg, ks->xk_bits);
	if (key == NULL)
		log_ssl_errors("x509_make_key: key generation failed");
	return key;
}

int
x509_make_name_is_ip(const char *s)
{
	unsigned char addr[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

/* One DNS label: 1..63 letters, digits, '-' (not first or last) and '_' (docker-style names). */
static int
x509_make_label_valid(const char *s, size_t len)
{
	if (len == 0 || len > X509_MAKE_LABEL_MAX || s[0] == '-' || s[len - 1] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

/* A label of digits only: as the last label it means a mistyped IP address, not a host. */
static int
x509_make_label_numeric(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

int
x509_make_name_valid(const char *s)
{
	const char *label, *dot;

	if (x509_make_name_is_ip(s))
		return 1;
	if (strlen(s) > X509_MAKE_DNSNAME_MAX)
		return 0;
	/* A wildcard only as the whole leftmost label, the one form RFC 6125 clients agree on. */
	label = strncmp(s, "*.", 2) == 0 ? s + 2 : s;
	for (;;) {
		dot = strchr(label, '.');
		if (dot == NULL)
			break;
		if (!x509_make_label_valid(label, (size_t)(dot - label)))
			return 0;
		label = dot + 1;
	}
	return x509_make_label_valid(label, strlen(label)) &&
	    !x509_make_label_numeric(label, strlen(label));
}

/* A random positive 128-bit serial, so two certificates from one CA never share one. */
static int
x509_make_serial(X509 *x)
{
	unsigned char buf[X509_MAKE_SERIAL_BYTES];
	BIGNUM *bn = NULL;
	int ok = 0;

	if (RAND_bytes(buf, sizeof(buf)) != 1)
		goto out;
	buf[0] &= 0x7f;         /* DER INTEGER stays positive and at most 16 octets */
	buf[0] |= 0x40;         /* never zero, never short: the serial always has 127 bits */
	if ((bn = BN_bin2bn(buf, sizeof(buf), NULL)) == NULL)
		goto out;
	ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
out:
	BN_free(bn);
	if (!ok)
		log_ssl_errors("x509_make_serial");
	return ok ? 0 : -1;
}

/* notBefore a little in the past so a peer whose clock lags still accepts a fresh certificate. */
static int
x509_make_validity(X509 *x, long days)
{
	if (days < 1 || days > X509_MAKE_DAYS_MAX) {
		log_warnx("x509_make_validity: %ld days is outside 1..%d", days, X509_MAKE_DAYS_MAX);
		return -1;
	}
	if (X509_gmtime_adj(X509_getm_notBefore(x), -X509_MAKE_SKEW_SECS) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) == NULL) {
		log_ssl_errors("x509_make_validity");
		return -1;
	}
	return 0;
}

/* The subject is a single CN; the issuer is the CA's subject, or our own when self-signed. */
static int
x509_make_names(X509 *x, const char *cn, X509 *issuer)
{
	X509_NAME *name = X509_get_subject_name(x);

	if (strlen(cn) == 0 || strlen(cn) > X509_MAKE_CN_MAX) {
		log_warnx("x509_make_names: CN \"%s\" must have 1..%d characters", cn,
		    X509_MAKE_CN_MAX);
		return -1;
	}
	if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
	    (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(issuer != NULL ? issuer : x)) != 1) {
		log_ssl_errors("x509_make_names");
		return -1;
	}
	return 0;
}

/* One GENERAL_NAME: an IP literal becomes iPAddress (4 or 16 octets), anything else dNSName. */
static GENERAL_NAME *
x509_make_general_name(const char *s)
{
	unsigned char addr[sizeof(struct in6_addr)];
	GENERAL_NAME *gen;
	ASN1_STRING *str = NULL;
	int len = 0, type;

	if (inet_pton(AF_INET, s, addr) == 1)
		len = (int)sizeof(struct in_addr);
	else if (inet_pton(AF_INET6, s, addr) == 1)
		len = (int)sizeof(struct in6_addr);
	type = len > 0 ? GEN_IPADD : GEN_DNS;
	if ((gen = GENERAL_NAME_new()) == NULL)
		return NULL;
	str = type == GEN_IPADD ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
	if (str == NULL ||
	    (type == GEN_IPADD ? ASN1_STRING_set(str, addr, len) : ASN1_STRING_set(str, s, -1)) != 1) {
		ASN1_STRING_free(str);
		GENERAL_NAME_free(gen);
		return NULL;
	}
	GENERAL_NAME_set0_value(gen, type, str);
	return gen;
}

static int
x509_make_add_san(X509 *x, const char *const *names, size_t n)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gen;
	int ok = 0;

	if (n == 0)
		return 0;
	if ((gens = GENERAL_NAMES_new()) == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (!x509_make_name_valid(names[i])) {
			log_warnx("x509_make_add_san: \"%s\" is neither an IP address nor a DNS name",
			    names[i]);
			goto out;
		}
		if ((gen = x509_make_general_name(names[i])) == NULL)
			goto out;
		if (sk_GENERAL_NAME_push(gens, gen) == 0) {
			GENERAL_NAME_free(gen);
			goto out;
		}
	}
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
out:
	GENERAL_NAMES_free(gens);
	if (!ok)
		log_ssl_errors("x509_make_add_san");
	return ok ? 0 : -1;
}

static int
x509_make_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext;
	int ok;

	ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	if (!ok) {
		log_warnx("x509_make_add_ext: cannot add %s = %s", OBJ_nid2sn(nid), value);
		log_ssl_errors("x509_make_add_ext");
	}
	return ok ? 0 : -1;
}

/*
 * The extensions that say what the certificate may do.  keyEncipherment only on an RSA node
 * key: TLS 1.2 RSA key exchange needs it, ECDSA keys cannot encipher, and a client never does.
 */
static int
x509_make_add_role_exts(X509 *x, X509V3_CTX *ctx, enum x509_make_role role, EVP_PKEY *key)
{
	const char *bc, *ku, *eku;

	switch (role) {
	case X509_MAKE_ROLE_CA:
		/* pathlen:0: this CA signs leaves only, never another CA. */
		bc = "critical,CA:TRUE,pathlen:0";
		ku = "critical,keyCertSign,cRLSign";
		eku = NULL;
		break;
	case X509_MAKE_ROLE_NODE:
		bc = "critical,CA:FALSE";
		ku = EVP_PKEY_is_a(key, "RSA") ? "critical,digitalSignature,keyEncipherment" :
		    "critical,digitalSignature";
		eku = "serverAuth,clientAuth";
		break;
	case X509_MAKE_ROLE_CLIENT:
		bc = "critical,CA:FALSE";
		ku = "critical,digitalSignature";
		eku = "clientAuth";
		break;
	default:
		log_warnx("x509_make_add_role_exts: role %d out of range", (int)role);
		return -1;
	}
	if (x509_make_add_ext(x, ctx, NID_basic_constraints, bc) == -1 ||
	    x509_make_add_ext(x, ctx, NID_key_usage, ku) == -1 ||
	    (eku != NULL && x509_make_add_ext(x, ctx, NID_ext_key_usage, eku) == -1))
		return -1;
	return 0;
}

/* Identifiers let verifiers pick the right issuer when several dev CAs are in one bundle. */
static int
x509_make_add_key_ids(X509 *x, X509V3_CTX *ctx, int self_signed)
{
	if (x509_make_add_ext(x, ctx, NID_subject_key_identifier, "hash") == -1)
		return -1;
	if (!self_signed &&
	    x509_make_add_ext(x, ctx, NID_authority_key_identifier, "keyid:always") == -1)
		return -1;
	return 0;
}

X509 *
x509_make_cert(const struct x509_make_req *req)
{
	X509 *x, *issuer;
	EVP_PKEY *signer;
	X509V3_CTX ctx;

	if (req->xr_key == NULL || (req->xr_issuer != NULL && req->xr_issuer_key == NULL)) {
		log_warnx("x509_make_cert: a key is missing");
		return NULL;
	}
	if ((x = X509_new()) == NULL) {
		log_ssl_errors("x509_make_cert");
		return NULL;
	}
	issuer = req->xr_issuer != NULL ? req->xr_issuer : x;
	signer = req->xr_issuer != NULL ? req->xr_issuer_key : req->xr_key;
	if (X509_set_version(x, X509_VERSION_3) != 1 || x509_make_serial(x) == -1 ||
	    x509_make_validity(x, req->xr_days) == -1 ||
	    x509_make_names(x, req->xr_cn, req->xr_issuer) == -1 ||
	    X509_set_pubkey(x, req->xr_key) != 1)
		goto fail;
	/* The context needs the subject's public key (SKID) and the issuer's SKID (AKID). */
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	if (x509_make_add_role_exts(x, &ctx, req->xr_role, req->xr_key) == -1 ||
	    x509_make_add_key_ids(x, &ctx, req->xr_issuer == NULL) == -1 ||
	    x509_make_add_san(x, req->xr_names, req->xr_nnames) == -1)
		goto fail;
	/* SHA-256 whatever the key: ECDSA-with-SHA256 or sha256WithRSAEncryption. */
	if (X509_sign(x, signer, EVP_sha256()) <= 0)
		goto fail;
	return x;
fail:
	log_ssl_errors("x509_make_cert");
	log_warnx("x509_make_cert: cannot make the certificate for \"%s\"", req->xr_cn);
	X509_free(x);
	return NULL;
}
