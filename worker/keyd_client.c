/*
 * The worker's end of the keyd channel.  Requests carry ids and deadlines (relayd's
 * pattern: a reply that arrives after its deadline is "obsolete" and dropped).  When the
 * channel closes (keyd died), every pending request fails at once and new ones fail
 * immediately until the supervisor hands over a fresh channel.
 */
#include "worker/keyd_client.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/limits.h"
#include "common/log.h"
#include "worker/worker.h"

TAILQ_HEAD(keyd_sign_list, keyd_sign);

static struct {
	struct worker        *w;
	struct ipc_chan       chan;
	struct ev_io          io;
	int                   attached;
	int                   ready;       /* HELLO_OK received */
	uint64_t              next_id;
	unsigned              inflight;
	struct keyd_sign_list pending;
	struct keyd_client_stats st;
} kc = { .chan = { .fd = -1 } };

static void kc_detach(const char *why);

uint64_t
keyd_client_iterations(void)
{
	return kc.w->loop.iterations;
}

const struct keyd_client_stats *
keyd_client_stats(void)
{
	return &kc.st;
}

int
keyd_client_ready(void)
{
	return kc.ready;
}

/* ---------- signing ---------- */

static void
kc_complete(struct keyd_sign *s, enum keyd_sign_state st, uint16_t err)
{
	TAILQ_REMOVE(&kc.pending, s, entry);
	kc.inflight--;
	evloop_timer_cancel(&kc.w->loop, &s->deadline);
	s->state = st;
	s->err = err;
	if (st == KSIGN_FAILED)
		kc.st.sign_failures++;
	if (s->wake != NULL)
		s->wake(s->wake_arg);
}

static void
kc_deadline_cb(struct ev_timer *t)
{
	struct keyd_sign *s = t->arg;

	kc.st.sign_timeouts++;
	log_warnx("keyd: signature request %llu timed out after %u ms",
	    (unsigned long long)s->req_id, kc.w->cfg->keyd_timeout_ms);
	kc_complete(s, KSIGN_FAILED, IPC_ERR_TIMEOUT);
}

static void
kc_update_interest(void)
{
	uint32_t ev = EPOLLIN | (ipc_chan_has_queued(&kc.chan) ? EPOLLOUT : 0);

	if (kc.attached && evloop_mod(&kc.w->loop, &kc.io, ev) == -1)
		log_warn("keyd: epoll_ctl(MOD)");
}

static int
kc_send(const struct ipc_msg *m)
{
	int had = ipc_chan_has_queued(&kc.chan);
	enum ipc_io r = ipc_chan_send(&kc.chan, m, -1);

	if (r != IPC_IO_OK)
		return -1;
	if (!had && ipc_chan_has_queued(&kc.chan))
		kc_update_interest();
	return 0;
}

void
keyd_sign_start(struct keyd_sign *s, const uint8_t key_id[IPC_KEY_ID_LEN], uint16_t sigalg,
    const uint8_t *tbs, size_t tbs_len)
{
	struct ipc_msg m;

	s->state = KSIGN_FAILED;
	kc.st.signs++;
	evloop_timer_init(&s->deadline, kc_deadline_cb, s);
	if (!kc.ready) {
		s->err = IPC_ERR_UNAVAILABLE;
		kc.st.sign_failures++;
		return;
	}
	if (kc.inflight >= KEYD_INFLIGHT_MAX || tbs_len > IPC_TBS_MAX) {
		s->err = IPC_ERR_BUSY;
		kc.st.sign_failures++;
		return;
	}
	s->req_id = ++kc.next_id;
	ipc_msg_init(&m, IPC_SIGN, s->req_id);
	memcpy(m.u.sign.key_id, key_id, IPC_KEY_ID_LEN);
	m.u.sign.sigalg = sigalg;
	m.u.sign.tbs_len = (uint16_t)tbs_len;
	memcpy(m.u.sign.tbs, tbs, tbs_len);
	if (kc_send(&m) == -1) {
		s->err = IPC_ERR_UNAVAILABLE;
		kc.st.sign_failures++;
		return;
	}
	s->state = KSIGN_PENDING;
	TAILQ_INSERT_TAIL(&kc.pending, s, entry);
	kc.inflight++;
	evloop_timer_after(&kc.w->loop, &s->deadline, kc.w->cfg->keyd_timeout_ms);
}

