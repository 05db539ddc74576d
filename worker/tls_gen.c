/*
 * A certificate generation as the worker holds it: the chain, the CA store with its CRLs,
 * and a key handle that signs through keyd.  Built only from public material keyd sent.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "keyd/keystore.h"
#include "worker/keyd_provider.h"
#include "worker/worker.h"

void
tls_gen_ref(struct tls_gen *g)
{
	g->refs++;
}

void
tls_gen_unref(struct tls_gen *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	X509_free(g->leaf);
	sk_X509_pop_free(g->extra, X509_free);
	EVP_PKEY_free(g->key);
	X509_STORE_free(g->ca);
	free(g);
}

static BIO *
tls_gen_bio(const char *pem, size_t len)
{
	return BIO_new_mem_buf(pem, (int)len);
}

static int
tls_gen_chain(struct tls_gen *g, const char *pem, size_t len)
{
	BIO *b = tls_gen_bio(pem, len);
	X509 *x;

	if (b == NULL)
		return -1;
	g->extra = sk_X509_new_null();
	g->leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
	while (g->leaf != NULL && g->extra != NULL &&
	    (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(g->extra, x)) {
			X509_free(x);
			break;
		}
	ERR_clear_error();   /* the loop ends on "no start line" */
	BIO_free(b);
	return g->leaf != NULL && g->extra != NULL ? 0 : -1;
}

/*
 * The trust anchors and CRLs keyd sent, as a store; with a CRL, the leaf's issuer must have a
 * current CRL in it (X509_V_FLAG_CRL_CHECK).  *out stays NULL when there is no CA.
 */
int
tls_trust_store(const char *ca, size_t ca_len, const char *crl, size_t crl_len,
    X509_STORE **out)
{
	STACK_OF(X509_INFO) *infos;
	X509_STORE *st;
	BIO *b;
	int ncert = 0, has_crl = 0;

	*out = NULL;
	if (ca_len == 0)
		return 0;
	if ((st = X509_STORE_new()) == NULL)
		return -1;
	for (int pass = 0; pass < 2; pass++) {
		const char *pem = pass == 0 ? ca : crl;
		size_t len = pass == 0 ? ca_len : crl_len;
		if (len == 0)
			continue;
		if ((b = tls_gen_bio(pem, len)) == NULL)
			goto fail;
		infos = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
		BIO_free(b);
		if (infos == NULL)
			goto fail;
		for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
			X509_INFO *xi = sk_X509_INFO_value(infos, i);
			if (pass == 0 && xi->x509 != NULL) {
				if (!X509_STORE_add_cert(st, xi->x509))
					ERR_clear_error();  /* a duplicate in the bundle */
				ncert++;
			}
			if (pass == 1 && xi->crl != NULL && X509_STORE_add_crl(st, xi->crl))
				has_crl = 1;
		}
		sk_X509_INFO_pop_free(infos, X509_INFO_free);
	}
	if (has_crl)
		X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
	if (ncert == 0)
		goto fail;
	*out = st;
	return 0;
fail:
	X509_STORE_free(st);
	return -1;
}

static int
tls_gen_store(struct tls_gen *g, const char *ca, size_t ca_len, const char *crl,
    size_t crl_len)
{
	if (tls_trust_store(ca, ca_len, crl, crl_len, &g->ca) == -1)
		return -1;
	g->has_crl = g->ca != NULL && crl_len > 0;
	return 0;
}

struct tls_gen *
tls_gen_new(uint16_t identity, const struct ipc_generation *m, const char *chain,
    size_t chain_len, const char *ca, size_t ca_len, const char *crl, size_t crl_len)
{
	struct tls_gen *g = calloc(1, sizeof(*g));
	uint8_t id[IPC_KEY_ID_LEN];

	if (g == NULL)
		return NULL;
	g->refs = 1;
	g->identity = identity;
	g->generation = m->generation;
	g->key_type = (enum ipc_key_type)m->key_type;
	memcpy(g->key_id, m->key_id, IPC_KEY_ID_LEN);
	memcpy(g->digest, m->digest, sizeof(g->digest));
	if (tls_gen_chain(g, chain, chain_len) == -1) {
		log_warnx("identity %s: certificate chain from keyd does not parse", m->name);
		goto fail;
	}
	/* The worker computes the key id itself: keyd and the certificate must agree. */
	if (keyid_of_cert(g->leaf, id) == -1 ||
	    CRYPTO_memcmp(id, m->key_id, IPC_KEY_ID_LEN) != 0) {
		log_warnx("identity %s: key id from keyd does not match its certificate", m->name);
		goto fail;
	}
	if (tls_gen_store(g, ca, ca_len, crl, crl_len) == -1) {
		log_ssl_errors("tls_gen");
		log_warnx("identity %s: CA bundle or CRL from keyd does not parse", m->name);
		goto fail;
	}
	g->key = keyd_provider_key(g->leaf, g->key_id);
	if (g->key == NULL) {
		log_warnx("identity %s: cannot make a keyd key handle", m->name);
		goto fail;
	}
	return g;
fail:
	tls_gen_unref(g);
	return NULL;
}
