/*
 * The identities keyd holds, each with at most KEYD_GENERATIONS_MAX generations, and the
 * signing policy each identity's use in the configuration implies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "keyd/keyd.h"

/*
 * A generation's number comes from what it is made of (the material digest), not from a
 * counter or the clock: keyd keeps no state across restarts, and a restarted keyd must give
 * the generation the workers already hold the same number (it does: same files, same number)
 * and never reuse a number for something else (a clock-based counter that ran ahead during
 * quick rotations did).  Only the active generation's number is avoided; the one before it
 * is dropped by the rotation that makes a new one.
 */
uint32_t
keyd_generation_number(const uint8_t material[32], const struct keyd_key *cur)
{
	uint32_t g = (uint32_t)material[0] | (uint32_t)material[1] << 8 |
	    (uint32_t)material[2] << 16 | (uint32_t)material[3] << 24;

	if (g == 0)
		g = 1;                    /* 0 is "no generation" on the wire */
	while (cur != NULL && g == cur->generation)
		g = g == UINT32_MAX ? 1 : g + 1;
	return g;
}

/* TLS 1.2 SKE signing is allowed only where some use of the identity enables TLS 1.2. */
static void
keyd_ident_policy(size_t idx, struct sign_policy *p)
{
	const struct config *cfg = kd->cfg;
	int any12 = 0, max12 = 0;

	memset(p, 0, sizeof(*p));
	p->fips = cfg->fips;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if ((size_t)l->identity != idx)
			continue;
		any12 |= l->tls.proto_min <= TLS1_2_VERSION;
		max12 |= l->tls.proto_max < TLS1_3_VERSION;
	}
	for (size_t i = 0; i < cfg->n_connectors; i++) {
		const struct config_connector *k = &cfg->connectors[i];
		if ((size_t)k->identity != idx)
			continue;
		p->client_role = 1;
	}
	p->tls12 = any12;
	/* When every TLS 1.2 use also offers 1.3, a genuine 1.2 handshake carries DOWNGRD. */
	p->require_downgrd = any12 && !max12;
}

void
keyd_log_key(const char *name, const struct keyd_key *k)
{
	char until[32];
	struct tm tm;

	if (gmtime_r(&k->not_after, &tm) == NULL ||
	    strftime(until, sizeof(until), "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
		snprintf(until, sizeof(until), "?");
	log_info("identity %s: generation %u: %s, serial %s, valid until %s", name,
	    k->generation, k->subject, k->serial, until);
}

/* The first generation of everything, validated exactly as a rotation validates. */
int
keyd_identities_load(char *err, size_t errlen)
{
	const struct config *cfg = kd->cfg;
	struct keyd_stage *st;

	kd->ids = calloc(cfg->n_identities ? cfg->n_identities : 1, sizeof(*kd->ids));
	kd->listener_trust = calloc(cfg->n_listeners ? cfg->n_listeners : 1,
	    sizeof(*kd->listener_trust));
	kd->connector_trust = calloc(cfg->n_connectors ? cfg->n_connectors : 1,
	    sizeof(*kd->connector_trust));
	st = calloc(1, sizeof(*st));
	if (kd->ids == NULL || kd->listener_trust == NULL || kd->connector_trust == NULL ||
	    st == NULL) {
		free(st);
		snprintf(err, errlen, "keyd: out of memory");
		return -1;
	}
	if (keyd_stage_load(st, err, errlen) == -1) {
		free(st);
		return -1;
	}
	for (size_t i = 0; i < cfg->n_identities; i++) {
		struct keyd_ident *id = &kd->ids[i];
		id->cfg = &cfg->identities[i];
		keyd_ident_policy(i, &id->policy);
		id->cur = st->keys[i];
		st->keys[i] = NULL;
		id->cur->generation = keyd_generation_number(st->material[i], NULL);
		memcpy(id->material, st->material[i], sizeof(id->material));
		keyd_log_key(id->cfg->name, id->cur);
	}
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		kd->listener_trust[i] = st->listeners[i];
		memset(&st->listeners[i], 0, sizeof(st->listeners[i]));
	}
	for (size_t i = 0; i < cfg->n_connectors; i++) {
		kd->connector_trust[i] = st->connectors[i];
		memset(&st->connectors[i], 0, sizeof(st->connectors[i]));
	}
	keyd_stage_free(st);
	free(st);
	return 0;
}

struct keyd_key *
keyd_key_lookup(const uint8_t key_id[IPC_KEY_ID_LEN], struct keyd_ident **ident)
{
	struct keyd_key *found = NULL;

	/* Every candidate is compared, in constant time, whatever matches first. */
	for (size_t i = 0; i < kd->cfg->n_identities; i++) {
		struct keyd_key *gens[KEYD_GENERATIONS_MAX] = { kd->ids[i].cur, kd->ids[i].prev };
		for (int g = 0; g < KEYD_GENERATIONS_MAX; g++)
			if (gens[g] != NULL &&
			    CRYPTO_memcmp(gens[g]->key_id, key_id, IPC_KEY_ID_LEN) == 0) {
				found = gens[g];
				*ident = &kd->ids[i];
			}
	}
	return found;
}

void
keyd_identities_free(void)
{
	for (size_t i = 0; kd->listener_trust != NULL && i < kd->cfg->n_listeners; i++)
		keyd_trust_free(&kd->listener_trust[i]);
	for (size_t i = 0; kd->connector_trust != NULL && i < kd->cfg->n_connectors; i++)
		keyd_trust_free(&kd->connector_trust[i]);
	free(kd->listener_trust);
	free(kd->connector_trust);
	kd->listener_trust = kd->connector_trust = NULL;
	if (kd->ids == NULL)
		return;
	for (size_t i = 0; i < kd->cfg->n_identities; i++) {
		keystore_free(kd->ids[i].cur);
		keystore_free(kd->ids[i].prev);
	}
	free(kd->ids);
	kd->ids = NULL;
}
