/*
 * The one IPC codec (keyd, workers, supervisor, fuzzer).  Frames are built and parsed with
 * explicit little-endian byte helpers; no struct is ever copied onto or off the wire, so
 * padding and unused array tails never leak and the layout does not depend on the compiler.
 *
 * Decoding follows relayd's ca_dispatch_relay() / OpenSSH's monitor: check the header and the
 * length before touching the body, require the body to have exactly the size its type (and
 * its declared variable length) says, then check every field.  The same field checks guard
 * ipc_encode(), so whatever we send is something the peer will accept, and a decode followed
 * by an encode reproduces the frame byte for byte (the fuzz target asserts this).
 *
 * Body layouts (offsets in bytes; "rsv" = reserved, must be zero):
 *   HELLO        0 pid u32 | 4 flags u32                                            = 8
 *   HELLO_OK     0 identities u32 | 4 flags u32                                     = 8
 *   SIGN         0 key_id[32] | 32 sigalg u16 | 34 tbs_len u16 | 36 tbs            = 36 + tbs_len
 *   SIGN_OK      0 sig_len u16 | 2 rsv u16 | 4 sig                                  = 4 + sig_len
 *   ERR          0 code u16 | 2 rsv u16                                             = 4
 *   PEM_CHUNK    0 identity u16 | 2 kind u8 | 3 scope u8 | 4 generation u32 | 8 total u32 |
 *                12 offset u32 | 16 len u16 | 18 rsv u16 | 20 data                  = 20 + len
 *   GENERATION   0 identity u16 | 2 key_type u16 | 4 generation u32 | 8 key_id[32] |
 *                40 key_bits u32 | 44 chain_len | 48 ca_len | 52 crl_len (u32) |
 *                56 digest[32] | 88 name[64] (NUL-padded) | 152 flags u32           = 156
 *   TRUST        0 scope u8 | 1 rsv u8 | 2 index u16 | 4 generation u32 | 8 ca_len u32 |
 *                12 crl_len u32 | 16 digest[32] | 48 flags u32                      = 52
 *   TICKET_KEYS  0 count u32 | 4 lifetime u32 | 8 slot[2] {created u64, name[16],
 *                aes_key[32], hmac_key[32]} (slot 1 all zero when count == 1)       = 184
 *   AUDIT        0 event u16 | 2 len u16 | 4 json                                   = 4 + len
 *   REVOKE       0 identity u16 | 2 rsv u16 | 4 generation u32                      = 8
 *   STATS        0 total_conns u32 | 4 n u32 | 8 e[n] {identity u16, rsv u16,
 *                generation u32, conns u32}                                         = 8 + 12 n
 *   ADMISSION    0 accept u32                                                       = 4
 *   CHANNEL      0 kind u32 | 4 worker u32                                          = 8
 *   CHILD_EVENT  0 kind u32 | 4 child u32 | 8 pid i32 | 12 status i32 | 16 syscall i32 = 20
 *   PING, PONG, STATS_REQ: empty
 */
#include "ipc/ipc.h"

#include <string.h>

#include "common/limits.h"

#define CODEC_TICKET_SLOT_LEN (8 + IPC_TICKET_NAME_LEN + IPC_TICKET_AES_LEN + IPC_TICKET_HMAC_LEN)
#define CODEC_STATS_ENTRY_LEN 12
#define CODEC_RSA_BITS_MIN    2048              /* keyd refuses smaller keys (sign_policy.c) */
#define CODEC_RSA_BITS_MAX    (IPC_SIG_MAX * 8) /* a larger key's signature would not fit */

/*
 * Per type: its name and the size of the fixed part of its body.  var_off is where a
 * variable type declares its variable length (var_size bytes wide, each unit var_unit bytes);
 * var_size == 0 means the body is exactly `fixed` bytes.  The declared length always lies
 * inside the fixed part (var_off + var_size <= fixed), which is what lets ipc_decode() read
 * it once body_len >= fixed is known.
 */
struct codec_type {
	const char *name;
	uint16_t    fixed;
	uint8_t     var_off;
	uint8_t     var_size;
	uint8_t     var_unit;
};

