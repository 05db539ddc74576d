/*
 * FIPS mode (`fips = yes`): every redoubt process loads OpenSSL's FIPS provider and the base
 * provider (encoders/decoders) into the default library context, never the default provider,
 * and makes "fips=yes" the default property.  A missing or broken provider is fatal at start-up
 * with a message that says how to install one.  docs/fips.md says what this does not claim.
 */
#ifndef REDOUBT_FIPS_H
#define REDOUBT_FIPS_H

#include <stddef.h>

struct config;

#define FIPS_ERR_MAX        1024

/*
 * When cfg->fips: loads the OpenSSL configuration file cfg->fips_config (`fips-config`) (it names the module and
 * its fipsinstall MAC), then checks that the "fips" provider is active and its self-tests
 * passed, loads "base", sets "fips=yes" and makes sure "default" is not loaded.  Before any
 * other OpenSSL use in the process.  Returns 0 (also when FIPS mode is off), or -1 with err.
 */
int  fips_enable(const struct config *cfg, char *err, size_t errlen);
/* 1 when FIPS mode is active in this process. */
int  fips_active(void);
/* "OpenSSL FIPS Provider 3.0.x", or NULL when FIPS mode is off. */
const char *fips_provider_version(void);

#endif
