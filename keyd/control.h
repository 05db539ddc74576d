/*
 * keyd's control socket: the protocol `redoubt rotate` and `redoubt status` speak.
 *
 * A UNIX stream socket that `redoubt serve` binds (root:admin-group, mode 0660) and hands to
 * keyd.  keyd serves only root and members of admin-group (SO_PEERCRED and SO_PEERGROUPS,
 * checked on accept; see control.c for the development case).  One exchange per connection:
 *
 *   client -> keyd   one JSON object on one line, at most CONTROL_REQUEST_MAX bytes:
 *                      {"cmd": "rotate", "revoke_previous": false}
 *                      {"cmd": "rotate-tickets"}
 *                      {"cmd": "reopen-audit"}
 *                      {"cmd": "status"}
 *   keyd -> client   one JSON object, at most CONTROL_RESPONSE_MAX bytes, then EOF:
 *                      {"ok": true, ...} or {"ok": false, "error": "what and why"}
 *
 * Unknown commands and unknown keys are refused.  The same structure is the `--json` output
 * of `redoubt status`.
 */
#ifndef REDOUBT_KEYD_CONTROL_H
#define REDOUBT_KEYD_CONTROL_H

#define CONTROL_REQUEST_MAX    4096          /* bytes of a request line, newline included */
#define CONTROL_RESPONSE_MAX   (1u << 20)    /* bytes of an answer (status of 64 workers fits) */
#define CONTROL_CLIENTS_MAX    8             /* control connections served at once */
#define CONTROL_IO_TIMEOUT_MS  10000         /* to send the request, and to read the answer */
#define CONTROL_STATS_WAIT_MS  1000          /* status waits this long for workers' reports */
#define CONTROL_PEER_GROUPS_MAX 1024         /* supplementary groups of a caller we look at */
/* The client's wait for an answer: a rotation loads every key (RSA, passphrases, a TPM). */
#define CONTROL_CLIENT_TIMEOUT_MS 60000

#endif