static const struct codec_type codec_types[IPC_TYPE_MAX] = {
	[IPC_HELLO]       = { "HELLO", 8, 0, 0, 0 },
	[IPC_HELLO_OK]    = { "HELLO_OK", 8, 0, 0, 0 },
	[IPC_SIGN]        = { "SIGN", 36, 34, 2, 1 },
	[IPC_SIGN_OK]     = { "SIGN_OK", 4, 0, 2, 1 },
	[IPC_ERR]         = { "ERR", 4, 0, 0, 0 },
	[IPC_PEM_CHUNK]   = { "PEM_CHUNK", 20, 16, 2, 1 },
	[IPC_GENERATION]  = { "GENERATION", 156, 0, 0, 0 },
	[IPC_TICKET_KEYS] = { "TICKET_KEYS", 8 + 2 * CODEC_TICKET_SLOT_LEN, 0, 0, 0 },
	[IPC_AUDIT]       = { "AUDIT", 4, 2, 2, 1 },
	[IPC_PING]        = { "PING", 0, 0, 0, 0 },
	[IPC_PONG]        = { "PONG", 0, 0, 0, 0 },
	[IPC_REVOKE]      = { "REVOKE", 8, 0, 0, 0 },
	[IPC_STATS_REQ]   = { "STATS_REQ", 0, 0, 0, 0 },
	[IPC_STATS]       = { "STATS", 8, 4, 4, CODEC_STATS_ENTRY_LEN },
	[IPC_ADMISSION]   = { "ADMISSION", 4, 0, 0, 0 },
	[IPC_TRUST]       = { "TRUST", 52, 0, 0, 0 },
	[IPC_CHANNEL]     = { "CHANNEL", 8, 0, 0, 0 },
	[IPC_CHILD_EVENT] = { "CHILD_EVENT", 20, 0, 0, 0 },
};

static const char *const codec_err_code_names[IPC_ERR_CODE_MAX] = {
	[IPC_ERR_UNKNOWN_KEY] = "unknown key",
	[IPC_ERR_POLICY]      = "refused by signing policy",
	[IPC_ERR_FORMAT]      = "malformed request",
	[IPC_ERR_BUSY]        = "busy (rate or in-flight limit)",
	[IPC_ERR_INTERNAL]    = "internal error in keyd",
	[IPC_ERR_UNAVAILABLE] = "keyd unavailable",
	[IPC_ERR_TIMEOUT]     = "keyd did not answer in time",
};

static const struct codec_type *
codec_type_get(uint16_t type)
{
	if (type >= IPC_TYPE_MAX || codec_types[type].name == NULL)
		return NULL;
	return &codec_types[type];
}

const char *
ipc_type_name(uint16_t type)
{
	const struct codec_type *t = codec_type_get(type);

	return t != NULL ? t->name : "UNKNOWN";
}

const char *
ipc_err_name(uint16_t code)
{
	if (code >= IPC_ERR_CODE_MAX || codec_err_code_names[code] == NULL)
		return "unknown error code";
	return codec_err_code_names[code];
}

const char *
ipc_codec_strerror(int err)
{
	switch (err) {
	case IPC_E_OK:       return "ok";
	case IPC_E_SHORT:    return "frame shorter than the IPC header";
	case IPC_E_VERSION:  return "unsupported IPC version";
	case IPC_E_OVERSIZE: return "IPC body larger than IPC_BODY_MAX";
	case IPC_E_LENGTH:   return "IPC body length does not match the frame or its type";
	case IPC_E_TYPE:     return "unknown IPC message type";
	case IPC_E_FIELD:    return "IPC message field out of range";
	case IPC_E_SPACE:    return "IPC output buffer too small";
	default:             return "unknown IPC codec error";
	}
}

void
ipc_msg_init(struct ipc_msg *m, uint16_t type, uint64_t req_id)
{
	memset(m, 0, sizeof(*m));
	m->hdr.version = IPC_VERSION;
	m->hdr.type = type;
	m->hdr.req_id = req_id;
}

/*
 * Byte cursors.  Lengths are checked before any body is parsed, so running past the end is a
 * bug; the cursors still refuse it (and latch `bad`) so that such a bug is an error, not an
 * out-of-bounds access.
 */
