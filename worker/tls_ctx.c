/*
 * TLS contexts: one per listener (server) or connector (client) per certificate generation.
 * Defaults: TLS 1.2+, AEAD suites with forward secrecy, no renegotiation, no compression,
 * stateless tickets with keys from keyd, and only the signature schemes keyd will sign.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/fips.h"
#include "common/log.h"
#include "worker/conn.h"
#include "worker/connector.h"
#include "worker/worker.h"

#define TLS_VERIFY_DEPTH 8   /* leaf + intermediates; deeper chains are not a Redis reality */
#define TLS_TICKETS      1   /* TLS 1.3 tickets per handshake: one resumes one reconnect */
/*
 * A ticket's key encrypts for one ticket-key-lifetime and decrypts for one more: sessions are
 * worth resuming for that long and no longer.
 */
#define TLS_SESSION_LIFETIMES 2
#define TLS_SESSION_MAX_S     604800   /* RFC 8446 4.6.1: a ticket lives at most 7 days */

/* The schemes keyd signs for each key type (keyd/sign_policy.c enforces the same). */
static const char *
tls_ctx_sigalgs(enum ipc_key_type t)
{
	switch (t) {
	case IPC_KEY_EC_P256:
		return "ecdsa_secp256r1_sha256";
	case IPC_KEY_EC_P384:
		return "ecdsa_secp384r1_sha384";
	case IPC_KEY_RSA:
		return "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:"
		    "rsa_pkcs1_sha256:rsa_pkcs1_sha384:rsa_pkcs1_sha512";
	default:
		return NULL;
	}
}

/* What we accept from peers that authenticate to us. */
#define TLS_PEER_SIGALGS "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:ecdsa_secp521r1_sha512:" \
	"ed25519:rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:" \
	"rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:" \
	"rsa_pkcs1_sha256:rsa_pkcs1_sha384:rsa_pkcs1_sha512"
/* fips = yes: without Ed25519, which OpenSSL 3.0's FIPS provider still offers (docs/fips.md). */
#define TLS_PEER_SIGALGS_FIPS "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:" \
	"ecdsa_secp521r1_sha512:rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:" \
	"rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:" \
	"rsa_pkcs1_sha256:rsa_pkcs1_sha384:rsa_pkcs1_sha512"

static int
tls_ticket_cb(SSL *s, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	const struct ticket_key *k;
	OSSL_PARAM params[3];
	int slot;

	if (enc) {
		k = &wk->tickets[0];
		if (!k->valid)
			return 0;          /* no key from keyd yet: issue no ticket */
		if (RAND_bytes(iv, 16) <= 0)
			return -1;
		memcpy(name, k->name, IPC_TICKET_NAME_LEN);
	} else {
		for (slot = 0; slot < 2; slot++)
			if (wk->tickets[slot].valid &&
			    CRYPTO_memcmp(name, wk->tickets[slot].name, IPC_TICKET_NAME_LEN) == 0)
				break;
		if (slot == 2)
			return 0;          /* unknown or expired key: full handshake */
		k = &wk->tickets[slot];
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
	    IPC_TICKET_HMAC_LEN);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (!EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc) ||
	    !EVP_MAC_CTX_set_params(hctx, params))
		return -1;
	/*
	 * 2 = "valid, and issue a new ticket".  Always: after a TLS 1.3 resumption OpenSSL
	 * otherwise sends nothing after the client's Finished, and a client whose first
	 * request waits behind Nagle for that ACK stalls for the peer's delayed-ACK timer
	 * (~40 ms per connection, measured).  A fresh ticket also keeps clients off old keys.
	 */
	return 2;
}

