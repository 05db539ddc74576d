/*
 * Trust material of the listeners and connectors that set their own `ca` or `crl`: keyd reads
 * the files (workers cannot open files), checks them, and publishes the effective CA bundle
 * and CRL — the section's own file where set, else its identity's — to the workers.
 *
 * A CRL must be one the CA bundle can use: issued (and signed) by one of its certificates,
 * and current.  With OpenSSL's X509_V_FLAG_CRL_CHECK a CRL that fails this would make every
 * peer certificate fail to verify, so it is refused here, before it replaces anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "keyd/keyd.h"

/* The parts of a listener or connector section this file needs. */
struct trust_section {
	const char *kind;             /* "listener", "connector" */
	const char *name;
	const char *ca, *crl;         /* its own files, "" when inherited */
	int         identity;
};

static int
trust_section(int scope, size_t index, struct trust_section *s)
{
	const struct config *cfg = kd->cfg;

	if (scope == IPC_SCOPE_LISTENER && index < cfg->n_listeners) {
		const struct config_listener *l = &cfg->listeners[index];
		*s = (struct trust_section){ "listener", l->name, l->ca, l->crl, l->identity };
		return 0;
	}
	if (scope == IPC_SCOPE_CONNECTOR && index < cfg->n_connectors) {
		const struct config_connector *k = &cfg->connectors[index];
		*s = (struct trust_section){ "connector", k->name, k->ca, k->crl, k->identity };
		return 0;
	}
	return -1;
}

int
keyd_trust_used(int scope, size_t index)
{
	struct trust_section s;

	return trust_section(scope, index, &s) == 0 && (s.ca[0] != '\0' || s.crl[0] != '\0');
}

void
keyd_trust_free(struct keyd_trust *t)
{
	free(t->ca_pem);
	free(t->crl_pem);
	memset(t, 0, sizeof(*t));
}

