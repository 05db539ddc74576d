/*
 * The "char *err, size_t errlen" convention: a function that fails says why in a buffer its
 * caller owns, and the caller decides where the message goes (stderr, log, control answer).
 */
#ifndef REDOUBT_ERRBUF_H
#define REDOUBT_ERRBUF_H

#include <stddef.h>

/* Formats into err (truncating); a NULL or empty buffer is allowed and ignored. */
void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