static int
tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct wk_listener *l = arg;
	unsigned char *sel = NULL;

	if (SSL_select_next_proto(&sel, outlen, l->alpn_wire, (unsigned int)l->alpn_wire_len,
	    in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;   /* no common protocol: the default route */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int
tls_ctx_common(SSL_CTX *ctx, const struct tls_params *tp, struct tls_gen *g, const char *who)
{
	const char *sigalgs = tls_ctx_sigalgs(g->key_type);

	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ASYNC | SSL_MODE_RELEASE_BUFFERS |
	    SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_async_callback(ctx, conn_async_wake);
	/* Whole records (or several) per read(2), instead of a 5-byte header read first. */
	SSL_CTX_set_read_ahead(ctx, 1);
	if (!SSL_CTX_set_min_proto_version(ctx, tp->proto_min) ||
	    !SSL_CTX_set_max_proto_version(ctx, tp->proto_max)) {
		log_warnx("%s: TLS protocol range not supported", who);
		return -1;
	}
	if ((tp->ciphers[0] && !SSL_CTX_set_cipher_list(ctx, tp->ciphers)) ||
	    (tp->ciphersuites[0] && !SSL_CTX_set_ciphersuites(ctx, tp->ciphersuites)) ||
	    (tp->groups[0] && !SSL_CTX_set1_groups_list(ctx, tp->groups))) {
		log_ssl_errors(who);
		log_warnx("%s: tls-ciphers, tls-ciphersuites or tls-groups not accepted", who);
		return -1;
	}
	/* Certificate first, then key, then the check: see notes §3.1 (silent key drop). */
	if (!SSL_CTX_use_certificate(ctx, g->leaf) || !SSL_CTX_set1_chain(ctx, g->extra) ||
	    !SSL_CTX_use_PrivateKey(ctx, g->key) || !SSL_CTX_check_private_key(ctx) ||
	    sigalgs == NULL || !SSL_CTX_set1_sigalgs_list(ctx, sigalgs) ||
	    !SSL_CTX_set1_client_sigalgs_list(ctx, fips_active() ? TLS_PEER_SIGALGS_FIPS :
	    TLS_PEER_SIGALGS)) {
		log_ssl_errors(who);
		log_warnx("%s: certificate or key handle not usable", who);
		return -1;
	}
	SSL_CTX_set_verify_depth(ctx, TLS_VERIFY_DEPTH);
	return 0;
}

/*
 * store: the section's own CA bundle and CRL when it has them (wk_trust), else those of the
 * identity generation.
 */
static int
tls_ctx_trust(SSL_CTX *ctx, X509_STORE *store, enum tls_mode mode, int server, const char *who)
{
	if (mode == TLS_MODE_REQUIRE) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return 0;
	}
	if (store == NULL) {
		log_warnx("%s: tls-mode %s needs a CA, and keyd sent none", who, tls_mode_name(mode));
		return -1;
	}
	SSL_CTX_set1_cert_store(ctx, store);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
	    conn_verify_cb);
	if (server) {
		/* Tell clients which CAs we accept, so they pick the right certificate. */
		STACK_OF(X509) *certs = X509_STORE_get1_all_certs(store);
		STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
		for (int i = 0; certs != NULL && names != NULL && i < sk_X509_num(certs); i++) {
			X509_NAME *n = X509_NAME_dup(X509_get_subject_name(sk_X509_value(certs, i)));
			if (n != NULL && !sk_X509_NAME_push(names, n))
				X509_NAME_free(n);
		}
		sk_X509_pop_free(certs, X509_free);
		if (names != NULL)
			SSL_CTX_set_client_CA_list(ctx, names);
	}
	return 0;
}

SSL_CTX *
tls_ctx_listener(const struct config *cfg, struct wk_listener *l, struct tls_gen *g)
{
	const struct config_listener *lc = l->cfg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	unsigned char sid[32];
	char who[96];
	EVP_MD_CTX *md;

	snprintf(who, sizeof(who), "listener %s", lc->name);
	if (ctx == NULL || tls_ctx_common(ctx, &lc->tls, g, who) == -1 ||
	    tls_ctx_trust(ctx, wk_trust_own(lc->ca, lc->crl) ? l->trust.store : g->ca, lc->mode,
	    1, who) == -1)
		goto fail;
	/*
	 * Sessions resume only on the listener and certificate generation that made them, so
	 * a ticket cannot carry a client past another listener's rules or past a rotation
	 * that changed the CA or CRL (every change of a CA or CRL is a new generation): a
	 * client revoked by the new CRL cannot resume a session it made before.  Resumption
	 * works across workers (they share the ticket keys and number generations alike), and
	 * the first handshake after a rotation is a full one.
	 */
	md = EVP_MD_CTX_new();
	if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(md, lc->name, strlen(lc->name)) ||
	    !EVP_DigestUpdate(md, &g->generation, sizeof(g->generation)) ||
	    !EVP_DigestFinal_ex(md, sid, NULL) ||
	    !SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid))) {
		EVP_MD_CTX_free(md);
		goto fail;
	}
	EVP_MD_CTX_free(md);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, (long)cfg->ticket_key_lifetime * TLS_SESSION_LIFETIMES <
	    TLS_SESSION_MAX_S ? (long)cfg->ticket_key_lifetime * TLS_SESSION_LIFETIMES :
	    TLS_SESSION_MAX_S);
	SSL_CTX_set_num_tickets(ctx, TLS_TICKETS);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
	if (l->alpn_wire_len > 0)
		SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, l);
	return ctx;
fail:
	log_ssl_errors(who);
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *
tls_ctx_connector(const struct config *cfg, struct wk_connector *k, struct tls_gen *g)
{
	const struct config_connector *kc = k->cfg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char who[96];

	snprintf(who, sizeof(who), "connector %s", kc->name);
	if (ctx == NULL || tls_ctx_common(ctx, &kc->tls, g, who) == -1 ||
	    tls_ctx_trust(ctx, wk_trust_own(kc->ca, kc->crl) ? k->trust.store : g->ca, kc->mode,
	    0, who) == -1)
		goto fail;
	if (kc->alpn[0] != '\0') {
		unsigned char wire[33];
		size_t n = strlen(kc->alpn);
		wire[0] = (unsigned char)n;
		memcpy(wire + 1, kc->alpn, n);
		if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned int)n + 1) != 0)
			goto fail;
	}
	/* One session per peer, kept by connector.c: a reconnect resumes without keyd. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, connector_session_new);
	return ctx;
fail:
	log_ssl_errors(who);
	SSL_CTX_free(ctx);
	return NULL;
}
