/*
 * FIPS mode: OpenSSL's FIPS provider and the base provider in the default library context,
 * "fips=yes" as the default property, and no default provider (with it loaded next to fips, a
 * "-fips" or "fips=no" query would quietly bypass the module).
 *
 * The provider is named by an OpenSSL configuration file (fips-config), never by OPENSSL_CONF
 * from the environment: keyd and the supervisor are privileged.  A missing provider is not an
 * error to OpenSSL (the fips section just does not activate), so every property this process
 * relies on is checked after loading, and anything short of it fails closed.
 */
#include "common/errbuf.h"
#include "common/fips.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "policy/config.h"

static int  fips_on;
static char fips_version[128];

static const char *
fips_ssl_reason(void)
{
	const char *r = ERR_reason_error_string(ERR_peek_last_error());

	return r != NULL ? r : "no detail";
}

/* How to get a provider, for every message that says one is missing. */
#define FIPS_HOWTO "FIPS mode needs OpenSSL's FIPS provider: build or install a fips.so for " \
	"OpenSSL 3.0 (ideally a validated release), run 'openssl fipsinstall -module " \
	"/path/fips.so -out /path/fipsmodule.cnf' on this machine, and point fips-config at an " \
	"OpenSSL config that includes it and activates fips and base (docs/fips.md); or set " \
	"fips = no"

/* A fetch that must come from the fips provider, and one that must fail. */
static int
fips_probe(char *err, size_t errlen)
{
	EVP_MD *sha = EVP_MD_fetch(NULL, "SHA2-256", NULL), *md5 = EVP_MD_fetch(NULL, "MD5", NULL);
	const char *pname = sha != NULL ? OSSL_PROVIDER_get0_name(EVP_MD_get0_provider(sha)) : NULL;
	int ok = sha != NULL && pname != NULL && strcmp(pname, "fips") == 0 && md5 == NULL;

	if (!ok)
		errbuf_set(err, errlen, "fips = yes: the FIPS provider is loaded but does not serve "
		    "this process (SHA-256 from %s, MD5 %s)", pname != NULL ? pname : "nowhere",
		    md5 != NULL ? "available: not FIPS-only" : "refused");
	EVP_MD_free(sha);
	EVP_MD_free(md5);
	ERR_clear_error();
	return ok ? 0 : -1;
}

static void
fips_read_version(OSSL_PROVIDER *prov)
{
	char *name = NULL, *version = NULL;
	OSSL_PARAM req[] = {
		OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, &name, 0),
		OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, &version, 0),
		OSSL_PARAM_END
	};

	if (OSSL_PROVIDER_get_params(prov, req) && name != NULL && version != NULL)
		snprintf(fips_version, sizeof(fips_version), "%s %s", name, version);
	else
		snprintf(fips_version, sizeof(fips_version), "fips (version unknown)");
}

int
fips_enable(const struct config *cfg, char *err, size_t errlen)
{
	OSSL_PROVIDER *fips;
	struct stat st;

	if (!cfg->fips)
		return 0;
	if (fips_on)
		return 0;
	if (stat(cfg->fips_config, &st) == -1) {
		errbuf_set(err, errlen, "fips = yes: fips-config %s: %s. " FIPS_HOWTO, cfg->fips_config,
		    strerror(errno));
		return -1;
	}
	ERR_clear_error();
	if (!OSSL_LIB_CTX_load_config(NULL, cfg->fips_config)) {
		errbuf_set(err, errlen, "fips = yes: fips-config %s does not load: %s. " FIPS_HOWTO,
		    cfg->fips_config, fips_ssl_reason());
		ERR_clear_error();
		return -1;
	}
	/* The config may only declare it; a failed self-test or integrity check leaves it out. */
	if (!OSSL_PROVIDER_available(NULL, "fips"))
		(void)OSSL_PROVIDER_load(NULL, "fips");
	if ((fips = OSSL_PROVIDER_load(NULL, "fips")) == NULL ||
	    !OSSL_PROVIDER_available(NULL, "fips")) {
		errbuf_set(err, errlen, "fips = yes: the FIPS provider named by %s is not available "
		    "(module missing, wrong 'module =' path, or fipsinstall's MAC does not match: %s). "
		    FIPS_HOWTO, cfg->fips_config, fips_ssl_reason());
		ERR_clear_error();
		return -1;
	}
	fips_read_version(fips);
	if (OSSL_PROVIDER_self_test(fips) != 1) {
		errbuf_set(err, errlen, "fips = yes: the FIPS provider's self-tests fail");
		return -1;
	}
	if (!OSSL_PROVIDER_available(NULL, "base") && OSSL_PROVIDER_load(NULL, "base") == NULL) {
		errbuf_set(err, errlen, "fips = yes: cannot load the base provider: %s",
		    fips_ssl_reason());
		ERR_clear_error();
		return -1;
	}
	if (OSSL_PROVIDER_available(NULL, "default")) {
		errbuf_set(err, errlen, "fips = yes: %s activates OpenSSL's default provider; FIPS mode "
		    "needs only fips and base there (remove the default provider's section)",
		    cfg->fips_config);
		return -1;
	}
	if (!EVP_default_properties_enable_fips(NULL, 1)) {
		errbuf_set(err, errlen, "fips = yes: cannot set the fips=yes default property");
		return -1;
	}
	if (fips_probe(err, errlen) == -1)
		return -1;
	fips_on = 1;
	return 0;
}

int
fips_active(void)
{
	return fips_on;
}

const char *
fips_provider_version(void)
{
	return fips_on ? fips_version : NULL;
}
