/*
 * Configuration sections: a [header] appends an identity, listener or connector (file order
 * is their index, which every process agrees on); the end of a section checks its required
 * keys and turns a listener's alpn list and routes into its final route table.
 */
#include "policy/config_parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t
cfgsec_count(const struct config *cfg, enum config_section_type t)
{
	return t == CS_IDENTITY ? cfg->n_identities : t == CS_LISTENER ? cfg->n_listeners :
	    t == CS_CONNECTOR ? cfg->n_connectors : 0;
}

static const char *
cfgsec_name(const struct config *cfg, enum config_section_type t, size_t i)
{
	return t == CS_IDENTITY ? cfg->identities[i].name : t == CS_LISTENER ?
	    cfg->listeners[i].name : cfg->connectors[i].name;
}

static struct config_section_state *
cfgsec_states(struct config_parser *p, enum config_section_type t)
{
	return t == CS_IDENTITY ? p->identities : t == CS_LISTENER ? p->listeners :
	    p->connectors;
}

/* Appends a zeroed object of type t and returns its name field (which the caller fills). */
static char *
cfgsec_append(struct config *cfg, enum config_section_type t)
{
	void *grown;

	switch (t) {
	case CS_IDENTITY:
		if ((grown = realloc(cfg->identities, (cfg->n_identities + 1) *
		    sizeof(*cfg->identities))) == NULL)
			return NULL;
		cfg->identities = grown;
		memset(&cfg->identities[cfg->n_identities], 0, sizeof(*cfg->identities));
		return cfg->identities[cfg->n_identities++].name;
	case CS_LISTENER:
		if ((grown = realloc(cfg->listeners, (cfg->n_listeners + 1) *
		    sizeof(*cfg->listeners))) == NULL)
			return NULL;
		cfg->listeners = grown;
		memset(&cfg->listeners[cfg->n_listeners], 0, sizeof(*cfg->listeners));
		return cfg->listeners[cfg->n_listeners++].name;
	case CS_CONNECTOR:
		if ((grown = realloc(cfg->connectors, (cfg->n_connectors + 1) *
		    sizeof(*cfg->connectors))) == NULL)
			return NULL;
		cfg->connectors = grown;
		memset(&cfg->connectors[cfg->n_connectors], 0, sizeof(*cfg->connectors));
		return cfg->connectors[cfg->n_connectors++].name;
	default:
		return NULL;
	}
}

/* Defaults of a new section object that zero does not give. */
static void
cfgsec_object_defaults(struct config_parser *p, int line)
{
	if (p->sec == CS_IDENTITY) {
		p->cfg->identities[p->sec_index].line = line;
	} else if (p->sec == CS_LISTENER) {
		p->cfg->listeners[p->sec_index].line = line;
		p->cfg->listeners[p->sec_index].identity = -1;
		p->cfg->listeners[p->sec_index].mode = TLS_MODE_VERIFY_FULL;
	} else if (p->sec == CS_CONNECTOR) {
		p->cfg->connectors[p->sec_index].line = line;
		p->cfg->connectors[p->sec_index].identity = -1;
		p->cfg->connectors[p->sec_index].mode = TLS_MODE_VERIFY_FULL;
	}
}

static int
cfgsec_begin_global(struct config_parser *p)
{
	if (p->global.line != 0)
		return config_fail(p, p->lineno, "duplicate section [global] (first at line %d)",
		    p->global.line);
	p->global.line = p->lineno;
	p->sec = CS_GLOBAL;
	snprintf(p->sec_label, sizeof(p->sec_label), "[global]");
	return 0;
}

