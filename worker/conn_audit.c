/*
 * Connection audit events: who (peer certificate), what, where from, outcome and reason,
 * TLS parameters, bytes and duration.  Field names are documented in docs/audit.md.
 */
#include "worker/conn_audit.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "audit/events.h"
#include "common/log.h"
#include "policy/identity.h"
#include "worker/conn.h"
#include "worker/connector.h"
#include "worker/keyd_client.h"
#include "worker/worker.h"

#define AUDIT_FIELD_MAX 200   /* characters kept of a subject or SAN list: IPC_AUDIT_MAX bounds a record */

static const char *
conn_audit_where(const struct conn *c)
{
	return c->listener != NULL ? c->listener->cfg->name : c->connector->cfg->name;
}

/*
 * peer is whoever connected to us: a client, or for a connector the local redis-server.
 * A connector's records also name the remote end it dialled (PCI DSS 10.2.2: the
 * destination of an outbound connection is part of "where").
 */
static json_t *
conn_audit_base(const struct conn *c)
{
	json_t *o = json_pack("{s:I, s:s, s:s, s:s}", "conn", (json_int_t)c->id,
	    c->listener != NULL ? "listener" : "connector", conn_audit_where(c),
	    "peer", c->peer_str, "direction", c->listener != NULL ? "inbound" : "outbound");

	if (o != NULL && c->connector != NULL && c->kpeer != NULL)
		json_object_set_new(o, "dialled", json_string(c->kpeer->name));
	return o;
}

static void
conn_audit_send(uint16_t event, json_t *obj)
{
	char buf[IPC_AUDIT_MAX + 1];
	size_t n;

	if (obj == NULL)
		return;
	n = json_dumpb(obj, buf, sizeof(buf), JSON_COMPACT);
	json_decref(obj);
	if (n == 0 || n > IPC_AUDIT_MAX) {
		log_warnx("audit: %s event too large (%zu bytes), dropped",
		    audit_event_name(event), n);
		return;
	}
	keyd_client_audit(event, buf, n);
}

static void
conn_audit_set_str(json_t *o, const char *k, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return;
	json_object_set_new(o, k, json_stringn(v, strnlen(v, AUDIT_FIELD_MAX)));
}

void
conn_audit_accepted(struct conn *c)
{
	conn_audit_send(AUDIT_CONN_ACCEPTED, conn_audit_base(c));
}

static void
conn_audit_peer_cert(json_t *o, X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char buf[512], *hex;
	BIGNUM *bn;

	X509_NAME_oneline(X509_get_subject_name(x), buf, sizeof(buf));
	conn_audit_set_str(o, "peer_subject", buf);
	identity_describe(x, buf, sizeof(buf));
	conn_audit_set_str(o, "peer_identity", buf);
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	if (bn != NULL && (hex = BN_bn2hex(bn)) != NULL) {
		conn_audit_set_str(o, "peer_serial", hex);
		OPENSSL_free(hex);
	}
	BN_free(bn);
	if (X509_digest(x, EVP_sha256(), md, &mdlen) && mdlen == 32) {
		for (unsigned int i = 0; i < mdlen; i++)
			snprintf(buf + (size_t)i * 2, 3, "%02x", md[i]);
		json_object_set_new(o, "peer_sha256", json_string(buf));
	}
}

static const char *
conn_audit_mode(const struct conn *c)
{
	return tls_mode_name(c->listener != NULL ? c->listener->cfg->mode :
	    c->connector->cfg->mode);
}

void
conn_audit_handshake(struct conn *c, int ok, const char *reason)
{
	json_t *o = conn_audit_base(c);
	SSL *ssl = c->tls != NULL ? c->tls->ssl : NULL;

	if (o == NULL)
		return;
	json_object_set_new(o, "outcome", json_string(ok ? "success" : "failure"));
	conn_audit_set_str(o, "reason", reason);
	json_object_set_new(o, "tls_mode", json_string(conn_audit_mode(c)));
	if (c->gen != NULL)
		json_object_set_new(o, "generation", json_integer(c->gen->generation));
	/* A handshake that failed early (a truncated ClientHello) has no session to ask about. */
	if (ssl != NULL && SSL_get_session(ssl) != NULL) {
		const unsigned char *alpn = NULL;
		unsigned int alpnlen = 0;
		X509 *peer = SSL_get0_peer_certificate(ssl);
		char proto[64];

		if (ok) {
			int group = SSL_get_negotiated_group(ssl);
			json_object_set_new(o, "tls_version", json_string(SSL_get_version(ssl)));
			conn_audit_set_str(o, "cipher", SSL_get_cipher_name(ssl));
			if (group != 0)
				conn_audit_set_str(o, "group", SSL_group_to_name(ssl, group));
		}
		conn_audit_set_str(o, "sni", SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
		SSL_get0_alpn_selected(ssl, &alpn, &alpnlen);
		if (alpn != NULL && alpnlen < sizeof(proto)) {
			memcpy(proto, alpn, alpnlen);
			proto[alpnlen] = '\0';
			conn_audit_set_str(o, "alpn", proto);
		}
		if (peer != NULL)
			conn_audit_peer_cert(o, peer);
	}
	conn_audit_send(AUDIT_HANDSHAKE, o);
}

void
conn_audit_closed(struct conn *c)
{
	json_t *o = conn_audit_base(c);
	const char *by;

	if (o == NULL)
		return;
	switch (c->end) {
	case END_CLIENT_CLOSED:
	case END_CLIENT_ERROR:
		by = "client";
		break;
	case END_BACKEND_CLOSED:
	case END_BACKEND_ERROR:
	case END_BACKEND_UNAVAILABLE:
		by = "backend";
		break;
	default:
		by = "redoubt";
		break;
	}
	json_object_set_new(o, "outcome", json_string(c->end == END_CLIENT_CLOSED ||
	    c->end == END_BACKEND_CLOSED ? "success" : "failure"));
	json_object_set_new(o, "reason", json_string(conn_end_name(c->end)));
	conn_audit_set_str(o, "detail", c->end_detail);
	json_object_set_new(o, "closed_by", json_string(by));
	json_object_set_new(o, "bytes_in", json_integer((json_int_t)c->client.bytes_in));
	json_object_set_new(o, "bytes_out", json_integer((json_int_t)c->client.bytes_out));
	json_object_set_new(o, "duration_ms",
	    json_integer((json_int_t)(wk->loop.now_ms - c->started_ms)));
	conn_audit_send(AUDIT_CONN_CLOSED, o);
}

void
conn_audit_limit(const char *where, const char *peer, const char *limit)
{
	conn_audit_send(AUDIT_LIMIT_HIT, json_pack("{s:s, s:s, s:s, s:s, s:s}", "listener", where,
	    "peer", peer, "limit", limit, "outcome", "failure", "reason", limit));
}
