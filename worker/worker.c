/*
 * `redoubt worker N CONFIG`: a worker process, started by the supervisor.  It holds no
 * private key: certificates, CA bundles and ticket keys arrive from keyd, and every
 * handshake signature is asked of keyd.
 */
#include "worker/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <openssl/async.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "cli/cli.h"
#include "common/child.h"
#include "common/fips.h"
#include "common/limits.h"
#include "common/log.h"
#include "worker/connector.h"
#include "worker/keyd_client.h"
#include "worker/keyd_provider.h"
#include "worker/tls_bio.h"
#include "worker/sandbox.h"

#define WORKER_BUF_POOL_MAX 256   /* idle relay buffers kept for reuse (4 MiB) */
#define WORKER_DRAIN_MS     2000  /* on shutdown, time for paused handshakes to finish */

struct worker *wk;
static struct worker worker_state;

/* ---------- relay buffers ---------- */

/* A free buffer's first bytes link it to the next free one. */
struct worker_free_buf {
	struct worker_free_buf *next;
};

uint8_t *
worker_buf_get(void)
{
	struct worker_free_buf *b = wk->buf_pool;

	if (b != NULL) {
		wk->buf_pool = b->next;
		wk->buf_pool_len--;
		return (uint8_t *)b;
	}
	b = malloc(CONN_BUF_SIZE);
	if (b == NULL)
		fatal("worker: relay buffer");
	return (uint8_t *)b;
}

void
worker_buf_put(uint8_t *buf)
{
	struct worker_free_buf *b = (struct worker_free_buf *)(void *)buf;

	if (wk->buf_pool_len >= WORKER_BUF_POOL_MAX) {
		free(buf);
		return;
	}
	b->next = wk->buf_pool;
	wk->buf_pool = b;
	wk->buf_pool_len++;
}

/* ---------- what keyd pushes ---------- */

static void
worker_terminate_generation(struct tls_gen *g, enum conn_end why)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&wk->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->gen == g)
			conn_terminate(c, why);
	}
}

void
worker_install_trust(struct wk_trust *t, const struct ipc_trust *m, X509_STORE *store)
{
	/* Contexts built with the old store hold their own reference to it. */
	X509_STORE_free(t->store);
	t->store = store;
	t->generation = m->generation;
	memcpy(t->digest, m->digest, sizeof(t->digest));
}

static int
worker_material_trust(EVP_MD_CTX *md, const char *kind, const char *name, size_t index,
    const struct wk_trust *t, const struct tls_gen *g)
{
	uint32_t tag = (uint32_t)index | (kind[0] == 'l' ? 0x4c000000u : 0x43000000u);

	/* keyd sends a section's trust right before the generation it belongs to. */
	if (t->generation != g->generation) {
		log_warnx("%s %s: its CA/CRL for generation %u did not arrive", kind, name,
		    g->generation);
		return 0;
	}
	return EVP_DigestUpdate(md, &tag, sizeof(tag)) &&
	    EVP_DigestUpdate(md, t->digest, sizeof(t->digest));
}

