/*
 * keyd's TPM signer: one thread owns the only ESYS context and runs TPM commands one at a time
 * from a bounded queue (TPM_QUEUE_MAX slots).  The event loop never waits for the TPM:
 *
 *   main thread                              TPM thread
 *   keyd_tpm_submit: slot FREE -> QUEUED      takes the oldest QUEUED -> RUNNING, signs,
 *                    (no slot: IPC_ERR_BUSY)   RUNNING -> DONE (or ABANDONED -> FREE),
 *   eventfd readable: DONE -> answer, FREE    writes the eventfd
 *   tick (TPM_TICK_MS): past its deadline,
 *     QUEUED -> FREE, RUNNING -> ABANDONED,
 *     answer IPC_ERR_INTERNAL "TPM did not answer" (log + audit)
 *
 * A TPM that hangs keeps the thread (and one slot) busy; every later TPM request times out, and
 * software keys and every other request are served as before.  Answers go to the channel the
 * request came on only: a worker channel replaced meanwhile (epoch) drops them.  The TPM is
 * opened before the sandbox, the thread started inside it (keyd_tpm_start); it blocks every
 * signal.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "audit/events.h"
#include "common/fips.h"
#include "common/log.h"
#include "keyd/keyd.h"
#include "keyd/tpm_internal.h"

#define TPM_TICK_MS        50    /* how often pending TPM requests are checked for deadlines */
#define TPM_LOADED_MAX     2     /* keys kept loaded next to the primary (swtpm: 3 slots) */
#define TPM_SELFTEST_LEN   32    /* bytes of random input for the start-up test signature */
/*
 * A TPM request's deadline, in percent of keyd-timeout: the worker's own deadline started
 * earlier (when it sent the request), so keyd gives up first and the worker learns why
 * ("TPM did not answer") instead of just timing out.
 */
#define TPM_DEADLINE_PERCENT 75

enum tpm_slot_state { TS_FREE = 0, TS_QUEUED, TS_RUNNING, TS_DONE, TS_ABANDONED };

struct tpm_job {
	/* the request: written by the main thread before QUEUED (seq, state: under the lock) */
	uint64_t        seq;               /* FIFO order */
	struct tpm_key *key;
	uint64_t        epoch;
	uint64_t        req_id;
	uint64_t        deadline_ms;
	const char     *md;
	size_t          dlen;
	enum tpm_slot_state state;
	unsigned        worker;
	int             is_rsa, pss;
	uint16_t        sigalg;
	uint8_t         digest[EVP_MAX_MD_SIZE];
	char            ident[IPC_NAME_MAX];
	/* the result: written by the TPM thread before DONE */
	int             rc;                /* 0, -1 failed, -2 expired before it ran */
	size_t          siglen;
	uint8_t         sig[IPC_SIG_MAX];
	char            err[TPM_ERR_MAX];
};

struct tpm_loaded {
	uint8_t  id[32];
	ESYS_TR  handle;
	uint64_t used;
};

static struct {
	int              ready;       /* the TPM is open and checked; the thread may start */
	int              running;
	pthread_t        thread;
	pthread_mutex_t  mu;
	pthread_cond_t   cv;
	struct tpm_job   jobs[TPM_QUEUE_MAX];
	uint64_t         seq;
	int              efd;
	struct ev_io     efd_io;
	struct ev_timer  tick;
	struct tpm_esys  esys;             /* the TPM thread's only, after start-up */
	struct tpm_loaded loaded[TPM_LOADED_MAX];
	uint64_t         use_clock;
	uint64_t         epoch[WORKERS_MAX];
	uint64_t         signs, timeouts, failures;
} ts = { .efd = -1 };

/* ---- the TPM thread ------------------------------------------------------------------ */

/* Drops the cache without asking the TPM (the handles may be dead already). */
static void
tpm_loaded_forget_all(void)
{
	for (size_t i = 0; i < TPM_LOADED_MAX; i++) {
		if (ts.loaded[i].handle != ESYS_TR_NONE && ts.loaded[i].handle != 0 &&
		    Esys_FlushContext(ts.esys.ctx, ts.loaded[i].handle) != TSS2_RC_SUCCESS)
			(void)Esys_TR_Close(ts.esys.ctx, &ts.loaded[i].handle);
		memset(&ts.loaded[i], 0, sizeof(ts.loaded[i]));
		ts.loaded[i].handle = ESYS_TR_NONE;
	}
}

