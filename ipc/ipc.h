/*
 * The keyd <-> worker and supervisor <-> child wire protocol: message types and the one codec
 * that keyd, the workers, the supervisor and the fuzzer share.
 *
 * Channel: a SOCK_SEQPACKET socketpair.  The descriptor identifies the peer; nothing in a
 * message identifies its sender.  Every frame is
 *
 *     u16 version | u16 type | u32 body_len | u64 req_id | body[body_len]      (little-endian)
 *
 * and every body has an exact size for its type: fixed fields, plus for the few variable
 * types a declared length that must account for every remaining byte.  A frame whose length,
 * version, type or any field is wrong is refused whole; nothing is skipped.
 */
#ifndef REDOUBT_IPC_H
#define REDOUBT_IPC_H

#include <stddef.h>
#include <stdint.h>

#define IPC_VERSION     1
#define IPC_HDR_LEN     16
#define IPC_BODY_MAX    1024                        /* bytes; checked before any body is read */
#define IPC_FRAME_MAX   (IPC_HDR_LEN + IPC_BODY_MAX)

#define IPC_KEY_ID_LEN  32    /* SHA-256 of the certificate's SubjectPublicKeyInfo (DER) */
#define IPC_TBS_MAX     256   /* largest legitimate TBS: TLS 1.2 SKE with P-384 = 165 bytes */
#define IPC_SIG_MAX     512   /* RSA-4096 */
#define IPC_NAME_MAX    64    /* identity name, NUL-padded (config names are <= 63 chars) */
#define IPC_CHUNK_MAX   960   /* bytes of PEM per IPC_PEM_CHUNK; keeps the body under 1 KiB */
#define IPC_AUDIT_MAX   1016  /* bytes of JSON in one IPC_AUDIT */
#define IPC_TICKET_NAME_LEN 16
#define IPC_TICKET_AES_LEN  32  /* AES-256-CBC key for RFC 5077 tickets */
#define IPC_TICKET_HMAC_LEN 32  /* HMAC-SHA256 key */
#define IPC_STATS_MAX   64    /* (identity, generation) pairs in one IPC_STATS */

enum ipc_type {
	/* worker <-> keyd */
	IPC_HELLO        = 1,  /* worker -> keyd, once, first */
	IPC_HELLO_OK     = 2,  /* keyd -> worker: every identity has been sent; ready to sign */
	IPC_SIGN         = 3,  /* worker -> keyd: sign one TLS handshake input */
	IPC_SIGN_OK      = 4,  /* keyd -> worker: the signature */
	IPC_ERR          = 5,  /* keyd -> worker: refusal of the request with that req_id */
	IPC_PEM_CHUNK    = 6,  /* keyd -> worker: part of a chain / CA bundle / CRL */
	IPC_GENERATION   = 7,  /* keyd -> worker: commit an identity's new generation */
	IPC_TICKET_KEYS  = 8,  /* keyd -> worker: session-ticket keys, current and previous */
	IPC_AUDIT        = 9,  /* worker -> keyd: an audit event (JSON object) */
	IPC_PING         = 10, /* either way */
	IPC_PONG         = 11,
	IPC_REVOKE       = 12, /* keyd -> worker: end the connections of one generation */
	IPC_STATS_REQ    = 13, /* keyd -> worker */
	IPC_STATS        = 14, /* worker -> keyd: connections per (identity, generation) */
	IPC_ADMISSION    = 15, /* keyd -> worker: stop / resume accepting (audit fail-closed) */
	IPC_TRUST        = 16, /* keyd -> worker: commit a listener's or connector's own CA/CRL */
	/* supervisor -> child */
	IPC_CHANNEL      = 32, /* carries a socketpair end (SCM_RIGHTS) */
	IPC_CHILD_EVENT  = 33, /* supervisor <-> keyd: child exits and restarts (audit); keyd's
	                          readiness and requests to restart a misbehaving worker */
	IPC_TYPE_MAX     = 34
};

enum ipc_err_code {
	IPC_ERR_UNKNOWN_KEY = 1, /* key id not held by keyd */
	IPC_ERR_POLICY      = 2, /* input is not a permitted TLS handshake signature input */
	IPC_ERR_FORMAT      = 3,
	IPC_ERR_BUSY        = 4, /* rate limit or in-flight limit */
	IPC_ERR_INTERNAL    = 5,
	IPC_ERR_UNAVAILABLE = 6, /* keyd not connected (worker-local, never on the wire) */
	IPC_ERR_TIMEOUT     = 7, /* deadline passed (worker-local, never on the wire) */
	IPC_ERR_CODE_MAX    = 8
};

enum ipc_key_type {
	IPC_KEY_EC_P256 = 1,
	IPC_KEY_EC_P384 = 2,
	IPC_KEY_RSA     = 3,
	IPC_KEY_TYPE_MAX = 4
};

