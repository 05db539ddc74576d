/*
 * Peer certificate rules, applied in OpenSSL's verify callback: the chain verdict with a
 * reason a person can act on, then tls-mode verify-full's identity allow list (per ALPN route
 * on listeners) and a connector's `expect`.  The reason lands in c->refusal, from where the
 * log line and the audit record take it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "policy/identity.h"
#include "worker/conn.h"
#include "worker/connector.h"
#include "worker/worker.h"

/* A verification error in the words an operator looks for in the log. */
static const char *
conn_verify_reason(int err)
{
	switch (err) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
	case X509_V_ERR_EMAIL_MISMATCH:
		return "wrong host";
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		return "self-signed";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		return "unknown CA";
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "not yet valid";
	case X509_V_ERR_CERT_REVOKED:
		return "revoked";
	case X509_V_ERR_UNABLE_TO_GET_CRL:
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_CRL_NOT_YET_VALID:
		return "no current CRL";
	case X509_V_ERR_INVALID_PURPOSE:
		return "wrong key usage";
	default:
		return "untrusted";
	}
}

/*
 * Records why the peer is refused.  The buffer is allocated only now: refusals are rare
 * and every byte of struct conn counts per idle connection.  Without memory the refusal
 * stands and is logged as a plain handshake failure.
 */
static void __attribute__((format(printf, 2, 3)))
conn_refuse(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->refusal == NULL && (c->refusal = malloc(CONN_REFUSAL_MAX)) == NULL)
		return;
	va_start(ap, fmt);
	n = vsnprintf(c->refusal, CONN_REFUSAL_MAX, fmt, ap);
	va_end(ap);
	/* Truncating the certificate description is fine: the reason comes first. */
	if (n >= CONN_REFUSAL_MAX)
		memcpy(c->refusal + CONN_REFUSAL_MAX - 4, "...", 4);
}

int
conn_verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct conn *c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
	int depth = X509_STORE_CTX_get_error_depth(xs);
	X509 *cert = X509_STORE_CTX_get_current_cert(xs);
	char who[512];

	if (c == NULL)
		return 0;
	if (!preverify_ok) {
		int err = X509_STORE_CTX_get_error(xs);
		who[0] = '\0';
		if (cert != NULL)
			identity_describe(cert, who, sizeof(who));
		conn_refuse(c, "certificate verification failed at depth %d: %s: %s (%s%s%s)",
		    depth, conn_verify_reason(err), X509_verify_cert_error_string(err),
		    c->kpeer != NULL ? c->kpeer->name : "", c->kpeer != NULL ? " presented " : "",
		    who);
		return 0;
	}
	if (depth != 0 || cert == NULL)
		return 1;
	if (c->listener != NULL && c->listener->cfg->mode == TLS_MODE_VERIFY_FULL) {
		const struct config_listener *lc = c->listener->cfg;
		const struct allow_entry *allow = lc->allow;
		size_t n = lc->n_allow;
		const unsigned char *proto = NULL;
		unsigned int plen = 0;

		/* The ALPN protocol was chosen in the ClientHello, before this certificate arrived. */
		SSL_get0_alpn_selected(ssl, &proto, &plen);
		for (size_t i = 0; proto != NULL && i < lc->n_routes; i++)
			if (strlen(lc->routes[i].alpn) == plen &&
			    memcmp(lc->routes[i].alpn, proto, plen) == 0 && lc->routes[i].n_allow > 0) {
				allow = lc->routes[i].allow;
				n = lc->routes[i].n_allow;
			}
		if (!identity_match(cert, allow, n)) {
			identity_describe(cert, who, sizeof(who));
			conn_refuse(c, "client identity not allowed (%.200s)", who);
			X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	if (c->connector != NULL && c->connector->cfg->n_expect > 0 &&
	    !identity_match(cert, c->connector->cfg->expect, c->connector->cfg->n_expect)) {
		identity_describe(cert, who, sizeof(who));
		conn_refuse(c, "peer %s is not the expected identity (%s)",
		    c->kpeer != NULL ? c->kpeer->name : "", who);
		X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}