void
keyd_sign_finish(struct keyd_sign *s)
{
	if (s->state == KSIGN_PENDING) {
		s->wake = NULL;
		kc_complete(s, KSIGN_FAILED, IPC_ERR_TIMEOUT);
	}
	evloop_timer_cancel(&kc.w->loop, &s->deadline);
}

static void kc_read_all(void);

void
keyd_sign_wait(struct keyd_sign *s)
{
	uint64_t deadline = evloop_clock_ms() + kc.w->cfg->keyd_timeout_ms;

	while (s->state == KSIGN_PENDING) {
		uint64_t now = evloop_clock_ms();
		struct pollfd pfd = { .fd = kc.chan.fd, .events = POLLIN };

		if (now >= deadline || kc.chan.fd < 0) {
			s->wake = NULL;
			kc_complete(s, KSIGN_FAILED, IPC_ERR_TIMEOUT);
			return;
		}
		(void)ipc_chan_flush(&kc.chan);
		if (poll(&pfd, 1, (int)(deadline - now)) > 0)
			kc_read_all();
	}
}

/* ---------- public material from keyd ---------- */

static void
kc_asm_reset(struct pem_asm *a)
{
	for (int k = 0; k < IPC_PEM_KIND_MAX; k++) {
		free(a->buf[k]);
		a->buf[k] = NULL;
		a->total[k] = a->got[k] = 0;
	}
	a->gen = 0;
}

/*
 * The trust of a listener or connector that has its own CA or CRL in the configuration
 * (keyd sends nothing for the others: a message for one is a protocol violation).
 */
static struct wk_trust *
kc_trust_target(uint8_t scope, uint16_t index)
{
	const struct config *cfg = kc.w->cfg;

	if (scope == IPC_SCOPE_LISTENER && index < cfg->n_listeners &&
	    wk_trust_own(cfg->listeners[index].ca, cfg->listeners[index].crl))
		return &kc.w->listeners[index].trust;
	if (scope == IPC_SCOPE_CONNECTOR && index < cfg->n_connectors &&
	    wk_trust_own(cfg->connectors[index].ca, cfg->connectors[index].crl))
		return &kc.w->connectors[index].trust;
	return NULL;
}

static int
kc_chunk(const struct ipc_pem_chunk *c)
{
	struct wk_trust *t;
	struct pem_asm *a;

	if (c->scope == IPC_SCOPE_IDENTITY) {
		if (c->identity >= kc.w->cfg->n_identities)
			return -1;
		a = &kc.w->ids[c->identity].pem;
	} else if ((t = kc_trust_target(c->scope, c->identity)) != NULL)
		a = &t->pem;
	else
		return -1;
	if (a->gen != c->generation) {
		kc_asm_reset(a);
		a->gen = c->generation;
	}
	if (a->buf[c->kind] == NULL) {
		if (c->offset != 0)
			return -1;
		a->buf[c->kind] = malloc(c->total + 1);
		if (a->buf[c->kind] == NULL)
			return -1;
		a->total[c->kind] = c->total;
	}
	/* In order, no gaps, no overlap, never past the announced total. */
	if (c->total != a->total[c->kind] || c->offset != a->got[c->kind] ||
	    c->len > c->total - c->offset)
		return -1;
	memcpy(a->buf[c->kind] + c->offset, c->data, c->len);
	a->got[c->kind] += c->len;
	a->buf[c->kind][a->got[c->kind]] = '\0';
	return 0;
}

