/* keyd's sandbox, entered after the keys are loaded (see SECURITY.md). */
#ifndef REDOUBT_KEYD_SANDBOX_H
#define REDOUBT_KEYD_SANDBOX_H

#include "policy/config.h"

void sandbox_keyd_enter(const struct config *cfg);

#endif