/* What g is made of: keyd's chain, CA and CRL, and the trust of the identity's sections. */
static int
worker_material(uint16_t identity, struct tls_gen *g)
{
	const struct config *cfg = wk->cfg;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	    EVP_DigestUpdate(md, g->digest, sizeof(g->digest));

	for (size_t i = 0; ok && i < cfg->n_listeners; i++)
		if ((size_t)cfg->listeners[i].identity == identity &&
		    wk_trust_own(cfg->listeners[i].ca, cfg->listeners[i].crl))
			ok = worker_material_trust(md, "listener", cfg->listeners[i].name, i,
			    &wk->listeners[i].trust, g);
	for (size_t i = 0; ok && i < cfg->n_connectors; i++)
		if ((size_t)cfg->connectors[i].identity == identity &&
		    wk_trust_own(cfg->connectors[i].ca, cfg->connectors[i].crl))
			ok = worker_material_trust(md, "connector", cfg->connectors[i].name, i,
			    &wk->connectors[i].trust, g);
	ok = ok && EVP_DigestFinal_ex(md, g->material, NULL);
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* New contexts for every listener and connector of the identity, from generation g. */
static void
worker_build_contexts(uint16_t identity, struct tls_gen *g)
{
	for (size_t i = 0; i < wk->cfg->n_listeners; i++) {
		struct wk_listener *l = &wk->listeners[i];
		SSL_CTX *ctx;
		if ((size_t)l->cfg->identity != identity)
			continue;
		ctx = tls_ctx_listener(wk->cfg, l, g);
		if (ctx == NULL) {
			log_warnx("listener %s: generation %u not usable; keeping the previous one",
			    l->cfg->name, g->generation);
			continue;
		}
		SSL_CTX_free(l->ctx);
		tls_gen_unref(l->gen);
		l->ctx = ctx;
		l->gen = g;
		tls_gen_ref(g);
	}
	for (size_t i = 0; i < wk->cfg->n_connectors; i++) {
		struct wk_connector *k = &wk->connectors[i];
		SSL_CTX *ctx;
		if ((size_t)k->cfg->identity != identity)
			continue;
		ctx = tls_ctx_connector(wk->cfg, k, g);
		if (ctx == NULL)
			continue;
		SSL_CTX_free(k->ctx);
		tls_gen_unref(k->gen);
		k->ctx = ctx;
		k->gen = g;
		tls_gen_ref(g);
	}
}

void
worker_install_generation(uint16_t identity, struct tls_gen *g)
{
	struct wk_identity *id = &wk->ids[identity];

	if (worker_material(identity, g) == -1) {
		log_warnx("identity %s: generation %u not installed; keeping generation %u",
		    id->cfg->name, g->generation, id->cur != NULL ? id->cur->generation : 0);
		tls_gen_unref(g);
		return;
	}
	/*
	 * keyd re-sends what we already have after it restarts (and after a rotation that
	 * changed nothing of this identity): the generation stays.  Should keyd number it
	 * differently, keyd's number wins (status and revocation use it), with new contexts so
	 * that session ids match those of workers started since.
	 */
	if (id->cur != NULL && CRYPTO_memcmp(id->cur->material, g->material, 32) == 0 &&
	    CRYPTO_memcmp(id->cur->key_id, g->key_id, IPC_KEY_ID_LEN) == 0) {
		if (id->cur->generation != g->generation) {
			log_info("identity %s: generation %u is now numbered %u (keyd restarted)",
			    id->cfg->name, id->cur->generation, g->generation);
			id->cur->generation = g->generation;
			worker_build_contexts(identity, id->cur);
		}
		tls_gen_unref(g);
		return;
	}
	if (id->prev != NULL) {
		/* At most two generations: the oldest one's connections end now. */
		worker_terminate_generation(id->prev, END_REVOKED);
		tls_gen_unref(id->prev);
	}
	id->prev = id->cur;
	id->cur = g;
	worker_build_contexts(identity, g);
	log_info("identity %s: generation %u in use", id->cfg->name, g->generation);
}

void
worker_revoke(uint16_t identity, uint32_t generation)
{
	struct wk_identity *id;

	if (identity >= wk->cfg->n_identities)
		return;
	id = &wk->ids[identity];
	if (id->prev != NULL && id->prev->generation == generation)
		worker_terminate_generation(id->prev, END_REVOKED);
	if (id->cur != NULL && id->cur->generation == generation)
		worker_terminate_generation(id->cur, END_REVOKED);
}

void
worker_set_tickets(const struct ipc_ticket_keys *tk)
{
	OPENSSL_cleanse(wk->tickets, sizeof(wk->tickets));
	for (uint32_t i = 0; i < tk->count && i < 2; i++) {
		struct ticket_key *k = &wk->tickets[i];
		k->valid = 1;
		k->created = tk->slot[i].created;
		memcpy(k->name, tk->slot[i].name, sizeof(k->name));
		memcpy(k->aes, tk->slot[i].aes_key, sizeof(k->aes));
		memcpy(k->hmac, tk->slot[i].hmac_key, sizeof(k->hmac));
	}
	wk->ticket_lifetime = tk->lifetime;
}

void
worker_fill_stats(struct ipc_stats *st)
{
	st->total_conns = wk->n_conns;
	st->n = 0;
	for (size_t i = 0; i < wk->cfg->n_identities; i++) {
		struct tls_gen *gens[2] = { wk->ids[i].cur, wk->ids[i].prev };
		for (int j = 0; j < 2; j++) {
			if (gens[j] == NULL || st->n >= IPC_STATS_MAX)
				continue;
			st->e[st->n].identity = (uint16_t)i;
			st->e[st->n].generation = gens[j]->generation;
			st->e[st->n].conns = gens[j]->conns;
			st->n++;
		}
	}
}

/* ---------- supervisor channel and signals ---------- */

static void
worker_stop(void)
{
	struct conn *c, *next;

	if (wk->stopping)
		return;
	wk->stopping = 1;
	for (size_t i = 0; i < wk->cfg->n_listeners; i++)
		evloop_del(&wk->loop, &wk->listeners[i].io);
	for (c = TAILQ_FIRST(&wk->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		conn_terminate(c, END_SHUTDOWN);
	}
	evloop_stop(&wk->loop);
}

static void
worker_sup_cb(struct ev_io *io, uint32_t events)
{
	struct ipc_msg m;
	int fd, err;

	for (;;) {
		switch (ipc_chan_recv(&wk->sup, &m, &fd, &err)) {
		case IPC_IO_OK:
			if (m.hdr.type == IPC_CHANNEL && m.u.channel.kind == IPC_CHANNEL_KEYD &&
			    fd >= 0) {
				keyd_client_attach(fd);
				break;
			}
			if (fd >= 0)
				close(fd);
			log_warnx("supervisor: unexpected %s message", ipc_type_name(m.hdr.type));
			break;
		case IPC_IO_AGAIN:
			return;
		case IPC_IO_BADMSG:
			fatalx("supervisor: bad frame: %s", ipc_codec_strerror(err));
		default:
			/* The supervisor is gone: nobody would restart us or keyd; stop. */
			log_warnx("supervisor went away; stopping");
			evloop_del(&wk->loop, io);
			worker_stop();
			return;
		}
	}
}

static void
worker_sig_cb(struct ev_io *io, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			worker_stop();
}

static int
worker_signals(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, 0 };

	signal(SIGPIPE, SIG_IGN);
	/* Rotation is keyd's business: a stray `pkill -HUP redoubt` must not end a worker. */
	signal(SIGHUP, SIG_IGN);
	return evloop_add_signals(&wk->loop, &wk->sig_io, sigs, worker_sig_cb);
}

static void
worker_setup(void)
{
	const struct config *cfg = wk->cfg;
	int fd = CHILD_FD_FIRST;

	wk->ids = calloc(cfg->n_identities ? cfg->n_identities : 1, sizeof(*wk->ids));
	wk->listeners = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*wk->listeners));
	wk->connectors = calloc(cfg->n_connectors ? cfg->n_connectors : 1,
	    sizeof(*wk->connectors));
	if (wk->ids == NULL || wk->listeners == NULL || wk->connectors == NULL)
		fatal("worker: set-up");
	for (size_t i = 0; i < cfg->n_identities; i++)
		wk->ids[i].cfg = &cfg->identities[i];
	for (size_t i = 0; i < cfg->n_listeners; i++, fd++) {
		struct wk_listener *l = &wk->listeners[i];
		const struct config_listener *lc = &cfg->listeners[i];
		l->cfg = lc;
		l->index = (unsigned)i;
		for (size_t r = 0; r < lc->n_routes; r++)
			l->alpn_wire_len += 1 + strlen(lc->routes[r].alpn);
		if (l->alpn_wire_len > 0) {
			size_t off = 0;
			l->alpn_wire = malloc(l->alpn_wire_len);
			if (l->alpn_wire == NULL)
				fatal("worker: alpn");
			for (size_t r = 0; r < lc->n_routes; r++) {
				size_t n = strlen(lc->routes[r].alpn);
				l->alpn_wire[off++] = (uint8_t)n;
				memcpy(l->alpn_wire + off, lc->routes[r].alpn, n);
				off += n;
			}
		}
		if (listener_start(l, fd) == -1)
			fatalx("worker: listener %s cannot start", lc->name);
	}
	for (size_t i = 0; i < cfg->n_connectors; i++, fd++) {
		wk->connectors[i].cfg = &cfg->connectors[i];
		wk->connectors[i].index = (unsigned)i;
		if (connector_start(&wk->connectors[i], fd) == -1)
			fatalx("worker: connector %s cannot start", cfg->connectors[i].name);
	}
}