/* Everything of generation gen arrived, in full, and hashes to digest. */
static int
kc_asm_check(const struct pem_asm *a, uint32_t gen, const int *kinds, const uint32_t *lens,
    size_t n, const uint8_t digest[32])
{
	unsigned char md[32];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

	for (size_t i = 0; i < n && ok; i++) {
		int k = kinds[i];
		uint32_t got = a->gen == gen ? a->got[k] : 0;
		if (got != lens[i] || (lens[i] > 0 && a->total[k] != lens[i]))
			ok = 0;
		else if (lens[i] > 0 && !EVP_DigestUpdate(ctx, a->buf[k], lens[i]))
			ok = 0;
	}
	if (ok && (!EVP_DigestFinal_ex(ctx, md, NULL) || CRYPTO_memcmp(md, digest, 32) != 0))
		ok = 0;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static int
kc_generation(const struct ipc_generation *g)
{
	static const int kinds[] = { IPC_PEM_CHAIN, IPC_PEM_CA, IPC_PEM_CRL };
	const uint32_t lens[] = { g->chain_len, g->ca_len, g->crl_len };
	struct wk_identity *id;
	struct tls_gen *tg;

	if (g->identity >= kc.w->cfg->n_identities)
		return -1;
	id = &kc.w->ids[g->identity];
	if (strcmp(id->cfg->name, g->name) != 0) {
		log_warnx("keyd: identity %u is '%s' here but '%s' in keyd", g->identity,
		    id->cfg->name, g->name);
		return -1;
	}
	if (kc_asm_check(&id->pem, g->generation, kinds, lens, 3, g->digest) == -1) {
		log_warnx("keyd: generation %u of identity %s arrived incomplete or altered",
		    g->generation, g->name);
		kc_asm_reset(&id->pem);
		return -1;
	}
	tg = tls_gen_new(g->identity, g, id->pem.buf[IPC_PEM_CHAIN], g->chain_len,
	    id->pem.buf[IPC_PEM_CA], g->ca_len, id->pem.buf[IPC_PEM_CRL], g->crl_len);
	kc_asm_reset(&id->pem);
	if (tg == NULL)
		return -1;
	worker_install_generation(g->identity, tg);
	return 0;
}

static int
kc_trust(const struct ipc_trust *m)
{
	static const int kinds[] = { IPC_PEM_CA, IPC_PEM_CRL };
	const uint32_t lens[] = { m->ca_len, m->crl_len };
	struct wk_trust *t = kc_trust_target(m->scope, m->index);
	X509_STORE *store;

	if (t == NULL)
		return -1;
	if (kc_asm_check(&t->pem, m->generation, kinds, lens, 2, m->digest) == -1) {
		log_warnx("keyd: CA/CRL of %s %u arrived incomplete or altered",
		    m->scope == IPC_SCOPE_LISTENER ? "listener" : "connector", m->index);
		kc_asm_reset(&t->pem);
		return -1;
	}
	if (tls_trust_store(t->pem.buf[IPC_PEM_CA], m->ca_len, t->pem.buf[IPC_PEM_CRL],
	    m->crl_len, &store) == -1) {
		log_ssl_errors("keyd trust");
		log_warnx("keyd: CA/CRL of %s %u does not parse",
		    m->scope == IPC_SCOPE_LISTENER ? "listener" : "connector", m->index);
		kc_asm_reset(&t->pem);
		return -1;
	}
	kc_asm_reset(&t->pem);
	worker_install_trust(t, m, store);
	return 0;
}

/* ---------- channel ---------- */

static void
kc_reply(const struct ipc_msg *m)
{
	struct keyd_sign *s;

	TAILQ_FOREACH(s, &kc.pending, entry)
		if (s->req_id == m->hdr.req_id)
			break;
	if (s == NULL) {
		kc.st.stale_replies++;   /* answered after its deadline: obsolete */
		return;
	}
	if (m->hdr.type == IPC_SIGN_OK) {
		s->sig_len = m->u.sign_ok.sig_len;
		memcpy(s->sig, m->u.sign_ok.sig, s->sig_len);
		kc_complete(s, KSIGN_DONE, 0);
	} else {
		log_warnx("keyd: refused signature request %llu: %s",
		    (unsigned long long)m->hdr.req_id, ipc_err_name(m->u.err.code));
		kc_complete(s, KSIGN_FAILED, m->u.err.code);
	}
}

static int
kc_dispatch(const struct ipc_msg *m)
{
	struct ipc_msg out;

	switch (m->hdr.type) {
	case IPC_SIGN_OK:
	case IPC_ERR:
		kc_reply(m);
		return 0;
	case IPC_PEM_CHUNK:
		return kc_chunk(&m->u.pem_chunk);
	case IPC_GENERATION:
		return kc_generation(&m->u.generation);
	case IPC_TRUST:
		return kc_trust(&m->u.trust);
	case IPC_TICKET_KEYS:
		worker_set_tickets(&m->u.ticket_keys);
		return 0;
	case IPC_HELLO_OK:
		if (m->u.hello_ok.identities != kc.w->cfg->n_identities)
			return -1;
		kc.ready = 1;
		log_info("keyd: ready (%u identities)", m->u.hello_ok.identities);
		return 0;
	case IPC_REVOKE:
		worker_revoke(m->u.revoke.identity, m->u.revoke.generation);
		return 0;
	case IPC_ADMISSION:
		kc.w->accepting = m->u.admission.accept != 0;
		log_info("keyd: %s new connections", kc.w->accepting ? "accepting" :
		    "refusing (audit log cannot be written)");
		return 0;
	case IPC_STATS_REQ:
		ipc_msg_init(&out, IPC_STATS, m->hdr.req_id);
		worker_fill_stats(&out.u.stats);
		return kc_send(&out);
	case IPC_PING:
		ipc_msg_init(&out, IPC_PONG, m->hdr.req_id);
		return kc_send(&out);
	default:
		log_warnx("keyd: unexpected %s message", ipc_type_name(m->hdr.type));
		return -1;
	}
}

static void
kc_read_all(void)
{
	struct ipc_msg m;
	int fd, err;

	while (kc.chan.fd >= 0) {
		switch (ipc_chan_recv(&kc.chan, &m, &fd, &err)) {
		case IPC_IO_OK:
			if (fd >= 0)
				close(fd);
			if (fd >= 0 || kc_dispatch(&m) == -1) {
				kc_detach("protocol violation from keyd");
				return;
			}
			break;
		case IPC_IO_AGAIN:
			return;
		case IPC_IO_EOF:
			kc_detach("keyd closed the channel");
			return;
		case IPC_IO_BADMSG:
			log_warnx("keyd: bad frame: %s", ipc_codec_strerror(err));
			kc_detach("bad frame from keyd");
			return;
		default:
			kc_detach("channel error");
			return;
		}
	}
}

static void
kc_io_cb(struct ev_io *io, uint32_t events)
{
	if (events & EPOLLOUT) {
		enum ipc_io r = ipc_chan_flush(&kc.chan);
		if (r != IPC_IO_OK && r != IPC_IO_AGAIN) {
			kc_detach("cannot write to keyd");
			return;
		}
		if (!ipc_chan_has_queued(&kc.chan))
			kc_update_interest();
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		kc_read_all();
}

static void
kc_detach(const char *why)
{
	struct keyd_sign *s;

	if (!kc.attached)
		return;
	log_warnx("keyd: %s; new handshakes fail until keyd is back", why);
	evloop_del(&kc.w->loop, &kc.io);
	ipc_chan_close(&kc.chan);
	kc.attached = 0;
	kc.ready = 0;
	while ((s = TAILQ_FIRST(&kc.pending)) != NULL)
		kc_complete(s, KSIGN_FAILED, IPC_ERR_UNAVAILABLE);
	for (size_t i = 0; i < kc.w->cfg->n_identities; i++)
		kc_asm_reset(&kc.w->ids[i].pem);
	for (size_t i = 0; i < kc.w->cfg->n_listeners; i++)
		kc_asm_reset(&kc.w->listeners[i].trust.pem);
	for (size_t i = 0; i < kc.w->cfg->n_connectors; i++)
		kc_asm_reset(&kc.w->connectors[i].trust.pem);
}

void
keyd_client_init(struct worker *w)
{
	kc.w = w;
	TAILQ_INIT(&kc.pending);
}

void
keyd_client_attach(int fd)
{
	struct ipc_msg m;

	if (kc.attached) {
		kc.st.reconnects++;
		kc_detach("replaced by a new channel");
	}
	ipc_chan_init(&kc.chan, fd);
	kc.io.fd = fd;
	kc.io.cb = kc_io_cb;
	kc.io.arg = NULL;
	if (evloop_add(&kc.w->loop, &kc.io, EPOLLIN) == -1) {
		log_warn("keyd: epoll_ctl(ADD)");
		ipc_chan_close(&kc.chan);
		return;
	}
	kc.attached = 1;
	ipc_msg_init(&m, IPC_HELLO, 0);
	m.u.hello.pid = (uint32_t)getpid();
	if (kc_send(&m) == -1)
		kc_detach("cannot send HELLO");
}

void
keyd_client_audit(uint16_t event, const char *json, size_t len)
{
	struct ipc_msg m;

	if (!kc.attached || len > IPC_AUDIT_MAX)
		return;
	ipc_msg_init(&m, IPC_AUDIT, 0);
	m.u.audit.event = event;
	m.u.audit.len = (uint16_t)len;
	memcpy(m.u.audit.json, json, len);
	m.u.audit.json[len] = '\0';
	(void)kc_send(&m);
}