struct codec_rd {
	const uint8_t *p;
	size_t         left;
	int            bad;
};

struct codec_wr {
	uint8_t *p;
	size_t   left;
	int      bad;
};

static const uint8_t *
codec_take(struct codec_rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if (r->bad || n > r->left) {
		r->bad = 1;
		return NULL;
	}
	r->p += n;
	r->left -= n;
	return p;
}

static uint64_t
codec_get_le(struct codec_rd *r, size_t n)
{
	const uint8_t *p = codec_take(r, n);
	uint64_t v = 0;

	if (p == NULL)
		return 0;
	for (size_t i = n; i > 0; i--)
		v = (v << 8) | p[i - 1];
	return v;
}

static uint8_t  codec_get8(struct codec_rd *r)  { return (uint8_t)codec_get_le(r, 1); }
static uint16_t codec_get16(struct codec_rd *r) { return (uint16_t)codec_get_le(r, 2); }
static uint32_t codec_get32(struct codec_rd *r) { return (uint32_t)codec_get_le(r, 4); }
static uint64_t codec_get64(struct codec_rd *r) { return codec_get_le(r, 8); }

/* Two's complement on the wire; the conversion back is implementation-defined before C23 but
 * exact on every compiler we build with. */
static int32_t  codec_get_i32(struct codec_rd *r) { return (int32_t)codec_get32(r); }

static void
codec_get_bytes(struct codec_rd *r, void *dst, size_t n)
{
	const uint8_t *p = codec_take(r, n);

	if (p != NULL && n > 0)
		memcpy(dst, p, n);
}

/* Reserved bytes: any nonzero byte makes the frame invalid (room for future use, no leaks). */
static void
codec_get_zero(struct codec_rd *r, size_t n)
{
	const uint8_t *p = codec_take(r, n);

	for (size_t i = 0; p != NULL && i < n; i++)
		if (p[i] != 0)
			r->bad = 1;
}

static uint8_t *
codec_put(struct codec_wr *w, size_t n)
{
	uint8_t *p = w->p;

	if (w->bad || n > w->left) {
		w->bad = 1;
		return NULL;
	}
	w->p += n;
	w->left -= n;
	return p;
}