/* A public file, whole: regular, at most PEM_SIZE_MAX bytes, NUL-terminated. */
static int
trust_read(const char *label, const char *what, const char *path, char **out, size_t *outlen,
    char *err, size_t errlen)
{
	struct stat st;
	size_t off = 0;
	ssize_t n;
	char *buf = NULL;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		snprintf(err, errlen, "%s %s %s: cannot open: %s", label, what, path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (unsigned long long)st.st_size > PEM_SIZE_MAX) {
		snprintf(err, errlen, "%s %s %s: not a regular file of at most %u bytes", label,
		    what, path, PEM_SIZE_MAX);
		goto fail;
	}
	/* One spare byte for the NUL and one to notice a file that grew since fstat(). */
	if ((buf = malloc((size_t)st.st_size + 2)) == NULL) {
		snprintf(err, errlen, "%s %s %s: out of memory", label, what, path);
		goto fail;
	}
	for (;;) {
		n = read(fd, buf + off, (size_t)st.st_size + 1 - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(err, errlen, "%s %s %s: read: %s", label, what, path,
			    strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		off += (size_t)n;
		if (off == (size_t)st.st_size + 1) {
			snprintf(err, errlen, "%s %s %s: changed while being read", label, what, path);
			goto fail;
		}
	}
	buf[off] = '\0';
	close(fd);
	*out = buf;
	*outlen = off;
	return 0;
fail:
	free(buf);
	close(fd);
	return -1;
}

static int
trust_dup(const char *pem, size_t len, char **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	if (pem == NULL || len == 0)
		return 0;
	if ((*out = malloc(len + 1)) == NULL)
		return -1;
	memcpy(*out, pem, len);
	(*out)[len] = '\0';
	*outlen = len;
	return 0;
}

/* Every certificate and CRL of a PEM buffer; other blocks are skipped. */
static STACK_OF(X509_INFO) *
trust_parse(const char *pem, size_t len)
{
	STACK_OF(X509_INFO) *infos;
	BIO *b;

	if (pem == NULL || len == 0)
		return sk_X509_INFO_new_null();
	if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL)
		return NULL;
	infos = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
	BIO_free(b);
	return infos;
}

/* The CA bundle's certificate that issued and signed crl, or NULL. */
static X509 *
trust_crl_issuer(STACK_OF(X509_INFO) *cas, X509_CRL *crl)
{
	for (int i = 0; i < sk_X509_INFO_num(cas); i++) {
		X509 *x = sk_X509_INFO_value(cas, i)->x509;
		EVP_PKEY *pub;

		if (x == NULL || X509_NAME_cmp(X509_get_subject_name(x),
		    X509_CRL_get_issuer(crl)) != 0)
			continue;
		if ((pub = X509_get0_pubkey(x)) != NULL && X509_CRL_verify(crl, pub) == 1)
			return x;
	}
	ERR_clear_error();
	return NULL;
}

/* Both files parse; every CRL comes from the bundle and is current. */
static int
trust_check(const char *label, const char *ca_path, const char *crl_path,
    const struct keyd_trust *t, char *err, size_t errlen)
{
	STACK_OF(X509_INFO) *cas = trust_parse(t->ca_pem, t->ca_len);
	STACK_OF(X509_INFO) *crls = trust_parse(t->crl_pem, t->crl_len);
	int ncert = 0, ncrl = 0, rc = -1;

	ERR_clear_error();
	if (cas == NULL || crls == NULL) {
		snprintf(err, errlen, "%s: %s %s does not parse (truncated or corrupt PEM)", label,
		    cas == NULL ? "ca" : "crl", cas == NULL ? ca_path : crl_path);
		goto out;
	}
	for (int i = 0; i < sk_X509_INFO_num(cas); i++)
		ncert += sk_X509_INFO_value(cas, i)->x509 != NULL;
	if (t->ca_len > 0 && ncert == 0) {
		snprintf(err, errlen, "%s: ca %s holds no PEM certificate", label, ca_path);
		goto out;
	}
	for (int i = 0; i < sk_X509_INFO_num(crls); i++) {
		X509_CRL *crl = sk_X509_INFO_value(crls, i)->crl;
		const ASN1_TIME *next;

		if (crl == NULL)
			continue;
		ncrl++;
		if (trust_crl_issuer(cas, crl) == NULL) {
			snprintf(err, errlen, "%s: CRL %d in %s is not issued by a certificate of "
			    "ca %s: give the section the CRL of its own CA (crl = ...)", label, ncrl,
			    crl_path, ca_path[0] != '\0' ? ca_path : "(none)");
			goto out;
		}
		next = X509_CRL_get0_nextUpdate(crl);
		if (X509_cmp_current_time(X509_CRL_get0_lastUpdate(crl)) > 0) {
			snprintf(err, errlen, "%s: CRL %d in %s is not valid yet", label, ncrl,
			    crl_path);
			goto out;
		}
		if (next != NULL && X509_cmp_current_time(next) <= 0) {
			snprintf(err, errlen, "%s: CRL %d in %s has expired (nextUpdate passed): "
			    "publish a fresh CRL", label, ncrl, crl_path);
			goto out;
		}
	}
	if (t->crl_len > 0 && ncrl == 0) {
		snprintf(err, errlen, "%s: crl %s holds no PEM CRL", label, crl_path);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	sk_X509_INFO_pop_free(cas, X509_INFO_free);
	sk_X509_INFO_pop_free(crls, X509_INFO_free);
	return rc;
}

static int
trust_digest(struct keyd_trust *t)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	    (t->ca_len == 0 || EVP_DigestUpdate(md, t->ca_pem, t->ca_len)) &&
	    (t->crl_len == 0 || EVP_DigestUpdate(md, t->crl_pem, t->crl_len)) &&
	    EVP_DigestFinal_ex(md, t->digest, NULL);

	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

int
keyd_trust_load(int scope, size_t index, const struct keyd_key *idkey, struct keyd_trust *out,
    char *err, size_t errlen)
{
	struct trust_section s;
	char label[CONFIG_NAME_MAX + 16];
	const char *ca_path, *crl_path;

	memset(out, 0, sizeof(*out));
	if (errlen > 0)
		err[0] = '\0';
	if (trust_section(scope, index, &s) == -1) {
		snprintf(err, errlen, "keyd: no such listener or connector");
		return -1;
	}
	if (s.ca[0] == '\0' && s.crl[0] == '\0')
		return 0;
	out->used = 1;
	snprintf(label, sizeof(label), "[%s %s]", s.kind, s.name);
	ca_path = s.ca[0] != '\0' ? s.ca : kd->cfg->identities[s.identity].ca;
	crl_path = s.crl[0] != '\0' ? s.crl : kd->cfg->identities[s.identity].crl;
	if ((s.ca[0] != '\0' ?
	    trust_read(label, "ca", s.ca, &out->ca_pem, &out->ca_len, err, errlen) :
	    trust_dup(idkey->ca_pem, idkey->ca_len, &out->ca_pem, &out->ca_len)) == -1 ||
	    (s.crl[0] != '\0' ?
	    trust_read(label, "crl", s.crl, &out->crl_pem, &out->crl_len, err, errlen) :
	    trust_dup(idkey->crl_pem, idkey->crl_len, &out->crl_pem, &out->crl_len)) == -1) {
		if (err[0] == '\0')
			snprintf(err, errlen, "%s: out of memory", label);
		keyd_trust_free(out);
		return -1;
	}
	if (trust_check(label, ca_path, crl_path, out, err, errlen) == -1 ||
	    trust_digest(out) == -1) {
		if (err[0] == '\0')
			snprintf(err, errlen, "%s: cannot digest its trust material", label);
		keyd_trust_free(out);
		return -1;
	}
	return 0;
}