enum ipc_pem_kind {
	IPC_PEM_CHAIN = 1,     /* leaf first, then intermediates */
	IPC_PEM_CA    = 2,     /* trust anchors for verifying peers */
	IPC_PEM_CRL   = 3,
	IPC_PEM_KIND_MAX = 4
};

/*
 * Whose material a PEM_CHUNK carries: an identity's (chain, CA, CRL), or the CA bundle and
 * CRL of one listener or connector that overrides its identity's `ca` / `crl`.
 */
enum ipc_pem_scope {
	IPC_SCOPE_IDENTITY  = 0,
	IPC_SCOPE_LISTENER  = 1,
	IPC_SCOPE_CONNECTOR = 2,
	IPC_SCOPE_MAX       = 3
};

enum ipc_channel_kind {
	IPC_CHANNEL_KEYD   = 1, /* to a worker: its end of a fresh keyd channel */
	IPC_CHANNEL_WORKER = 2, /* to keyd: its end of worker N's channel */
	IPC_CHANNEL_KIND_MAX = 3
};

/* Not "enum ipc_child_event": C has one tag namespace, and that is the struct below. */
enum ipc_child_event_kind {
	IPC_CHILD_EXITED    = 1,
	IPC_CHILD_RESTARTED = 2,
	IPC_CHILD_VIOLATION = 3,  /* keyd -> supervisor: worker broke the protocol; restart it */
	IPC_CHILD_READY     = 4,  /* keyd -> supervisor: keys loaded, ready for workers */
	IPC_CHILD_EVENT_MAX = 5
};

struct ipc_hdr {
	uint16_t version;
	uint16_t type;
	uint32_t body_len;
	uint64_t req_id;
};

struct ipc_hello {            /* 8 bytes */
	uint32_t pid;             /* informational; keyd trusts SO_PEERCRED, not this */
	uint32_t flags;           /* must be 0 */
};

struct ipc_hello_ok {         /* 8 bytes */
	uint32_t identities;
	uint32_t flags;           /* must be 0 */
};

struct ipc_sign {             /* 36 + tbs_len bytes */
	uint8_t  key_id[IPC_KEY_ID_LEN];
	uint16_t sigalg;          /* TLS SignatureScheme, e.g. 0x0403 */
	uint16_t tbs_len;         /* 1..IPC_TBS_MAX */
	uint8_t  tbs[IPC_TBS_MAX];
};

struct ipc_sign_ok {          /* 4 + sig_len bytes */
	uint16_t sig_len;         /* 1..IPC_SIG_MAX */
	uint8_t  sig[IPC_SIG_MAX];
};

struct ipc_err {              /* 4 bytes */
	uint16_t code;            /* enum ipc_err_code, 1..IPC_ERR_CODE_MAX-1 */
};

struct ipc_pem_chunk {        /* 20 + len bytes */
	uint16_t identity;        /* index in config order of the identity, listener or connector */
	uint8_t  kind;            /* enum ipc_pem_kind; CA or CRL only outside IPC_SCOPE_IDENTITY */
	uint8_t  scope;           /* enum ipc_pem_scope: what `identity` indexes */
	uint32_t generation;
	uint32_t total;           /* bytes of the whole PEM, <= PEM_SIZE_MAX */
	uint32_t offset;          /* offset + len <= total */
	uint16_t len;             /* 1..IPC_CHUNK_MAX */
	uint8_t  data[IPC_CHUNK_MAX];
};

struct ipc_generation {       /* 156 bytes */
	uint16_t identity;
	uint16_t key_type;        /* enum ipc_key_type */
	uint32_t generation;      /* > 0 */
	uint8_t  key_id[IPC_KEY_ID_LEN];
	uint32_t key_bits;
	uint32_t chain_len;       /* > 0 */
	uint32_t ca_len;          /* may be 0 */
	uint32_t crl_len;         /* may be 0 */
	uint8_t  digest[32];      /* SHA-256 of chain || ca || crl, as sent in chunks */
	char     name[IPC_NAME_MAX]; /* identity name, NUL-terminated inside the field */
	uint32_t flags;           /* must be 0 */
};

/*
 * The trust material of a listener or connector with its own `ca` or `crl`: the effective CA
 * bundle and CRL (its own where set, else its identity's), sent in PEM_CHUNKs of the same
 * scope and index just before the identity's GENERATION that it belongs to.
 */
