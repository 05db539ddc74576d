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
 * Generation numbers increase across keyd restarts too (they start from the clock), so a
 * worker that outlived a keyd restart never confuses an old generation with a new one.
 */
uint32_t
keyd_next_generation(void)
{
	uint32_t now = (uint32_t)time(NULL);

	kd->last_generation = now > kd->last_generation ? now : kd->last_generation + 1;
	return kd->last_generation;
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

int
keyd_identities_load(char *err, size_t errlen)
{
	const struct config *cfg = kd->cfg;

	kd->ids = calloc(cfg->n_identities ? cfg->n_identities : 1, sizeof(*kd->ids));
	if (kd->ids == NULL) {
		snprintf(err, errlen, "keyd: out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->n_identities; i++) {
		struct keyd_ident *id = &kd->ids[i];
		id->cfg = &cfg->identities[i];
		keyd_ident_policy(i, &id->policy);
		if (keystore_load(cfg, id->cfg, keyd_next_generation(), &id->cur, err, errlen) == -1)
			return -1;
		keyd_log_key(id->cfg->name, id->cur);
	}
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
	if (kd->ids == NULL)
		return;
	for (size_t i = 0; i < kd->cfg->n_identities; i++) {
		keystore_free(kd->ids[i].cur);
		keystore_free(kd->ids[i].prev);
	}
	free(kd->ids);
	kd->ids = NULL;
}
