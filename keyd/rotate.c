/*
 * Rotation: `redoubt rotate`, SIGHUP and auto-reload all end here.
 *
 * 1. Stage: load and validate a complete new set — every identity's chain, key, CA bundle
 *    and CRL (keystore_load(): key matches certificate, allowed key type, valid now, chain
 *    verifies against the CA and CRL), and every listener's and connector's own CA and CRL
 *    (trust.c).  One bad file refuses the whole set: nothing is replaced, the running
 *    generations keep serving, and the reason goes back to the caller and into the audit log.
 * 2. Commit: an identity whose material (chain, key, CA, CRL, and the trust of the sections
 *    that use it) is unchanged keeps its generation; a changed one gets a new generation, the
 *    old one becomes "previous" (still signs for connections made with it; there are none to
 *    make, but a paused handshake may still ask), and the one before that is dropped.
 * 3. Publish the new generations to every worker (they use them for new handshakes, keep
 *    existing connections on the old one, and end the connections of the generation that was
 *    dropped); with --revoke-previous, end the previous generation's connections at once and
 *    forget its key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "audit/events.h"
#include "common/log.h"
#include "keyd/keyd.h"

#define ROTATE_ERR_MAX (KEYSTORE_ERR_MAX + 128)   /* bytes of a refusal reason */

/* ---------- staging ---------- */

static int
rotate_digest_u32(EVP_MD_CTX *md, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

	return EVP_DigestUpdate(md, b, sizeof(b));
}

static int
rotate_digest_pem(EVP_MD_CTX *md, const char *pem, size_t len)
{
	return rotate_digest_u32(md, (uint32_t)len) && (len == 0 || EVP_DigestUpdate(md, pem, len));
}

/*
 * What identity idx is made of: key id, chain, CA, CRL, and the trust of every listener and
 * connector that uses it with its own CA or CRL.  Equal digests: nothing to rotate.
 */
static int
rotate_material(size_t idx, const struct keyd_stage *st, uint8_t out[32])
{
	const struct config *cfg = kd->cfg;
	const struct keyd_key *k = st->keys[idx];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	    EVP_DigestUpdate(md, k->key_id, sizeof(k->key_id)) &&
	    rotate_digest_pem(md, k->chain_pem, k->chain_len) &&
	    rotate_digest_pem(md, k->ca_pem, k->ca_len) &&
	    rotate_digest_pem(md, k->crl_pem, k->crl_len);

	for (size_t i = 0; ok && i < cfg->n_listeners; i++)
		if ((size_t)cfg->listeners[i].identity == idx && st->listeners[i].used)
			ok = rotate_digest_u32(md, 0x4c000000u | (uint32_t)i) &&
			    EVP_DigestUpdate(md, st->listeners[i].digest, 32);
	for (size_t i = 0; ok && i < cfg->n_connectors; i++)
		if ((size_t)cfg->connectors[i].identity == idx && st->connectors[i].used)
			ok = rotate_digest_u32(md, 0x43000000u | (uint32_t)i) &&
			    EVP_DigestUpdate(md, st->connectors[i].digest, 32);
	ok = ok && EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

void
keyd_stage_free(struct keyd_stage *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < CONFIG_IDENTITIES_MAX; i++)
		keystore_free(st->keys[i]);
	for (size_t i = 0; i < CONFIG_LISTENERS_MAX; i++)
		keyd_trust_free(&st->listeners[i]);
	for (size_t i = 0; i < CONFIG_CONNECTORS_MAX; i++)
		keyd_trust_free(&st->connectors[i]);
	memset(st, 0, sizeof(*st));
}

int
keyd_stage_load(struct keyd_stage *st, char *err, size_t errlen)
{
	const struct config *cfg = kd->cfg;
	char why[KEYSTORE_ERR_MAX];

	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < cfg->n_identities; i++)
		if (keystore_load(cfg, &cfg->identities[i], 1, &st->keys[i], why,
		    sizeof(why)) == -1) {
			snprintf(err, errlen, "[identity %s] %s", cfg->identities[i].name, why);
			goto fail;
		}
	for (size_t i = 0; i < cfg->n_listeners; i++)
		if (keyd_trust_load(IPC_SCOPE_LISTENER, i, st->keys[cfg->listeners[i].identity],
		    &st->listeners[i], err, errlen) == -1)
			goto fail;
	for (size_t i = 0; i < cfg->n_connectors; i++)
		if (keyd_trust_load(IPC_SCOPE_CONNECTOR, i, st->keys[cfg->connectors[i].identity],
		    &st->connectors[i], err, errlen) == -1)
			goto fail;
	for (size_t i = 0; i < cfg->n_identities; i++)
		if (rotate_material(i, st, st->material[i]) == -1) {
			snprintf(err, errlen, "[identity %s] cannot digest its material",
			    cfg->identities[i].name);
			goto fail;
		}
	return 0;
