/*
 * keyd's side of the worker channels.  Like OpenSSH's monitor and relayd's ca process:
 * a table says which request is permitted in which state; each handler checks every field
 * again (the worker may be compromised) before anything is done; a frame that does not
 * decode, or a request not permitted now, is a violation that closes that worker's
 * channel and has the supervisor restart it, while keyd stays up.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "audit/events.h"
#include "common/log.h"
#include "keyd/keyd.h"
#include "keyd/tpm.h"

#define KEYD_RATE_LOG_MS 1000   /* at most one rate-limit audit record per worker per second */

typedef int (*keyd_answer_fn)(struct keyd_worker *, const struct ipc_msg *);

static int keyd_answer_hello(struct keyd_worker *, const struct ipc_msg *);
static int keyd_answer_sign(struct keyd_worker *, const struct ipc_msg *);
static int keyd_answer_audit(struct keyd_worker *, const struct ipc_msg *);
static int keyd_answer_stats(struct keyd_worker *, const struct ipc_msg *);
static int keyd_answer_ping(struct keyd_worker *, const struct ipc_msg *);
static int keyd_answer_pong(struct keyd_worker *, const struct ipc_msg *);

/* What a worker may send, and when.  Everything else is a violation. */
static const struct keyd_permit {
	uint16_t               type;
	enum keyd_worker_state state;
	keyd_answer_fn         fn;
} keyd_permits[] = {
	{ IPC_HELLO, KW_NEW,   keyd_answer_hello },
	{ IPC_SIGN,  KW_READY, keyd_answer_sign },
	{ IPC_AUDIT, KW_READY, keyd_answer_audit },
	{ IPC_STATS, KW_READY, keyd_answer_stats },
	{ IPC_PING,  KW_READY, keyd_answer_ping },
	{ IPC_PONG,  KW_READY, keyd_answer_pong },
};

/* Queues m for worker w; a queue that forms is flushed when the channel becomes writable. */
int
keyd_send(struct keyd_worker *w, const struct ipc_msg *m)
{
	int had = ipc_chan_has_queued(&w->chan);
	enum ipc_io r = ipc_chan_send(&w->chan, m, -1);

	if (r != IPC_IO_OK)
		return -1;
	if (!had && ipc_chan_has_queued(&w->chan) &&
	    evloop_mod(&kd->loop, &w->io, EPOLLIN | EPOLLOUT) == -1)
		return -1;
	return 0;
}

int
keyd_send_err(struct keyd_worker *w, uint64_t req_id, uint16_t code)
{
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_ERR, req_id);
	m.u.err.code = code;
	return keyd_send(w, &m);
}

/* ---------- HELLO: send everything public, then say ready ---------- */

static int
keyd_answer_hello(struct keyd_worker *w, const struct ipc_msg *m)
{
	struct ipc_msg ok;

	if (m->u.hello.flags != 0)
		return -1;
	for (size_t i = 0; i < kd->cfg->n_identities; i++)
		if (keyd_publish_identity(w, (uint16_t)i) == -1)
			return -1;
	if (keyd_publish_tickets(w) == -1)
		return -1;
	if (!kd->admission) {
		ipc_msg_init(&ok, IPC_ADMISSION, 0);
		ok.u.admission.accept = 0;
		if (keyd_send(w, &ok) == -1)
			return -1;
	}
	ipc_msg_init(&ok, IPC_HELLO_OK, 0);
	ok.u.hello_ok.identities = (uint32_t)kd->cfg->n_identities;
	if (keyd_send(w, &ok) == -1)
		return -1;
	w->state = KW_READY;
	w->tokens = kd->cfg->sign_burst;
	w->tokens_ms = kd->loop.now_ms;
	log_info("worker %u: channel ready", w->index);
	return 0;
}

/* ---------- SIGN: the checklist ---------- */

static int
keyd_take_token(struct keyd_worker *w)
{
	uint64_t now = kd->loop.now_ms;
	double burst = kd->cfg->sign_burst;

	w->tokens += (double)(now - w->tokens_ms) * kd->cfg->sign_rate / 1000.0;
	if (w->tokens > burst)
		w->tokens = burst;
	w->tokens_ms = now;
	if (w->tokens < 1.0)
		return 0;
	w->tokens -= 1.0;
	return 1;
}