/* The loaded object for a blob: cached, or loaded in the least recently used slot. */
static int
tpm_handle_for(const struct tpm_key *k, ESYS_TR *h, char *err, size_t errlen)
{
	struct tpm_loaded *victim = &ts.loaded[0];

	for (size_t i = 0; i < TPM_LOADED_MAX; i++) {
		struct tpm_loaded *l = &ts.loaded[i];

		if (l->handle != ESYS_TR_NONE && l->handle != 0 &&
		    CRYPTO_memcmp(l->id, k->id, sizeof(l->id)) == 0) {
			l->used = ++ts.use_clock;
			*h = l->handle;
			return 0;
		}
		if (l->handle == ESYS_TR_NONE || l->handle == 0 || l->used < victim->used)
			victim = l;
	}
	if (victim->handle != ESYS_TR_NONE && victim->handle != 0)
		(void)Esys_FlushContext(ts.esys.ctx, victim->handle);
	victim->handle = ESYS_TR_NONE;
	if (tpm_esys_load(&ts.esys, &k->pub, &k->priv, h, err, errlen) == -1)
		return -1;
	memcpy(victim->id, k->id, sizeof(victim->id));
	victim->handle = *h;
	victim->used = ++ts.use_clock;
	return 0;
}

/* RSA: the signature is checked before it leaves (fault attacks); ECDSA too, it is cheap. */
static int
tpm_verify(EVP_PKEY *pub, int is_rsa, int pss, const char *md, const uint8_t *dg, size_t dlen,
    const uint8_t *sig, size_t siglen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
	int ok;

	ok = c != NULL && EVP_PKEY_verify_init(c) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(c, EVP_get_digestbyname(md)) > 0;
	if (ok && is_rsa)
		ok = EVP_PKEY_CTX_set_rsa_padding(c, pss ? RSA_PKCS1_PSS_PADDING :
		    RSA_PKCS1_PADDING) > 0 &&
		    (!pss || (EVP_PKEY_CTX_set_rsa_pss_saltlen(c, RSA_PSS_SALTLEN_DIGEST) > 0 &&
		    EVP_PKEY_CTX_set_rsa_mgf1_md_name(c, md, NULL) > 0));
	ok = ok && EVP_PKEY_verify(c, sig, siglen, dg, dlen) == 1;
	EVP_PKEY_CTX_free(c);
	ERR_clear_error();
	return ok ? 0 : -1;
}

static void
tpm_run_job(struct tpm_job *j)
{
	ESYS_TR h;

	j->rc = -1;
	j->siglen = 0;
	if (evloop_clock_ms() > j->deadline_ms) {
		j->rc = -2;
		return;
	}
	if (tpm_handle_for(j->key, &h, j->err, sizeof(j->err)) == -1 ||
	    tpm_esys_sign(&ts.esys, h, j->is_rsa, j->pss, j->md, j->digest, j->dlen, j->sig,
	    sizeof(j->sig), &j->siglen, j->err, sizeof(j->err)) == -1) {
		/* Our objects may be gone (a TPM reset, another client without a resource manager
		 * flushed them): forget them, make the primary again, and try once more. */
		tpm_loaded_forget_all();
		if (tpm_esys_primary(&ts.esys, j->err, sizeof(j->err)) == -1 ||
		    tpm_handle_for(j->key, &h, j->err, sizeof(j->err)) == -1 ||
		    tpm_esys_sign(&ts.esys, h, j->is_rsa, j->pss, j->md, j->digest, j->dlen, j->sig,
		    sizeof(j->sig), &j->siglen, j->err, sizeof(j->err)) == -1)
			return;
		j->err[0] = '\0';
	}
	if (tpm_verify(j->key->pub_pkey, j->is_rsa, j->pss, j->md, j->digest, j->dlen, j->sig,
	    j->siglen) == -1) {
		OPENSSL_cleanse(j->sig, sizeof(j->sig));
		j->siglen = 0;
		snprintf(j->err, sizeof(j->err), "the TPM's signature failed its own verification "
		    "(not returned)");
		return;
	}
	j->rc = 0;
}

