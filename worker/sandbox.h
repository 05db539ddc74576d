/*
 * The worker's sandbox, entered once start-up is done: from then on the worker relays
 * bytes and nothing else (see SECURITY.md for the syscall table and why each is there).
 */
#ifndef REDOUBT_WORKER_SANDBOX_H
#define REDOUBT_WORKER_SANDBOX_H

#include "policy/config.h"

void sandbox_worker_enter(const struct config *cfg);

#endif