static void
keyd_refusal(struct keyd_worker *w, const struct ipc_msg *m, const char *reason)
{
	char kid[17];
	json_t *f;

	for (int i = 0; i < 8; i++)
		snprintf(kid + (size_t)i * 2, 3, "%02x", m->u.sign.key_id[i]);
	w->refusals++;
	w->strikes++;
	log_warnx("worker %u: signature refused: %s (key %s, sigalg 0x%04x, %u bytes)",
	    w->index, reason, kid, m->u.sign.sigalg, m->u.sign.tbs_len);
	f = json_pack("{s:s, s:I, s:I}", "key_id", kid, "sigalg", (json_int_t)m->u.sign.sigalg,
	    "tbs_len", (json_int_t)m->u.sign.tbs_len);
	keyd_audit(AUDIT_SIGN_REFUSED, (int)w->index, "failure", reason, f);
	json_decref(f);
}

static int
keyd_answer_sign(struct keyd_worker *w, const struct ipc_msg *m)
{
	const struct ipc_sign *req = &m->u.sign;
	struct keyd_ident *ident = NULL;
	struct keyd_key *key;
	struct ipc_msg ok;
	size_t siglen = 0;
	int refusal;

	/* 1. The codec checked the frame; check the lengths again here. */
	if (req->tbs_len == 0 || req->tbs_len > IPC_TBS_MAX)
		return -1;
	/* 2. Rate: the only bound on how much a compromised worker can use the oracle. */
	if (!keyd_take_token(w)) {
		w->rate_limited++;
		if (kd->loop.now_ms - w->rate_logged_ms >= KEYD_RATE_LOG_MS) {
			w->rate_logged_ms = kd->loop.now_ms;
			log_warnx("worker %u: signing rate limit (%u/s) reached", w->index,
			    kd->cfg->sign_rate);
			keyd_audit(AUDIT_RATE_LIMITED, (int)w->index, "failure",
			    "signing rate limit reached", NULL);
		}
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_BUSY);
	}
	/* 3. A key we hold. */
	key = keyd_key_lookup(req->key_id, &ident);
	if (key == NULL) {
		keyd_refusal(w, m, "unknown key id");
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_UNKNOWN_KEY);
	}
	/* 4+5. Sigalg fits the key; input is a TLS handshake signature input. */
	refusal = sign_policy_check(&ident->policy, key->type, key->bits, req->sigalg, req->tbs,
	    req->tbs_len);
	if (refusal != SIGN_OK) {
		keyd_refusal(w, m, sign_refusal_name(refusal));
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_POLICY);
	}
	/* 6. A TPM key: the TPM thread signs and the answer follows later (keyd/tpm_signer.c). */
	if (key->tpm != NULL)
		return keyd_tpm_submit(w, m, key, ident->cfg->name);
	/* 6. Sign; the size comes from the key, never from the request. */
	ipc_msg_init(&ok, IPC_SIGN_OK, m->hdr.req_id);
	if (keystore_sign(key, req->sigalg, req->tbs, req->tbs_len, ok.u.sign_ok.sig,
	    sizeof(ok.u.sign_ok.sig), &siglen) == -1 || siglen == 0) {
		log_warnx("worker %u: signing failed with identity %s", w->index, ident->cfg->name);
		return keyd_send_err(w, m->hdr.req_id, IPC_ERR_INTERNAL);
	}
	ok.u.sign_ok.sig_len = (uint16_t)siglen;
	w->signs++;
	return keyd_send(w, &ok);
}

/* ---------- AUDIT, STATS, PING ---------- */

static int
keyd_answer_audit(struct keyd_worker *w, const struct ipc_msg *m)
{
	const struct ipc_audit *a = &m->u.audit;
	json_t *obj, *v;
	json_error_t jerr;
	const char *outcome = "success", *reason = "";

	if (!audit_event_from_worker(a->event))
		return -1;
	obj = json_loadb(a->json, a->len, JSON_REJECT_DUPLICATES, &jerr);
	if (obj == NULL || !json_is_object(obj)) {
		json_decref(obj);
		return -1;
	}
	v = json_object_get(obj, "outcome");
	if (json_is_string(v) && strcmp(json_string_value(v), "failure") == 0)
		outcome = "failure";
	v = json_object_get(obj, "reason");
	if (json_is_string(v))
		reason = json_string_value(v);
	/* The worker id comes from the channel; the writer never lets a field override it. */
	keyd_audit(a->event, (int)w->index, outcome, reason, obj);
	json_decref(obj);
	return 0;
}