static void *
tpm_thread_main(void *arg)
{
	uint64_t one = 1;

	for (;;) {
		struct tpm_job *j = NULL;

		pthread_mutex_lock(&ts.mu);
		for (;;) {
			for (size_t i = 0; i < TPM_QUEUE_MAX; i++)
				if (ts.jobs[i].state == TS_QUEUED &&
				    (j == NULL || ts.jobs[i].seq < j->seq))
					j = &ts.jobs[i];
			if (j != NULL)
				break;
			pthread_cond_wait(&ts.cv, &ts.mu);
		}
		j->state = TS_RUNNING;
		pthread_mutex_unlock(&ts.mu);

		tpm_run_job(j);

		pthread_mutex_lock(&ts.mu);
		if (j->state == TS_ABANDONED) {
			/* The main thread answered already (deadline); nobody wants this result. */
			tpm_key_unref(j->key);
			OPENSSL_cleanse(j, sizeof(*j));
			j->state = TS_FREE;
		} else
			j->state = TS_DONE;
		pthread_mutex_unlock(&ts.mu);
		if (write(ts.efd, &one, sizeof(one)) == -1) {
			/* The counter cannot overflow in practice; the tick finds DONE slots too. */
		}
	}
	return NULL;
}

/* ---- the main thread ----------------------------------------------------------------- */

static void
tpm_answer(const struct tpm_job *j)
{
	struct keyd_worker *w = &kd->workers[j->worker];
	struct ipc_msg m;
	json_t *f;

	if (j->rc != 0) {
		const char *why = j->rc == -2 || j->err[0] == '\0' ? "TPM did not answer" : j->err;

		if (j->rc == -2 || j->err[0] == '\0')
			ts.timeouts++;
		else
			ts.failures++;
		log_warnx("worker %u: TPM signature with identity %s failed: %s", j->worker,
		    j->ident, why);
		f = json_pack("{s:s, s:I}", "identity", j->ident, "sigalg", (json_int_t)j->sigalg);
		keyd_audit(AUDIT_SIGN_REFUSED, (int)j->worker, "failure", why, f);
		json_decref(f);
	}
	/* A channel replaced or closed since the request: its handshake is gone; drop. */
	if (j->worker >= WORKERS_MAX || w->state != KW_READY || ts.epoch[j->worker] != j->epoch)
		return;
	if (j->rc == 0) {
		ipc_msg_init(&m, IPC_SIGN_OK, j->req_id);
		memcpy(m.u.sign_ok.sig, j->sig, j->siglen);
		m.u.sign_ok.sig_len = (uint16_t)j->siglen;
		w->signs++;
		ts.signs++;
	} else {
		ipc_msg_init(&m, IPC_ERR, j->req_id);
		m.u.err.code = IPC_ERR_INTERNAL;
	}
	if (keyd_send(w, &m) == -1)
		keyd_worker_close(w, "cannot queue a message");
	OPENSSL_cleanse(&m, sizeof(m));
}

/*
 * Takes the finished and the overdue jobs out of the table (under the lock) and answers them
 * (outside it).  Returns the number still pending.
 */
static unsigned
tpm_collect(void)
{
	static struct tpm_job out[TPM_QUEUE_MAX];
	uint64_t now = evloop_clock_ms();
	size_t n = 0;
	unsigned pending = 0;

	pthread_mutex_lock(&ts.mu);
	for (size_t i = 0; i < TPM_QUEUE_MAX; i++) {
		struct tpm_job *j = &ts.jobs[i];

		if (j->state == TS_DONE) {
			out[n++] = *j;
			OPENSSL_cleanse(j, sizeof(*j));
			j->state = TS_FREE;
		} else if ((j->state == TS_QUEUED || j->state == TS_RUNNING) &&
		    now > j->deadline_ms) {
			/* Only what the main thread wrote: a RUNNING job's result is the thread's. */
			memset(&out[n], 0, sizeof(out[n]));
			out[n].worker = j->worker;
			out[n].epoch = j->epoch;
			out[n].req_id = j->req_id;
			out[n].sigalg = j->sigalg;
			memcpy(out[n].ident, j->ident, sizeof(out[n].ident));
			out[n].rc = -2;
			n++;
			if (j->state == TS_QUEUED) {
				tpm_key_unref(j->key);
				OPENSSL_cleanse(j, sizeof(*j));
				j->state = TS_FREE;
			} else
				j->state = TS_ABANDONED;
		} else if (j->state == TS_QUEUED || j->state == TS_RUNNING)
			pending++;
	}
	pthread_mutex_unlock(&ts.mu);
	for (size_t i = 0; i < n; i++) {
		tpm_answer(&out[i]);
		tpm_key_unref(out[i].key);
		OPENSSL_cleanse(&out[i], sizeof(out[i]));
	}
	return pending;
}

static void
tpm_tick_cb(struct ev_timer *t)
{
	if (tpm_collect() > 0)
		evloop_timer_after(&kd->loop, &ts.tick, TPM_TICK_MS);
}