static void
codec_put_le(struct codec_wr *w, uint64_t v, size_t n)
{
	uint8_t *p = codec_put(w, n);

	if (p == NULL)
		return;
	for (size_t i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static void codec_put8(struct codec_wr *w, uint8_t v)   { codec_put_le(w, v, 1); }
static void codec_put16(struct codec_wr *w, uint16_t v) { codec_put_le(w, v, 2); }
static void codec_put32(struct codec_wr *w, uint32_t v) { codec_put_le(w, v, 4); }
static void codec_put64(struct codec_wr *w, uint64_t v) { codec_put_le(w, v, 8); }
static void codec_put_i32(struct codec_wr *w, int32_t v) { codec_put32(w, (uint32_t)v); }

static void
codec_put_bytes(struct codec_wr *w, const void *src, size_t n)
{
	uint8_t *p = codec_put(w, n);

	if (p != NULL && n > 0)
		memcpy(p, src, n);
}

static void
codec_put_zero(struct codec_wr *w, size_t n)
{
	uint8_t *p = codec_put(w, n);

	if (p != NULL)
		memset(p, 0, n);
}

/*
 * Field ranges, checked on the struct, so decode and encode enforce the very same rules.
 * Wire-only rules (reserved bytes, name padding, the unused ticket slot) are checked by the
 * parser, and the encoder writes zeros there.
 */
static int
codec_name_ok(const char *name)
{
	size_t n = strnlen(name, IPC_NAME_MAX);

	/* Non-empty, terminated inside the field, and free of control bytes (it is logged). */
	if (n == 0 || n == IPC_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] == 0x7f)
			return 0;
	return 1;
}

static int
codec_key_ok(uint16_t key_type, uint32_t key_bits)
{
	switch (key_type) {
	case IPC_KEY_EC_P256: return key_bits == 256;
	case IPC_KEY_EC_P384: return key_bits == 384;
	case IPC_KEY_RSA:     return key_bits >= CODEC_RSA_BITS_MIN && key_bits <= CODEC_RSA_BITS_MAX;
	default:              return 0;
	}
}

static int
codec_check_generation(const struct ipc_generation *g)
{
	return g->identity < CONFIG_IDENTITIES_MAX && codec_key_ok(g->key_type, g->key_bits) &&
	    g->generation > 0 && g->chain_len > 0 && g->chain_len <= PEM_SIZE_MAX &&
	    g->ca_len <= PEM_SIZE_MAX && g->crl_len <= PEM_SIZE_MAX && codec_name_ok(g->name) &&
	    g->flags == 0;
}

/* How many identities, listeners or connectors a scope can index. */
static uint32_t
codec_scope_max(uint8_t scope)
{
	switch (scope) {
	case IPC_SCOPE_IDENTITY:  return CONFIG_IDENTITIES_MAX;
	case IPC_SCOPE_LISTENER:  return CONFIG_LISTENERS_MAX;
	case IPC_SCOPE_CONNECTOR: return CONFIG_CONNECTORS_MAX;
	default:                  return 0;
	}
}

static int
codec_check_pem_chunk(const struct ipc_pem_chunk *c)
{
	/* A listener or connector has trust material of its own, never a chain. */
	int kind_ok = c->scope == IPC_SCOPE_IDENTITY ?
	    c->kind >= IPC_PEM_CHAIN && c->kind < IPC_PEM_KIND_MAX :
	    c->kind == IPC_PEM_CA || c->kind == IPC_PEM_CRL;

	return c->identity < codec_scope_max(c->scope) && kind_ok && c->generation > 0 &&
	    c->len >= 1 && c->len <= IPC_CHUNK_MAX && c->total <= PEM_SIZE_MAX &&
	    (uint64_t)c->offset + c->len <= c->total;
}

static int
codec_check_trust(const struct ipc_trust *t)
{
	return (t->scope == IPC_SCOPE_LISTENER || t->scope == IPC_SCOPE_CONNECTOR) &&
	    t->index < codec_scope_max(t->scope) && t->generation > 0 &&
	    t->ca_len <= PEM_SIZE_MAX && t->crl_len <= PEM_SIZE_MAX && t->flags == 0;
}

static int
codec_check_audit(const struct ipc_audit *a)
{
	/* The JSON becomes a C string in keyd, so an embedded NUL would hide the rest of it. */
	return a->event != 0 && a->len >= 2 && a->len <= IPC_AUDIT_MAX &&
	    memchr(a->json, '\0', a->len) == NULL;
}

static int
codec_check_stats(const struct ipc_stats *s)
{
	if (s->n > IPC_STATS_MAX)
		return 0;
	for (uint32_t i = 0; i < s->n; i++)
		if (s->e[i].identity >= CONFIG_IDENTITIES_MAX || s->e[i].generation == 0)
			return 0;
	return 1;
}

static int
codec_check_fields(const struct ipc_msg *m)
{
	const struct ipc_child_event *ce = &m->u.child_event;

	switch (m->hdr.type) {
	case IPC_HELLO:
		return m->u.hello.flags == 0;
	case IPC_HELLO_OK:
		return m->u.hello_ok.identities <= CONFIG_IDENTITIES_MAX && m->u.hello_ok.flags == 0;
	case IPC_SIGN:
		return m->u.sign.tbs_len >= 1 && m->u.sign.tbs_len <= IPC_TBS_MAX;
	case IPC_SIGN_OK:
		return m->u.sign_ok.sig_len >= 1 && m->u.sign_ok.sig_len <= IPC_SIG_MAX;
	case IPC_ERR:
		return m->u.err.code >= 1 && m->u.err.code < IPC_ERR_CODE_MAX;
	case IPC_PEM_CHUNK:
		return codec_check_pem_chunk(&m->u.pem_chunk);
	case IPC_GENERATION:
		return codec_check_generation(&m->u.generation);
	case IPC_TRUST:
		return codec_check_trust(&m->u.trust);
	case IPC_TICKET_KEYS:
		return (m->u.ticket_keys.count == 1 || m->u.ticket_keys.count == 2) &&
		    m->u.ticket_keys.lifetime > 0;
	case IPC_AUDIT:
		return codec_check_audit(&m->u.audit);
	case IPC_REVOKE:
		return m->u.revoke.identity < CONFIG_IDENTITIES_MAX && m->u.revoke.generation > 0;
	case IPC_STATS:
		return codec_check_stats(&m->u.stats);
	case IPC_ADMISSION:
		return m->u.admission.accept <= 1;
	case IPC_CHANNEL:
		return m->u.channel.kind >= IPC_CHANNEL_KEYD &&
		    m->u.channel.kind < IPC_CHANNEL_KIND_MAX && m->u.channel.worker < WORKERS_MAX;
	case IPC_CHILD_EVENT:
		return ce->kind >= IPC_CHILD_EXITED && ce->kind < IPC_CHILD_EVENT_MAX &&
		    ce->child <= WORKERS_MAX && ce->pid > 0 && ce->syscall >= -1;
	case IPC_PING:
	case IPC_PONG:
	case IPC_STATS_REQ:
		return 1;
	default:
		return 0;
	}
}

static void
codec_get_ticket_slot(struct codec_rd *r, struct ipc_ticket_slot *s)
{
	s->created = codec_get64(r);
	codec_get_bytes(r, s->name, sizeof(s->name));
	codec_get_bytes(r, s->aes_key, sizeof(s->aes_key));
	codec_get_bytes(r, s->hmac_key, sizeof(s->hmac_key));
}

static void
codec_put_ticket_slot(struct codec_wr *w, const struct ipc_ticket_slot *s)
{
	codec_put64(w, s->created);
	codec_put_bytes(w, s->name, sizeof(s->name));
	codec_put_bytes(w, s->aes_key, sizeof(s->aes_key));
	codec_put_bytes(w, s->hmac_key, sizeof(s->hmac_key));
}

/* Parses a body whose length is already known to be exact for its type. */
static void
codec_parse_body(struct codec_rd *r, struct ipc_msg *m)
{
	size_t n;

	switch (m->hdr.type) {
	case IPC_HELLO:
		m->u.hello.pid = codec_get32(r);
		m->u.hello.flags = codec_get32(r);
		break;
	case IPC_HELLO_OK:
		m->u.hello_ok.identities = codec_get32(r);
		m->u.hello_ok.flags = codec_get32(r);
		break;
	case IPC_SIGN:
		codec_get_bytes(r, m->u.sign.key_id, IPC_KEY_ID_LEN);
		m->u.sign.sigalg = codec_get16(r);
		m->u.sign.tbs_len = codec_get16(r);
		/* Bounded by the struct as well as by the exact-length check. */
		n = m->u.sign.tbs_len <= IPC_TBS_MAX ? m->u.sign.tbs_len : 0;
		codec_get_bytes(r, m->u.sign.tbs, n);
		break;
	case IPC_SIGN_OK:
		m->u.sign_ok.sig_len = codec_get16(r);
		codec_get_zero(r, 2);
		n = m->u.sign_ok.sig_len <= IPC_SIG_MAX ? m->u.sign_ok.sig_len : 0;
		codec_get_bytes(r, m->u.sign_ok.sig, n);
		break;
	case IPC_ERR:
		m->u.err.code = codec_get16(r);
		codec_get_zero(r, 2);
		break;
	case IPC_PEM_CHUNK:
		m->u.pem_chunk.identity = codec_get16(r);
		m->u.pem_chunk.kind = codec_get8(r);
		m->u.pem_chunk.scope = codec_get8(r);
		m->u.pem_chunk.generation = codec_get32(r);
		m->u.pem_chunk.total = codec_get32(r);
		m->u.pem_chunk.offset = codec_get32(r);
		m->u.pem_chunk.len = codec_get16(r);
		codec_get_zero(r, 2);
		n = m->u.pem_chunk.len <= IPC_CHUNK_MAX ? m->u.pem_chunk.len : 0;
		codec_get_bytes(r, m->u.pem_chunk.data, n);
		break;
	case IPC_GENERATION: {
		struct ipc_generation *g = &m->u.generation;

		g->identity = codec_get16(r);
		g->key_type = codec_get16(r);
		g->generation = codec_get32(r);
		codec_get_bytes(r, g->key_id, sizeof(g->key_id));
		g->key_bits = codec_get32(r);
		g->chain_len = codec_get32(r);
		g->ca_len = codec_get32(r);
		g->crl_len = codec_get32(r);
		codec_get_bytes(r, g->digest, sizeof(g->digest));
		codec_get_bytes(r, g->name, sizeof(g->name));
		g->flags = codec_get32(r);
		/* NUL padding only: bytes after the terminator would not survive a re-encode. */
		n = strnlen(g->name, sizeof(g->name));
		for (size_t i = n; i < sizeof(g->name); i++)
			if (g->name[i] != '\0')
				r->bad = 1;
		break;
	}
	case IPC_TRUST:
		m->u.trust.scope = codec_get8(r);
		codec_get_zero(r, 1);
		m->u.trust.index = codec_get16(r);
		m->u.trust.generation = codec_get32(r);
		m->u.trust.ca_len = codec_get32(r);
		m->u.trust.crl_len = codec_get32(r);
		codec_get_bytes(r, m->u.trust.digest, sizeof(m->u.trust.digest));
		m->u.trust.flags = codec_get32(r);
		break;
	case IPC_TICKET_KEYS:
		m->u.ticket_keys.count = codec_get32(r);
		m->u.ticket_keys.lifetime = codec_get32(r);
		codec_get_ticket_slot(r, &m->u.ticket_keys.slot[0]);
		/* With one key, the second slot is reserved: all zero. */
		if (m->u.ticket_keys.count == 1)
			codec_get_zero(r, CODEC_TICKET_SLOT_LEN);
		else
			codec_get_ticket_slot(r, &m->u.ticket_keys.slot[1]);
		break;
	case IPC_AUDIT:
		m->u.audit.event = codec_get16(r);
		m->u.audit.len = codec_get16(r);
		n = m->u.audit.len <= IPC_AUDIT_MAX ? m->u.audit.len : 0;
		codec_get_bytes(r, m->u.audit.json, n);
		m->u.audit.json[n] = '\0';
		break;
	case IPC_REVOKE:
		m->u.revoke.identity = codec_get16(r);
		codec_get_zero(r, 2);
		m->u.revoke.generation = codec_get32(r);
		break;
	case IPC_STATS:
		m->u.stats.total_conns = codec_get32(r);
		m->u.stats.n = codec_get32(r);
		n = m->u.stats.n <= IPC_STATS_MAX ? m->u.stats.n : 0;
		for (size_t i = 0; i < n; i++) {
			m->u.stats.e[i].identity = codec_get16(r);
			codec_get_zero(r, 2);
			m->u.stats.e[i].generation = codec_get32(r);
			m->u.stats.e[i].conns = codec_get32(r);
		}
		break;
	case IPC_ADMISSION:
		m->u.admission.accept = codec_get32(r);
		break;
	case IPC_CHANNEL:
		m->u.channel.kind = codec_get32(r);
		m->u.channel.worker = codec_get32(r);
		break;
	case IPC_CHILD_EVENT:
		m->u.child_event.kind = codec_get32(r);
		m->u.child_event.child = codec_get32(r);
		m->u.child_event.pid = codec_get_i32(r);
		m->u.child_event.status = codec_get_i32(r);
		m->u.child_event.syscall = codec_get_i32(r);
		break;
	default: /* PING, PONG, STATS_REQ: empty */
		break;
	}
}

int
ipc_decode(const uint8_t *buf, size_t len, struct ipc_msg *m)
{
	const struct codec_type *t;
	struct codec_rd r;
	uint64_t want;

	memset(m, 0, sizeof(*m));
	if (len < IPC_HDR_LEN)
		return IPC_E_SHORT;
	r = (struct codec_rd){ buf, len, 0 };
	m->hdr.version = codec_get16(&r);
	m->hdr.type = codec_get16(&r);
	m->hdr.body_len = codec_get32(&r);
	m->hdr.req_id = codec_get64(&r);
	if (m->hdr.version != IPC_VERSION)
		return IPC_E_VERSION;
	/* A peer-chosen length is bounded before anything looks at the body. */
	if (m->hdr.body_len > IPC_BODY_MAX)
		return IPC_E_OVERSIZE;
	if (m->hdr.body_len != len - IPC_HDR_LEN)
		return IPC_E_LENGTH;
	if ((t = codec_type_get(m->hdr.type)) == NULL)
		return IPC_E_TYPE;

	/* Exact size: the fixed part, plus the variable part the body declares. */
	if (m->hdr.body_len < t->fixed)
		return IPC_E_LENGTH;
	want = t->fixed;
	if (t->var_size > 0) {
		struct codec_rd vr = { buf + IPC_HDR_LEN + t->var_off, t->var_size, 0 };

		want += codec_get_le(&vr, t->var_size) * t->var_unit;
	}
	if (m->hdr.body_len != want)
		return IPC_E_LENGTH;

	codec_parse_body(&r, m);
	if (r.bad || r.left != 0 || !codec_check_fields(m))
		return IPC_E_FIELD;
	return IPC_E_OK;
}

/* The body size of a message that passed codec_check_fields(). */
static size_t
codec_body_len(const struct ipc_msg *m)
{
	const struct codec_type *t = codec_type_get(m->hdr.type);

	switch (m->hdr.type) {
	case IPC_SIGN:      return t->fixed + (size_t)m->u.sign.tbs_len;
	case IPC_SIGN_OK:   return t->fixed + (size_t)m->u.sign_ok.sig_len;
	case IPC_PEM_CHUNK: return t->fixed + (size_t)m->u.pem_chunk.len;
	case IPC_AUDIT:     return t->fixed + (size_t)m->u.audit.len;
	case IPC_STATS:     return t->fixed + (size_t)m->u.stats.n * CODEC_STATS_ENTRY_LEN;
	default:            return t->fixed;
	}
}

static void
codec_write_body(struct codec_wr *w, const struct ipc_msg *m)
{
	const struct ipc_generation *g = &m->u.generation;
	size_t n;

	switch (m->hdr.type) {
	case IPC_HELLO:
		codec_put32(w, m->u.hello.pid);
		codec_put32(w, m->u.hello.flags);
		break;
	case IPC_HELLO_OK:
		codec_put32(w, m->u.hello_ok.identities);
		codec_put32(w, m->u.hello_ok.flags);
		break;
	case IPC_SIGN:
		codec_put_bytes(w, m->u.sign.key_id, IPC_KEY_ID_LEN);
		codec_put16(w, m->u.sign.sigalg);
		codec_put16(w, m->u.sign.tbs_len);
		codec_put_bytes(w, m->u.sign.tbs, m->u.sign.tbs_len);
		break;
	case IPC_SIGN_OK:
		codec_put16(w, m->u.sign_ok.sig_len);
		codec_put_zero(w, 2);
		codec_put_bytes(w, m->u.sign_ok.sig, m->u.sign_ok.sig_len);
		break;
	case IPC_ERR:
		codec_put16(w, m->u.err.code);
		codec_put_zero(w, 2);
		break;
	case IPC_PEM_CHUNK:
		codec_put16(w, m->u.pem_chunk.identity);
		codec_put8(w, m->u.pem_chunk.kind);
		codec_put8(w, m->u.pem_chunk.scope);
		codec_put32(w, m->u.pem_chunk.generation);
		codec_put32(w, m->u.pem_chunk.total);
		codec_put32(w, m->u.pem_chunk.offset);
		codec_put16(w, m->u.pem_chunk.len);
		codec_put_zero(w, 2);
		codec_put_bytes(w, m->u.pem_chunk.data, m->u.pem_chunk.len);
		break;
	case IPC_GENERATION:
		codec_put16(w, g->identity);
		codec_put16(w, g->key_type);
		codec_put32(w, g->generation);
		codec_put_bytes(w, g->key_id, sizeof(g->key_id));
		codec_put32(w, g->key_bits);
		codec_put32(w, g->chain_len);
		codec_put32(w, g->ca_len);
		codec_put32(w, g->crl_len);
		codec_put_bytes(w, g->digest, sizeof(g->digest));
		/* Whatever follows the terminator in the caller's buffer stays home. */
		n = strnlen(g->name, sizeof(g->name));
		codec_put_bytes(w, g->name, n);
		codec_put_zero(w, sizeof(g->name) - n);
		codec_put32(w, g->flags);
		break;
	case IPC_TRUST:
		codec_put8(w, m->u.trust.scope);
		codec_put_zero(w, 1);
		codec_put16(w, m->u.trust.index);
		codec_put32(w, m->u.trust.generation);
		codec_put32(w, m->u.trust.ca_len);
		codec_put32(w, m->u.trust.crl_len);
		codec_put_bytes(w, m->u.trust.digest, sizeof(m->u.trust.digest));
		codec_put32(w, m->u.trust.flags);
		break;
	case IPC_TICKET_KEYS:
		codec_put32(w, m->u.ticket_keys.count);
		codec_put32(w, m->u.ticket_keys.lifetime);
		codec_put_ticket_slot(w, &m->u.ticket_keys.slot[0]);
		if (m->u.ticket_keys.count == 2)
			codec_put_ticket_slot(w, &m->u.ticket_keys.slot[1]);
		else
			codec_put_zero(w, CODEC_TICKET_SLOT_LEN);
		break;
	case IPC_AUDIT:
		codec_put16(w, m->u.audit.event);
		codec_put16(w, m->u.audit.len);
		codec_put_bytes(w, m->u.audit.json, m->u.audit.len);
		break;
	case IPC_REVOKE:
		codec_put16(w, m->u.revoke.identity);
		codec_put_zero(w, 2);
		codec_put32(w, m->u.revoke.generation);
		break;
	case IPC_STATS:
		codec_put32(w, m->u.stats.total_conns);
		codec_put32(w, m->u.stats.n);
		for (uint32_t i = 0; i < m->u.stats.n; i++) {
			codec_put16(w, m->u.stats.e[i].identity);
			codec_put_zero(w, 2);
			codec_put32(w, m->u.stats.e[i].generation);
			codec_put32(w, m->u.stats.e[i].conns);
		}
		break;
	case IPC_ADMISSION:
		codec_put32(w, m->u.admission.accept);
		break;
	case IPC_CHANNEL:
		codec_put32(w, m->u.channel.kind);
		codec_put32(w, m->u.channel.worker);
		break;
	case IPC_CHILD_EVENT:
		codec_put32(w, m->u.child_event.kind);
		codec_put32(w, m->u.child_event.child);
		codec_put_i32(w, m->u.child_event.pid);
		codec_put_i32(w, m->u.child_event.status);
		codec_put_i32(w, m->u.child_event.syscall);
		break;
	default: /* PING, PONG, STATS_REQ: empty */
		break;
	}
}

int
ipc_encode(const struct ipc_msg *m, uint8_t *out, size_t outlen)
{
	struct codec_wr w;
	size_t body_len;

	if (codec_type_get(m->hdr.type) == NULL)
		return IPC_E_TYPE;
	/* Refuse to send what the peer would refuse to receive. */
	if (!codec_check_fields(m))
		return IPC_E_FIELD;
	body_len = codec_body_len(m);
	if (body_len > IPC_BODY_MAX)
		return IPC_E_OVERSIZE;    /* cannot happen with the limits in ipc.h; kept as a guard */
	if (outlen < IPC_HDR_LEN + body_len)
		return IPC_E_SPACE;

	w = (struct codec_wr){ out, IPC_HDR_LEN + body_len, 0 };
	codec_put16(&w, IPC_VERSION);
	codec_put16(&w, m->hdr.type);
	codec_put32(&w, (uint32_t)body_len);
	codec_put64(&w, m->hdr.req_id);
	codec_write_body(&w, m);
	if (w.bad || w.left != 0)
		return IPC_E_LENGTH;      /* layout table and writer disagree: a bug, never sent */
	return (int)(IPC_HDR_LEN + body_len);
}