fail:
	keyd_stage_free(st);
	return -1;
}

/* ---------- audit and answers ---------- */

static json_t *
rotate_who(const struct keyd_rotate_req *req)
{
	json_t *f = json_pack("{s:s, s:I, s:b}", "source", req->source, "uid",
	    (json_int_t)req->uid, "revoke_previous", req->revoke_previous);

	if (f != NULL && req->pid > 0)
		json_object_set_new(f, "pid", json_integer(req->pid));
	return f;
}

static void
rotate_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

/* A generation as the answer and status describe it. */
json_t *
keyd_key_json(const struct keyd_key *k)
{
	char until[32];
	long long left;

	if (k == NULL)
		return json_null();
	rotate_time(k->not_after, until, sizeof(until));
	left = ((long long)k->not_after - (long long)time(NULL)) / 86400;
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "generation",
	    (json_int_t)k->generation, "serial", k->serial, "fingerprint", k->fingerprint,
	    "subject", k->subject, "not_after", until, "days_left", (json_int_t)left);
}

static void
rotate_remember(const struct keyd_rotate_req *req, const char *outcome, const char *reason)
{
	char now[32];

	rotate_time(time(NULL), now, sizeof(now));
	json_decref(kd->last_rotation);
	kd->last_rotation = json_pack("{s:s, s:s, s:I, s:s, s:s}", "time", now, "source",
	    req->source, "uid", (json_int_t)req->uid, "outcome", outcome, "reason", reason);
}

static json_t *
rotate_refused(const struct keyd_rotate_req *req, const char *why)
{
	json_t *f = rotate_who(req);

	log_warnx("rotation (%s) refused: %s; the running generations keep serving", req->source,
	    why);
	keyd_audit(AUDIT_ROTATION_REFUSED, AUDIT_WORKER_NONE, "failure", why, f);
	json_decref(f);
	rotate_remember(req, "refused", why);
	return json_pack("{s:b, s:s}", "ok", 0, "error", why);
}

static void
rotate_audit_applied(const struct keyd_rotate_req *req, const struct keyd_ident *id,
    const struct keyd_key *old, uint32_t revoked)
{
	json_t *f = rotate_who(req);
	char reason[128];

	json_object_set_new(f, "identity", json_string(id->cfg->name));
	json_object_set_new(f, "new_generation", json_integer(id->cur->generation));
	json_object_set_new(f, "new_serial", json_string(id->cur->serial));
	json_object_set_new(f, "new_fingerprint", json_string(id->cur->fingerprint));
	if (old != NULL) {
		json_object_set_new(f, "old_generation", json_integer(old->generation));
		json_object_set_new(f, "old_serial", json_string(old->serial));
		json_object_set_new(f, "old_fingerprint", json_string(old->fingerprint));
	}
	if (revoked != 0)
		json_object_set_new(f, "revoked_generation", json_integer(revoked));
	if (old == NULL || old == id->cur)
		snprintf(reason, sizeof(reason), "identity %s unchanged%s", id->cfg->name,
		    revoked != 0 ? "; previous generation revoked" : "");
	else
		snprintf(reason, sizeof(reason), "identity %s: generation %u replaces %u%s",
		    id->cfg->name, id->cur->generation, old->generation,
		    revoked != 0 ? "; previous generation revoked" : "");
	keyd_audit(AUDIT_ROTATION_APPLIED, AUDIT_WORKER_NONE, "success", reason, f);
	json_decref(f);
}

/* ---------- commit ---------- */

/* Sends identity idx's current generation to every worker that is ready for it. */
static void
rotate_publish(uint16_t idx)
{
	for (unsigned i = 0; i < WORKERS_MAX; i++) {
		struct keyd_worker *w = &kd->workers[i];

		if (w->state != KW_READY || keyd_publish_identity(w, idx) == 0)
			continue;
		/* A worker that cannot take the new generation would serve the old one forever. */
		keyd_worker_close(w, "cannot queue the new generation");
		keyd_request_restart(w->index, "cannot queue the new generation");
	}
}

/*
 * Ends the previous generation's connections in every worker and detaches it: no connection
 * of it is left to sign for, so the caller frees its key as soon as it is audited.
 */
static struct keyd_key *
rotate_revoke(uint16_t idx)
{
	struct keyd_ident *id = &kd->ids[idx];
	struct keyd_key *k = id->prev;
	struct ipc_msg m;

	if (k == NULL)
		return NULL;
	ipc_msg_init(&m, IPC_REVOKE, 0);
	m.u.revoke.identity = idx;
	m.u.revoke.generation = k->generation;
	keyd_broadcast(&m);
	id->prev = NULL;
	log_info("identity %s: generation %u revoked: its connections end now", id->cfg->name,
	    k->generation);
	return k;
}