static void
tpm_efd_cb(struct ev_io *io, uint32_t events)
{
	uint64_t v;

	while (read(ts.efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
	(void)tpm_collect();
}

void
keyd_tpm_channel_reset(unsigned worker)
{
	if (worker < WORKERS_MAX)
		ts.epoch[worker]++;
}

void
keyd_tpm_counters(unsigned *pending, uint64_t *signs, uint64_t *timeouts)
{
	unsigned n = 0;

	if (ts.running) {
		pthread_mutex_lock(&ts.mu);
		for (size_t i = 0; i < TPM_QUEUE_MAX; i++)
			n += ts.jobs[i].state != TS_FREE;
		pthread_mutex_unlock(&ts.mu);
	}
	*pending = n;
	*signs = ts.signs;
	*timeouts = ts.timeouts;
}

static int
tpm_sigalg_params(uint16_t sigalg, int *pss, const char **md)
{
	*md = sign_sigalg_digest(sigalg);
	*pss = sign_sigalg_is_pss(sigalg);
	return *md != NULL ? 0 : -1;
}

int
keyd_tpm_submit(struct keyd_worker *w, const struct ipc_msg *m, struct keyd_key *key,
    const char *ident)
{
	const struct ipc_sign *req = &m->u.sign;
	struct tpm_job *j = NULL;
	unsigned mdlen = 0;
	json_t *f;

	if (!ts.running || key->tpm == NULL) {
		log_warnx("worker %u: identity %s has a TPM key but the TPM signer is not running",
		    w->index, ident);
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_INTERNAL);
	}
	pthread_mutex_lock(&ts.mu);
	for (size_t i = 0; i < TPM_QUEUE_MAX && j == NULL; i++)
		if (ts.jobs[i].state == TS_FREE)
			j = &ts.jobs[i];
	if (j == NULL) {
		pthread_mutex_unlock(&ts.mu);
		log_warnx("worker %u: TPM queue full (%d requests): signature with identity %s "
		    "refused", w->index, TPM_QUEUE_MAX, ident);
		f = json_pack("{s:s}", "identity", ident);
		keyd_audit(AUDIT_RATE_LIMITED, (int)w->index, "failure", "TPM queue full", f);
		json_decref(f);
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_BUSY);
	}
	memset(j, 0, sizeof(*j));
	j->worker = w->index;
	j->epoch = ts.epoch[w->index];
	j->req_id = m->hdr.req_id;
	j->sigalg = req->sigalg;
	j->is_rsa = key->type == IPC_KEY_RSA;
	snprintf(j->ident, sizeof(j->ident), "%s", ident);
	j->deadline_ms = kd->loop.now_ms +
	    (uint64_t)kd->cfg->keyd_timeout_ms * TPM_DEADLINE_PERCENT / 100;
	/* keyd hashes; the TPM signs the digest (the key is unrestricted: no hash ticket). */
	if (tpm_sigalg_params(req->sigalg, &j->pss, &j->md) == -1 ||
	    EVP_Digest(req->tbs, req->tbs_len, j->digest, &mdlen, EVP_get_digestbyname(j->md),
	    NULL) != 1) {
		pthread_mutex_unlock(&ts.mu);
		ERR_clear_error();
		log_warnx("worker %u: cannot hash the input for identity %s", w->index, ident);
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_INTERNAL);
	}
	j->dlen = mdlen;
	j->key = tpm_key_ref(key->tpm);
	j->seq = ++ts.seq;
	j->state = TS_QUEUED;
	pthread_cond_signal(&ts.cv);
	pthread_mutex_unlock(&ts.mu);
	if (!evloop_timer_armed(&ts.tick))
		evloop_timer_after(&kd->loop, &ts.tick, TPM_TICK_MS);
	return 0;
}

/* ---- start-up ------------------------------------------------------------------------ */

/* The TPM holds the private key of this generation: a test signature verifies with the
 * certificate's public key (which keystore_load() matched to the blob). */
