/*
 * What keyd sends a worker: for every identity, the trust material of each listener and
 * connector of it that has its own CA or CRL (chunks, then TRUST), its chain, CA bundle and
 * CRL in chunks, then the GENERATION that commits them (with a digest over all of it); the
 * session-ticket keys; and HELLO_OK once everything is out.  Public material and ticket keys
 * only.
 */
#include <sys/epoll.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "audit/events.h"
#include "common/log.h"
#include "keyd/keyd.h"

static int
keyd_publish_pem(struct keyd_worker *w, uint8_t scope, uint16_t index, uint32_t gen,
    uint8_t kind, const char *pem, size_t len)
{
	struct ipc_msg m;

	for (size_t off = 0; off < len; off += IPC_CHUNK_MAX) {
		size_t n = len - off < IPC_CHUNK_MAX ? len - off : IPC_CHUNK_MAX;
		ipc_msg_init(&m, IPC_PEM_CHUNK, 0);
		m.u.pem_chunk.identity = index;
		m.u.pem_chunk.scope = scope;
		m.u.pem_chunk.kind = kind;
		m.u.pem_chunk.generation = gen;
		m.u.pem_chunk.total = (uint32_t)len;
		m.u.pem_chunk.offset = (uint32_t)off;
		m.u.pem_chunk.len = (uint16_t)n;
		memcpy(m.u.pem_chunk.data, pem + off, n);
		if (keyd_send(w, &m) == -1)
			return -1;
	}
	return 0;
}

/* A listener's or connector's own trust, for generation gen of its identity. */
static int
keyd_publish_trust(struct keyd_worker *w, uint8_t scope, uint16_t index, uint32_t gen,
    const struct keyd_trust *t)
{
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_TRUST, 0);
	m.u.trust.scope = scope;
	m.u.trust.index = index;
	m.u.trust.generation = gen;
	m.u.trust.ca_len = (uint32_t)t->ca_len;
	m.u.trust.crl_len = (uint32_t)t->crl_len;
	memcpy(m.u.trust.digest, t->digest, sizeof(m.u.trust.digest));
	if (keyd_publish_pem(w, scope, index, gen, IPC_PEM_CA, t->ca_pem, t->ca_len) == -1 ||
	    keyd_publish_pem(w, scope, index, gen, IPC_PEM_CRL, t->crl_pem, t->crl_len) == -1)
		return -1;
	return keyd_send(w, &m);
}

/* Sent before the identity's GENERATION, so the worker builds its contexts with them. */
static int
keyd_publish_trusts(struct keyd_worker *w, uint16_t index, uint32_t gen)
{
	const struct config *cfg = kd->cfg;

	for (size_t i = 0; i < cfg->n_listeners; i++)
		if ((size_t)cfg->listeners[i].identity == index && kd->listener_trust[i].used &&
		    keyd_publish_trust(w, IPC_SCOPE_LISTENER, (uint16_t)i, gen,
		    &kd->listener_trust[i]) == -1)
			return -1;
	for (size_t i = 0; i < cfg->n_connectors; i++)
		if ((size_t)cfg->connectors[i].identity == index && kd->connector_trust[i].used &&
		    keyd_publish_trust(w, IPC_SCOPE_CONNECTOR, (uint16_t)i, gen,
		    &kd->connector_trust[i]) == -1)
			return -1;
	return 0;
}