struct ipc_trust {            /* 52 bytes */
	uint8_t  scope;           /* IPC_SCOPE_LISTENER or IPC_SCOPE_CONNECTOR */
	uint16_t index;           /* listener or connector index in config order */
	uint32_t generation;      /* the identity generation this trust belongs to, > 0 */
	uint32_t ca_len;          /* may be 0 (no CA: tls-mode require) */
	uint32_t crl_len;         /* may be 0 */
	uint8_t  digest[32];      /* SHA-256 of ca || crl, as sent in chunks */
	uint32_t flags;           /* must be 0 */
};

struct ipc_ticket_slot {      /* 88 bytes */
	uint64_t created;         /* UNIX seconds */
	uint8_t  name[IPC_TICKET_NAME_LEN];
	uint8_t  aes_key[IPC_TICKET_AES_LEN];
	uint8_t  hmac_key[IPC_TICKET_HMAC_LEN];
};

struct ipc_ticket_keys {      /* 8 + 2 * 88 = 184 bytes */
	uint32_t count;           /* 1 (current) or 2 (current, previous for decryption) */
	uint32_t lifetime;        /* seconds a key encrypts before it becomes "previous" */
	struct ipc_ticket_slot slot[2];
};

struct ipc_audit {            /* 4 + len bytes */
	uint16_t event;           /* audit event type (audit/), nonzero */
	uint16_t len;             /* 2..IPC_AUDIT_MAX, a JSON object */
	char     json[IPC_AUDIT_MAX + 1]; /* NUL-terminated after decoding */
};

struct ipc_revoke {           /* 8 bytes */
	uint16_t identity;
	uint32_t generation;
};

struct ipc_stats_entry {
	uint16_t identity;
	uint32_t generation;
	uint32_t conns;
};

struct ipc_stats {            /* 8 + 12 * n bytes */
	uint32_t total_conns;
	uint32_t n;               /* 0..IPC_STATS_MAX */
	struct ipc_stats_entry e[IPC_STATS_MAX];
};

struct ipc_admission {        /* 4 bytes */
	uint32_t accept;          /* 1 = accept new connections, 0 = refuse */
};

struct ipc_channel {          /* 8 bytes; the descriptor travels as SCM_RIGHTS */
	uint32_t kind;            /* enum ipc_channel_kind */
	uint32_t worker;          /* worker index, < WORKERS_MAX */
};

struct ipc_child_event {      /* 20 bytes */
	uint32_t kind;            /* enum ipc_child_event_kind */
	uint32_t child;           /* 0 = keyd, 1 + i = worker i */
	int32_t  pid;
	int32_t  status;          /* exit status or terminating signal */
	int32_t  syscall;         /* seccomp violation syscall number, -1 if none */
};

struct ipc_msg {
	struct ipc_hdr hdr;
	union {
		struct ipc_hello        hello;
		struct ipc_hello_ok     hello_ok;
		struct ipc_sign         sign;
		struct ipc_sign_ok      sign_ok;
		struct ipc_err          err;
		struct ipc_pem_chunk    pem_chunk;
		struct ipc_generation   generation;
		struct ipc_trust        trust;
		struct ipc_ticket_keys  ticket_keys;
		struct ipc_audit        audit;
		struct ipc_revoke       revoke;
		struct ipc_stats        stats;
		struct ipc_admission    admission;
		struct ipc_channel      channel;
		struct ipc_child_event  child_event;
	} u;
};

/* Codec errors: every decode failure has its own code so logs and the fuzzer can tell them apart. */
enum ipc_codec_err {
	IPC_E_OK       = 0,
	IPC_E_SHORT    = -1, /* fewer than IPC_HDR_LEN bytes */
	IPC_E_VERSION  = -2,
	IPC_E_OVERSIZE = -3, /* body_len > IPC_BODY_MAX */
	IPC_E_LENGTH   = -4, /* body_len != bytes received - header, or != the type's exact size */
	IPC_E_TYPE     = -5, /* unknown type */
	IPC_E_FIELD    = -6, /* a field out of its range */
	IPC_E_SPACE    = -7  /* encode: output buffer too small */
};

const char *ipc_type_name(uint16_t type);
const char *ipc_err_name(uint16_t code);
const char *ipc_codec_strerror(int err);

/*
 * Decodes one received frame of len bytes into *m (variable parts are copied in).
 * Returns IPC_E_OK or a negative enum ipc_codec_err.
 */
int ipc_decode(const uint8_t *buf, size_t len, struct ipc_msg *m);

/*
 * Encodes *m (m->hdr.type and m->hdr.req_id; version and body_len are computed) into out.
 * Returns the frame length, or a negative enum ipc_codec_err (including IPC_E_FIELD for a
 * message that would not decode).
 */
int ipc_encode(const struct ipc_msg *m, uint8_t *out, size_t outlen);

/* Convenience: fills m->hdr for a type and id (zeroes the body). */
void ipc_msg_init(struct ipc_msg *m, uint16_t type, uint64_t req_id);

#endif