/* Swaps in the staged trust of every listener and connector (the old one goes with st). */
static void
rotate_swap_trust(struct keyd_stage *st)
{
	struct keyd_trust t;

	for (size_t i = 0; i < kd->cfg->n_listeners; i++) {
		t = kd->listener_trust[i];
		kd->listener_trust[i] = st->listeners[i];
		st->listeners[i] = t;
	}
	for (size_t i = 0; i < kd->cfg->n_connectors; i++) {
		t = kd->connector_trust[i];
		kd->connector_trust[i] = st->connectors[i];
		st->connectors[i] = t;
	}
}

/*
 * Takes identity idx's staged key when its material changed.  Returns the generation that
 * was active (now previous; the current one when nothing changed); *dropped is the one this
 * rotation pushes out, which the caller frees once it is audited.
 */
static struct keyd_key *
rotate_take(size_t idx, struct keyd_stage *st, struct keyd_key **dropped)
{
	struct keyd_ident *id = &kd->ids[idx];
	struct keyd_key *old = id->cur;

	*dropped = NULL;
	if (CRYPTO_memcmp(st->material[idx], id->material, sizeof(id->material)) == 0)
		return old;
	st->keys[idx]->generation = keyd_generation_number(st->material[idx], old);
	*dropped = id->prev;
	id->prev = old;
	id->cur = st->keys[idx];
	st->keys[idx] = NULL;
	memcpy(id->material, st->material[idx], sizeof(id->material));
	keyd_log_key(id->cfg->name, id->cur);
	return old;
}

json_t *
keyd_rotate(const struct keyd_rotate_req *req)
{
	const struct config *cfg = kd->cfg;
	struct keyd_key *old[CONFIG_IDENTITIES_MAX], *dropped[CONFIG_IDENTITIES_MAX];
	struct keyd_key *gone[CONFIG_IDENTITIES_MAX] = { NULL };
	uint32_t revoked[CONFIG_IDENTITIES_MAX] = { 0 };
	struct keyd_stage *st;
	char err[ROTATE_ERR_MAX];
	json_t *f, *answer, *list;
	int changed = 0;

	f = rotate_who(req);
	keyd_audit(AUDIT_ROTATION_REQUESTED, AUDIT_WORKER_NONE, "success", "rotation requested",
	    f);
	json_decref(f);
	log_info("rotation requested (%s, uid %ld)", req->source, req->uid);
	/* What auto-reload compares against from now on: the files this attempt reads. */
	keyd_autoreload_snapshot();
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return rotate_refused(req, "keyd: out of memory");
	if (keyd_stage_load(st, err, sizeof(err)) == -1) {
		free(st);
		return rotate_refused(req, err);
	}

	for (size_t i = 0; i < cfg->n_identities; i++) {
		old[i] = rotate_take(i, st, &dropped[i]);
		changed += old[i] != kd->ids[i].cur;
	}
	rotate_swap_trust(st);
	keyd_stage_free(st);
	free(st);
	for (size_t i = 0; i < cfg->n_identities; i++)
		if (old[i] != kd->ids[i].cur)
			rotate_publish((uint16_t)i);
	for (size_t i = 0; req->revoke_previous && i < cfg->n_identities; i++)
		if ((gone[i] = rotate_revoke((uint16_t)i)) != NULL)
			revoked[i] = gone[i]->generation;

	answer = json_pack("{s:b, s:i}", "ok", 1, "changed", changed);
	list = json_array();
	for (size_t i = 0; i < cfg->n_identities; i++) {
		const struct keyd_ident *id = &kd->ids[i];
		int ch = old[i] != id->cur;
		json_t *o = json_pack("{s:s, s:b, s:o, s:o}", "name", id->cfg->name, "changed", ch,
		    "active", keyd_key_json(id->cur), "previous", keyd_key_json(id->prev));

		if (revoked[i] != 0)
			json_object_set_new(o, "revoked_generation", json_integer(revoked[i]));
		json_array_append_new(list, o);
		if (ch || revoked[i] != 0)
			rotate_audit_applied(req, id, ch ? old[i] : NULL, revoked[i]);
		/* Two rotations back, or revoked: workers already ended their connections. */
		keystore_free(dropped[i]);
		keystore_free(gone[i]);
	}
	json_object_set_new(answer, "identities", list);
	if (changed == 0 && !req->revoke_previous) {
		f = rotate_who(req);
		keyd_audit(AUDIT_ROTATION_APPLIED, AUDIT_WORKER_NONE, "success",
		    "no change: the files are the ones in use", f);
		json_decref(f);
	}
	snprintf(err, sizeof(err), "%d of %zu identities changed", changed, cfg->n_identities);
	rotate_remember(req, "applied", err);
	log_info("rotation (%s) applied: %s", req->source, err);
	keyd_expiry_check();
	return answer;
}