static int
tpm_selftest(const struct config_identity *id, const struct keyd_key *k, char *err, size_t errlen)
{
	uint8_t in[TPM_SELFTEST_LEN], dg[EVP_MAX_MD_SIZE], sig[IPC_SIG_MAX];
	const char *md = k->type == IPC_KEY_EC_P384 ? "SHA384" : "SHA256";
	int is_rsa = k->type == IPC_KEY_RSA;
	unsigned dlen = 0;
	size_t siglen = 0;
	ESYS_TR h;
	char why[TPM_ERR_MAX] = "";

	if (RAND_bytes(in, sizeof(in)) != 1 ||
	    EVP_Digest(in, sizeof(in), dg, &dlen, EVP_get_digestbyname(md), NULL) != 1) {
		snprintf(err, errlen, "identity %s: cannot prepare the TPM self-test", id->name);
		return -1;
	}
	if (tpm_handle_for(k->tpm, &h, why, sizeof(why)) == -1 ||
	    tpm_esys_sign(&ts.esys, h, is_rsa, is_rsa, md, dg, dlen, sig, sizeof(sig), &siglen,
	    why, sizeof(why)) == -1 ||
	    tpm_verify(k->pkey, is_rsa, is_rsa, md, dg, dlen, sig, siglen) == -1) {
		snprintf(err, errlen, "identity %s: key %s: the TPM cannot sign with it%s%s",
		    id->name, id->key, why[0] ? ": " : " (signature does not verify)", why);
		return -1;
	}
	return 0;
}

int
keyd_tpm_init(char *err, size_t errlen)
{
	const struct config *cfg = kd->cfg;
	int any = 0;

	for (size_t i = 0; i < cfg->n_identities; i++)
		any |= kd->ids[i].cur != NULL && kd->ids[i].cur->tpm != NULL;
	if (!any)
		return 0;
	for (size_t i = 0; i < TPM_LOADED_MAX; i++)
		ts.loaded[i].handle = ESYS_TR_NONE;
	if (tpm_esys_open(cfg->tpm_tcti, &ts.esys, err, errlen) == -1)
		return -1;
	for (size_t i = 0; i < cfg->n_identities; i++)
		if (kd->ids[i].cur != NULL && kd->ids[i].cur->tpm != NULL &&
		    tpm_selftest(&cfg->identities[i], kd->ids[i].cur, err, errlen) == -1)
			return -1;
	if ((ts.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "TPM: eventfd: %s", strerror(errno));
		return -1;
	}
	pthread_mutex_init(&ts.mu, NULL);
	pthread_cond_init(&ts.cv, NULL);
	evloop_timer_init(&ts.tick, tpm_tick_cb, NULL);
	ts.efd_io.fd = ts.efd;
	ts.efd_io.cb = tpm_efd_cb;
	if (evloop_add(&kd->loop, &ts.efd_io, EPOLLIN) == -1) {
		snprintf(err, errlen, "TPM: epoll: %s", strerror(errno));
		return -1;
	}
	ts.ready = 1;
	return 0;
}

/*
 * After sandbox_keyd_enter(): a thread inherits the Landlock domain of its creator only when
 * it is created after the domain exists (seccomp is synchronised to every thread anyway),
 * and everything the thread needs is already open -- the TPM's device or socket, the eventfd.
 */
int
keyd_tpm_start(char *err, size_t errlen)
{
	sigset_t all, old;
	int rc;

	if (!ts.ready)
		return 0;
	/* The thread takes no signals: keyd's signalfd and the supervisor own them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&ts.thread, NULL, tpm_thread_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "TPM: cannot start the TPM thread: %s", strerror(rc));
		return -1;
	}
	(void)pthread_detach(ts.thread);
	ts.running = 1;
	log_info("TPM: %s ready; signer thread started inside the sandbox (queue of %d, "
	    "deadline %u ms)", kd->cfg->tpm_tcti, TPM_QUEUE_MAX,
	    kd->cfg->keyd_timeout_ms * TPM_DEADLINE_PERCENT / 100);
	return 0;
}

/* ---- status -------------------------------------------------------------------------- */

void
keyd_status_fips_tpm(json_t *o)
{
	const char *ver = fips_provider_version();
	unsigned pending = 0;
	uint64_t signs = 0, timeouts = 0;

	json_object_set_new(o, "fips", json_pack("{s:b, s:b, s:s?}", "configured", kd->cfg->fips,
	    "active", fips_active(), "provider", ver));
	if (!ts.running) {
		json_object_set_new(o, "tpm", json_null());
		return;
	}
	keyd_tpm_counters(&pending, &signs, &timeouts);
	json_object_set_new(o, "tpm", json_pack("{s:s, s:i, s:i, s:I, s:I, s:I}", "tcti",
	    kd->cfg->tpm_tcti, "pending", (int)pending, "queue_max", TPM_QUEUE_MAX, "signs",
	    (json_int_t)signs, "timeouts", (json_int_t)timeouts, "failures",
	    (json_int_t)ts.failures));
}