static void
worker_cleanup(void)
{
	const struct config *cfg = wk->cfg;

	for (size_t i = 0; i < cfg->n_listeners; i++) {
		SSL_CTX_free(wk->listeners[i].ctx);
		tls_gen_unref(wk->listeners[i].gen);
		free(wk->listeners[i].alpn_wire);
		X509_STORE_free(wk->listeners[i].trust.store);
	}
	for (size_t i = 0; i < cfg->n_connectors; i++) {
		connector_stop(&wk->connectors[i]);
		SSL_CTX_free(wk->connectors[i].ctx);
		tls_gen_unref(wk->connectors[i].gen);
		X509_STORE_free(wk->connectors[i].trust.store);
	}
	for (size_t i = 0; i < cfg->n_identities; i++) {
		tls_gen_unref(wk->ids[i].cur);
		tls_gen_unref(wk->ids[i].prev);
	}
	while (wk->buf_pool != NULL)
		free(worker_buf_get());
	OPENSSL_cleanse(wk->tickets, sizeof(wk->tickets));
	free(wk->ids);
	free(wk->listeners);
	free(wk->connectors);
	evloop_free(&wk->loop);
	config_free(wk->cfg);
}

int
worker_main(int argc, char **argv)
{
	char proc[32], ferr[FIPS_ERR_MAX];
	struct rlimit nocore = { 0, 0 };
	unsigned long idx;
	char *end;
	uint64_t deadline;

	if (argc != 3)
		fatalx("usage: redoubt worker INDEX CONFIG (started by 'redoubt serve')");
	idx = strtoul(argv[1], &end, 10);
	if (*end != '\0' || idx >= WORKERS_MAX)
		fatalx("worker: bad index '%s'", argv[1]);
	snprintf(proc, sizeof(proc), "worker %lu", idx);
	log_init(proc, LOG_LVL_INFO);
	wk = &worker_state;
	wk->index = (unsigned)idx;
	wk->accepting = 1;
	TAILQ_INIT(&wk->conns);
	wk->cfg = child_load_config("worker", argv[2]);
	log_set_level(wk->cfg->log_level);

	/* Session keys live here: no core dumps, no ptrace by the same user. */
	if (prctl(PR_SET_DUMPABLE, 0) == -1 || setrlimit(RLIMIT_CORE, &nocore) == -1)
		fatal("worker: PR_SET_DUMPABLE / RLIMIT_CORE");
	if (OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) != 1)
		fatalx("worker: OpenSSL initialisation failed");
	/* FIPS mode: fips + base before the keyd provider, which then keeps fips=yes. */
	if (fips_enable(wk->cfg, ferr, sizeof(ferr)) == -1)
		fatalx("worker: %s", ferr);
	if (keyd_provider_load() == -1 || tls_bio_init() == -1)
		fatalx("worker: OpenSSL initialisation failed");
	if (!ASYNC_init_thread(ASYNC_JOBS_MAX, 0))
		fatalx("worker: ASYNC_init_thread failed");
	if (evloop_init(&wk->loop) == -1)
		fatal("worker: epoll");
	keyd_client_init(wk);
	worker_setup();
	ipc_chan_init(&wk->sup, CHILD_FD_PARENT);
	wk->sup_io.fd = CHILD_FD_PARENT;
	wk->sup_io.cb = worker_sup_cb;
	if (evloop_add(&wk->loop, &wk->sup_io, EPOLLIN) == -1 || worker_signals() == -1)
		fatal("worker: event set-up");
	sandbox_worker_enter(wk->cfg);
	log_debug("started");

	if (evloop_run(&wk->loop) == -1)
		fatal("worker: event loop");
	/* Paused handshakes finish (keyd answers or their deadline passes) before we free. */
	deadline = evloop_clock_ms() + WORKER_DRAIN_MS;
	wk->loop.stop = 0;
	while (wk->n_conns > 0 && evloop_clock_ms() < deadline)
		(void)evloop_run_once(&wk->loop, 50);
	log_debug("stopped");
	worker_cleanup();
	return 0;
}