int
cfgsec_begin(struct config_parser *p, enum config_section_type t, const char *name)
{
	static const size_t max[] = {
		[CS_IDENTITY] = CONFIG_IDENTITIES_MAX, [CS_LISTENER] = CONFIG_LISTENERS_MAX,
		[CS_CONNECTOR] = CONFIG_CONNECTORS_MAX,
	};
	const char *kind = config_section_kind(t);
	size_t n = cfgsec_count(p->cfg, t);
	struct config_section_state *states;
	char *objname;

	if (t == CS_GLOBAL)
		return cfgsec_begin_global(p);
	states = cfgsec_states(p, t);
	for (size_t i = 0; i < n; i++)
		if (strcmp(cfgsec_name(p->cfg, t, i), name) == 0)
			return config_fail(p, p->lineno, "duplicate section [%s %s] (first at line "
			    "%d)", kind, name, states[i].line);
	if (n == max[t])
		return config_fail(p, p->lineno, "too many [%s] sections (at most %zu)", kind,
		    max[t]);
	if ((objname = cfgsec_append(p->cfg, t)) == NULL)
		return config_fail(p, p->lineno, "out of memory");
	snprintf(objname, CONFIG_NAME_MAX + 1, "%s", name);
	memset(&states[n], 0, sizeof(states[n]));
	states[n].line = p->lineno;
	p->sec = t;
	p->sec_index = n;
	snprintf(p->sec_label, sizeof(p->sec_label), "[%s %s]", kind, name);
	cfgsec_object_defaults(p, p->lineno);
	p->n_alpn = 0;
	p->n_routes = 0;
	return 0;
}

static int
cfgsec_end_connector(struct config_parser *p)
{
	const struct config_connector *c = cfgkey_object(p);
	const struct config_section_state *st = cfgkey_state(p);

	if (c->transparent && st->key_line[CK_CONNECT] != 0)
		return config_fail(p, st->key_line[CK_CONNECT], "connect: not used with "
		    "transparent = yes (a transparent connector dials each connection's original "
		    "destination)");
	if (!c->transparent && st->key_line[CK_CONNECT] == 0)
		return config_fail(p, st->line, "%s needs 'connect' (or transparent = yes)",
		    p->sec_label);
	return 0;
}

/*
 * Turns the alpn list and the pending routes into cfg routes: one per offered protocol, in
 * alpn order, so that the routes are also the list of protocols the listener offers.  A
 * protocol without a route line goes to the default backend.
 */
static int
cfgsec_end_listener(struct config_parser *p)
{
	struct config_listener *l = cfgkey_object(p);

	for (size_t i = 0; i < p->n_routes; i++) {
		const struct config_pending_route *r = &p->routes[i];
		if (!cfgkey_alpn_listed(p, r->alpn))
			return config_fail(p, r->route_line ? r->route_line : r->allow_line,
			    "%s: ALPN '%s' is not listed in alpn", r->route_line ? "route" :
			    "route-allow", r->alpn);
	}
	if (p->n_alpn == 0)
		return 0;
	if ((l->routes = calloc(p->n_alpn, sizeof(*l->routes))) == NULL)
		return config_fail(p, cfgkey_state(p)->line, "out of memory");
	l->n_routes = p->n_alpn;
	for (size_t i = 0; i < p->n_alpn; i++) {
		struct config_route *route = &l->routes[i];
		snprintf(route->alpn, sizeof(route->alpn), "%s", p->alpn[i]);
		route->backend = l->backend;
		for (size_t j = 0; j < p->n_routes; j++) {
			struct config_pending_route *r = &p->routes[j];
			if (strcmp(r->alpn, p->alpn[i]) != 0)
				continue;
			if (r->backend.kind != ADDR_NONE)
				route->backend = r->backend;
			route->allow = r->allow;
			route->n_allow = r->n_allow;
			r->allow = NULL;
		}
	}
	cfgsec_release_pending(p);
	return 0;
}

int
cfgsec_end(struct config_parser *p)
{
	int r = 0;

	if (p->sec == CS_NONE || p->sec == CS_GLOBAL) {
		p->sec = CS_NONE;
		return 0;
	}
	if (cfgkey_check_required(p) == -1)
		return -1;
	if (p->sec == CS_LISTENER)
		r = cfgsec_end_listener(p);
	else if (p->sec == CS_CONNECTOR)
		r = cfgsec_end_connector(p);
	if (r == 0)
		p->sec = CS_NONE;
	return r;
}

void
cfgsec_release_pending(struct config_parser *p)
{
	for (size_t i = 0; i < p->n_routes; i++) {
		free(p->routes[i].allow);
		p->routes[i].allow = NULL;
	}
	p->n_routes = 0;
	p->n_alpn = 0;
}