int
keyd_publish_identity(struct keyd_worker *w, uint16_t index)
{
	const struct keyd_ident *id = &kd->ids[index];
	const struct keyd_key *k = id->cur;
	struct ipc_msg m;
	EVP_MD_CTX *md;
	int ok;

	ipc_msg_init(&m, IPC_GENERATION, 0);
	m.u.generation.identity = index;
	m.u.generation.key_type = (uint16_t)k->type;
	m.u.generation.generation = k->generation;
	memcpy(m.u.generation.key_id, k->key_id, IPC_KEY_ID_LEN);
	m.u.generation.key_bits = k->bits;
	m.u.generation.chain_len = (uint32_t)k->chain_len;
	m.u.generation.ca_len = (uint32_t)k->ca_len;
	m.u.generation.crl_len = (uint32_t)k->crl_len;
	snprintf(m.u.generation.name, sizeof(m.u.generation.name), "%s", id->cfg->name);
	md = EVP_MD_CTX_new();
	ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	    EVP_DigestUpdate(md, k->chain_pem, k->chain_len) &&
	    (k->ca_len == 0 || EVP_DigestUpdate(md, k->ca_pem, k->ca_len)) &&
	    (k->crl_len == 0 || EVP_DigestUpdate(md, k->crl_pem, k->crl_len)) &&
	    EVP_DigestFinal_ex(md, m.u.generation.digest, NULL);
	EVP_MD_CTX_free(md);
	if (!ok)
		return -1;
	if (keyd_publish_trusts(w, index, k->generation) == -1 ||
	    keyd_publish_pem(w, IPC_SCOPE_IDENTITY, index, k->generation, IPC_PEM_CHAIN,
	    k->chain_pem, k->chain_len) == -1 ||
	    keyd_publish_pem(w, IPC_SCOPE_IDENTITY, index, k->generation, IPC_PEM_CA, k->ca_pem,
	    k->ca_len) == -1 ||
	    keyd_publish_pem(w, IPC_SCOPE_IDENTITY, index, k->generation, IPC_PEM_CRL,
	    k->crl_pem, k->crl_len) == -1)
		return -1;
	return keyd_send(w, &m);
}

int
keyd_publish_tickets(struct keyd_worker *w)
{
	struct ipc_msg m;
	int r;

	ipc_msg_init(&m, IPC_TICKET_KEYS, 0);
	m.u.ticket_keys = kd->tickets;
	r = keyd_send(w, &m);
	OPENSSL_cleanse(&m, sizeof(m));
	return r;
}

static int
keyd_ticket_new(struct ipc_ticket_slot *s)
{
	s->created = (uint64_t)time(NULL);
	return RAND_bytes(s->name, sizeof(s->name)) == 1 &&
	    RAND_priv_bytes(s->aes_key, sizeof(s->aes_key)) == 1 &&
	    RAND_priv_bytes(s->hmac_key, sizeof(s->hmac_key)) == 1 ? 0 : -1;
}

/*
 * Every lifetime the current key becomes the previous one (decrypt only) and the old
 * previous key is gone: a ticket resumes for at most two lifetimes.
 */
void
keyd_tickets_rotate_now(const char *source, long uid)
{
	struct ipc_msg m;
	json_t *f;
	uint64_t prev_age = (uint64_t)time(NULL) - kd->tickets.slot[0].created;

	kd->tickets.slot[1] = kd->tickets.slot[0];
	kd->tickets.count = 2;
	if (keyd_ticket_new(&kd->tickets.slot[0]) == -1)
		fatalx("keyd: no randomness for ticket keys");
	ipc_msg_init(&m, IPC_TICKET_KEYS, 0);
	m.u.ticket_keys = kd->tickets;
	keyd_broadcast(&m);
	OPENSSL_cleanse(&m, sizeof(m));
	f = json_pack("{s:s, s:I, s:I, s:I}", "source", source, "uid", (json_int_t)uid,
	    "lifetime_s", (json_int_t)kd->cfg->ticket_key_lifetime, "replaced_key_age_s",
	    (json_int_t)prev_age);
	keyd_audit(AUDIT_TICKET_ROTATION, AUDIT_WORKER_NONE, "success", source, f);
	json_decref(f);
	log_info("session-ticket keys rotated (%s; lifetime %u s)", source,
	    kd->cfg->ticket_key_lifetime);
	evloop_timer_after(&kd->loop, &kd->ticket_timer,
	    (uint64_t)kd->cfg->ticket_key_lifetime * 1000u);
}

static void
keyd_tickets_rotate(struct ev_timer *t)
{
	keyd_tickets_rotate_now("scheduled", -1);
}

void
keyd_tickets_init(void)
{
	memset(&kd->tickets, 0, sizeof(kd->tickets));
	kd->tickets.count = 1;
	kd->tickets.lifetime = kd->cfg->ticket_key_lifetime;
	if (keyd_ticket_new(&kd->tickets.slot[0]) == -1)
		fatalx("keyd: no randomness for ticket keys");
	evloop_timer_init(&kd->ticket_timer, keyd_tickets_rotate, NULL);
	evloop_timer_after(&kd->loop, &kd->ticket_timer,
	    (uint64_t)kd->cfg->ticket_key_lifetime * 1000u);
}
