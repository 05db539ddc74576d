/*
 * What `redoubt status` shows, as one JSON object: per identity the active and previous
 * generation (serial, SHA-256 fingerprint, notAfter, days left) with their connections, per
 * worker its connections by generation, the session-ticket keys' age, auto-reload and the
 * last rotation.  Also the certificate expiry warning, checked at start, after every
 * rotation and every KEYD_EXPIRY_CHECK_MS.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "keyd/keyd.h"
#include "keyd/tpm.h"

#define KEYD_EXPIRY_CHECK_MS (6ull * 3600 * 1000)    /* re-check expiry four times a day */
#define KEYD_SECONDS_PER_DAY 86400

static const char *const status_worker_states[] = {
	[KW_CLOSED] = "no channel",
	[KW_NEW]    = "connecting",
	[KW_READY]  = "ready",
};

/* Connections the workers that answered report on (identity, generation). */
static unsigned
status_conns(size_t identity, uint32_t generation, uint64_t stats_id)
{
	unsigned n = 0;

	for (unsigned i = 0; i < WORKERS_MAX; i++) {
		const struct keyd_worker *w = &kd->workers[i];
		if (w->state != KW_READY || w->stats_id != stats_id)
			continue;
		for (uint32_t e = 0; e < w->stats.n && e < IPC_STATS_MAX; e++)
			if (w->stats.e[e].identity == identity &&
			    w->stats.e[e].generation == generation)
				n += w->stats.e[e].conns;
	}
	return n;
}

static json_t *
status_generation(const struct keyd_key *k, size_t identity, uint64_t stats_id)
{
	json_t *o = keyd_key_json(k);

	if (k != NULL)
		json_object_set_new(o, "connections",
		    json_integer(status_conns(identity, k->generation, stats_id)));
	return o;
}

static json_t *
status_identities(uint64_t stats_id)
{
	json_t *list = json_array();
	time_t now = time(NULL);

	for (size_t i = 0; i < kd->cfg->n_identities; i++) {
		const struct keyd_ident *id = &kd->ids[i];
		long long left = (long long)id->cur->not_after - (long long)now;
		int expiring = kd->cfg->expiry_warning_days > 0 &&
		    left < (long long)kd->cfg->expiry_warning_days * KEYD_SECONDS_PER_DAY;

		json_array_append_new(list, json_pack("{s:s, s:o, s:o, s:b}", "name",
		    id->cfg->name, "active", status_generation(id->cur, i, stats_id), "previous",
		    status_generation(id->prev, i, stats_id), "expiring", expiring));
	}
	return list;
}

static json_t *
status_worker(const struct keyd_worker *w, unsigned index, uint64_t stats_id)
{
	json_t *o = json_pack("{s:I, s:s, s:b}", "index", (json_int_t)index, "state",
	    status_worker_states[w->state], "reported", w->state == KW_READY &&
	    w->stats_id == stats_id);
	json_t *gens;

	json_object_set_new(o, "signatures", json_integer((json_int_t)w->signs));
	json_object_set_new(o, "refusals", json_integer((json_int_t)w->refusals));
	if (w->state != KW_READY || w->stats_id != stats_id)
		return o;
	json_object_set_new(o, "connections", json_integer(w->stats.total_conns));
	gens = json_array();
	for (uint32_t e = 0; e < w->stats.n && e < IPC_STATS_MAX; e++) {
		const struct ipc_stats_entry *se = &w->stats.e[e];
		json_t *g = json_pack("{s:I, s:I}", "generation", (json_int_t)se->generation,
		    "connections", (json_int_t)se->conns);
		if (se->identity < kd->cfg->n_identities)
			json_object_set_new(g, "identity",
			    json_string(kd->cfg->identities[se->identity].name));
		json_array_append_new(gens, g);
	}
	json_object_set_new(o, "generations", gens);
	return o;
}

static json_t *
status_tickets(void)
{
	uint64_t now = (uint64_t)time(NULL);
	const struct ipc_ticket_slot *s = kd->tickets.slot;
	json_t *o = json_pack("{s:I, s:I, s:I}", "keys", (json_int_t)kd->tickets.count,
	    "lifetime_s", (json_int_t)kd->tickets.lifetime, "current_age_s",
	    (json_int_t)(now - s[0].created));

	json_object_set_new(o, "previous_age_s", kd->tickets.count > 1 ?
	    json_integer((json_int_t)(now - s[1].created)) : json_null());
	if (evloop_timer_armed(&kd->ticket_timer))
		json_object_set_new(o, "next_rotation_s", json_integer((json_int_t)
		    ((kd->ticket_timer.when_ms > kd->loop.now_ms ?
		    kd->ticket_timer.when_ms - kd->loop.now_ms : 0) / 1000u)));
	return o;
}

json_t *
keyd_status_json(uint64_t stats_id)
{
	json_t *o, *workers = json_array();

	for (unsigned i = 0; i < kd->cfg->workers && i < WORKERS_MAX; i++)
		json_array_append_new(workers, status_worker(&kd->workers[i], i, stats_id));
	o = json_pack("{s:b, s:{s:I, s:I, s:b}, s:o, s:o, s:o, s:{s:b, s:s}, s:I}", "ok", 1,
	    "keyd", "pid", (json_int_t)getpid(), "uptime_s",
	    (json_int_t)((uint64_t)time(NULL) - kd->started), "admission", kd->admission,
	    "identities", status_identities(stats_id), "workers", workers, "tickets",
	    status_tickets(), "auto_reload", "enabled", kd->cfg->auto_reload, "mode",
	    keyd_autoreload_mode(), "expiry_warning_days",
	    (json_int_t)kd->cfg->expiry_warning_days);
	if (o != NULL)
		json_object_set(o, "last_rotation", kd->last_rotation != NULL ?
		    kd->last_rotation : json_null());
	if (o != NULL)
		keyd_status_fips_tpm(o);     /* "fips" and "tpm" (keyd/tpm_signer.c) */
	return o;
}

/* Warns about every active certificate that expires within expiry-warning-days. */
void
keyd_expiry_check(void)
{
	time_t now = time(NULL);
	unsigned days = kd->cfg->expiry_warning_days;

	for (size_t i = 0; days > 0 && i < kd->cfg->n_identities; i++) {
		const struct keyd_key *k = kd->ids[i].cur;
		long long left = (long long)k->not_after - (long long)now;
		char until[32];
		struct tm tm;

		if (left >= (long long)days * KEYD_SECONDS_PER_DAY)
			continue;
		if (gmtime_r(&k->not_after, &tm) == NULL ||
		    strftime(until, sizeof(until), "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
			snprintf(until, sizeof(until), "?");
		log_warnx("identity %s: certificate serial %s expires in %lld day%s (%s), within "
		    "expiry-warning-days = %u: renew it and run 'redoubt rotate'",
		    kd->ids[i].cfg->name, k->serial, left / KEYD_SECONDS_PER_DAY,
		    left / KEYD_SECONDS_PER_DAY == 1 ? "" : "s", until, days);
	}
	evloop_timer_after(&kd->loop, &kd->expiry_timer, KEYD_EXPIRY_CHECK_MS);
}