static int
keyd_answer_stats(struct keyd_worker *w, const struct ipc_msg *m)
{
	w->stats = m->u.stats;
	/* The req_id says which status round this answers; a stale one is kept, not counted. */
	w->stats_id = m->hdr.req_id;
	keyd_control_stats_arrived();
	return 0;
}

static int
keyd_answer_ping(struct keyd_worker *w, const struct ipc_msg *m)
{
	struct ipc_msg pong;

	ipc_msg_init(&pong, IPC_PONG, m->hdr.req_id);
	return keyd_send(w, &pong);
}

static int
keyd_answer_pong(struct keyd_worker *w, const struct ipc_msg *m)
{
	return 0;
}

/* ---------- the channel ---------- */

static int
keyd_dispatch(struct keyd_worker *w, const struct ipc_msg *m)
{
	for (size_t i = 0; i < sizeof(keyd_permits) / sizeof(keyd_permits[0]); i++)
		if (keyd_permits[i].type == m->hdr.type)
			return keyd_permits[i].state == w->state ? keyd_permits[i].fn(w, m) : -1;
	return -1;
}

void
keyd_worker_close(struct keyd_worker *w, const char *why)
{
	if (w->state == KW_CLOSED)
		return;
	log_warnx("worker %u: channel closed: %s", w->index, why);
	evloop_del(&kd->loop, &w->io);
	ipc_chan_close(&w->chan);
	w->state = KW_CLOSED;
}

static void
keyd_violation(struct keyd_worker *w, const char *what)
{
	char why[160];

	snprintf(why, sizeof(why), "protocol violation: %s", what);
	keyd_audit(AUDIT_SIGN_REFUSED, (int)w->index, "failure", why, NULL);
	keyd_worker_close(w, why);
	keyd_request_restart(w->index, why);
}

static void
keyd_worker_read(struct keyd_worker *w)
{
	struct ipc_msg m;
	int fd, err;
	char what[96];

	while (w->state != KW_CLOSED) {
		switch (ipc_chan_recv(&w->chan, &m, &fd, &err)) {
		case IPC_IO_OK:
			if (fd >= 0) {
				close(fd);
				keyd_violation(w, "descriptor sent to keyd");
				return;
			}
			if (keyd_dispatch(w, &m) == -1) {
				snprintf(what, sizeof(what), "%s not permitted here",
				    ipc_type_name(m.hdr.type));
				keyd_violation(w, what);
				return;
			}
			if (w->strikes >= KEYD_STRIKES_MAX) {
				keyd_violation(w, "too many refused requests");
				return;
			}
			break;
		case IPC_IO_AGAIN:
			return;
		case IPC_IO_EOF:
			keyd_worker_close(w, "worker went away");
			return;
		case IPC_IO_BADMSG:
			keyd_violation(w, ipc_codec_strerror(err));
			return;
		default:
			keyd_worker_close(w, strerror(errno));
			return;
		}
	}
}

static void
keyd_worker_io_cb(struct ev_io *io, uint32_t events)
{
	struct keyd_worker *w = io->arg;

	if (events & EPOLLOUT) {
		enum ipc_io r = ipc_chan_flush(&w->chan);
		if (r != IPC_IO_OK && r != IPC_IO_AGAIN) {
			keyd_worker_close(w, "cannot write to the worker");
			return;
		}
		if (!ipc_chan_has_queued(&w->chan))
			(void)evloop_mod(&kd->loop, &w->io, EPOLLIN);
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		keyd_worker_read(w);
}

void
keyd_worker_attach(unsigned index, int fd)
{
	struct keyd_worker *w = &kd->workers[index];

	keyd_worker_close(w, "replaced by a new channel");
	memset(w, 0, sizeof(*w));
	keyd_tpm_channel_reset(index);   /* TPM answers still due go to the old channel: dropped */
	w->index = index;
	ipc_chan_init(&w->chan, fd);
	w->io.fd = fd;
	w->io.cb = keyd_worker_io_cb;
	w->io.arg = w;
	if (evloop_add(&kd->loop, &w->io, EPOLLIN) == -1) {
		log_warn("worker %u: epoll_ctl(ADD)", index);
		ipc_chan_close(&w->chan);
		return;
	}
	w->state = KW_NEW;
}

void
keyd_broadcast(const struct ipc_msg *m)
{
	for (unsigned i = 0; i < WORKERS_MAX; i++)
		if (kd->workers[i].state == KW_READY && keyd_send(&kd->workers[i], m) == -1)
			keyd_worker_close(&kd->workers[i], "cannot queue a message");
}
