/*
 * Unit tests for ipc/: the codec (round trips at the boundary lengths, every way a frame can
 * be wrong, the wire layout itself) and the channel over a real socketpair (descriptor
 * passing, EOF, oversized and multi-descriptor datagrams, queueing, the queue cap).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/limits.h"
#include "ipc/channel.h"
#include "ipc/ipc.h"

/* ---- valid messages of every type, including boundary lengths ---- */

static void
fill(void *p, size_t n, unsigned seed)
{
	uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed + i * 7 + 1);
}

static void mk_ping(struct ipc_msg *m)      { ipc_msg_init(m, IPC_PING, 3); }
static void mk_pong(struct ipc_msg *m)      { ipc_msg_init(m, IPC_PONG, UINT64_MAX); }
static void mk_stats_req(struct ipc_msg *m) { ipc_msg_init(m, IPC_STATS_REQ, 4); }

static void
mk_hello(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_HELLO, 1);
	m->u.hello.pid = 4242;
}

static void
mk_hello_ok(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_HELLO_OK, 2);
	m->u.hello_ok.identities = 3;
}

static void
mk_err(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_ERR, 5);
	m->u.err.code = IPC_ERR_POLICY;
}

static void
mk_admission(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_ADMISSION, 6);
	m->u.admission.accept = 1;
}

static void
mk_sign_len(struct ipc_msg *m, uint16_t n)
{
	ipc_msg_init(m, IPC_SIGN, 0x1122334455667788ull);
	fill(m->u.sign.key_id, IPC_KEY_ID_LEN, 3);
	m->u.sign.sigalg = 0x0403;
	m->u.sign.tbs_len = n;
	fill(m->u.sign.tbs, n, 9);
}
static void mk_sign(struct ipc_msg *m)     { mk_sign_len(m, 130); }
static void mk_sign_min(struct ipc_msg *m) { mk_sign_len(m, 1); }
static void mk_sign_max(struct ipc_msg *m) { mk_sign_len(m, IPC_TBS_MAX); }

static void
mk_sign_ok_len(struct ipc_msg *m, uint16_t n)
{
	ipc_msg_init(m, IPC_SIGN_OK, 0x1122334455667788ull);
	m->u.sign_ok.sig_len = n;
	fill(m->u.sign_ok.sig, n, 11);
}
static void mk_sign_ok(struct ipc_msg *m)     { mk_sign_ok_len(m, 72); }
static void mk_sign_ok_min(struct ipc_msg *m) { mk_sign_ok_len(m, 1); }
static void mk_sign_ok_max(struct ipc_msg *m) { mk_sign_ok_len(m, IPC_SIG_MAX); }

static void
mk_pem(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_PEM_CHUNK, 7);
	m->u.pem_chunk.identity = 1;
	m->u.pem_chunk.kind = IPC_PEM_CA;
	m->u.pem_chunk.generation = 2;
	m->u.pem_chunk.total = 5000;
	m->u.pem_chunk.offset = 960;
	m->u.pem_chunk.len = 100;
	fill(m->u.pem_chunk.data, 100, 13);
}

static void
mk_pem_max(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_PEM_CHUNK, 8);
	m->u.pem_chunk.identity = CONFIG_IDENTITIES_MAX - 1;
	m->u.pem_chunk.kind = IPC_PEM_CRL;
	m->u.pem_chunk.generation = UINT32_MAX;
	m->u.pem_chunk.total = PEM_SIZE_MAX;
	m->u.pem_chunk.offset = PEM_SIZE_MAX - IPC_CHUNK_MAX;
	m->u.pem_chunk.len = IPC_CHUNK_MAX;
	fill(m->u.pem_chunk.data, IPC_CHUNK_MAX, 17);
}

/* A listener's own CA bundle, and a connector's CRL at the highest index. */
static void
mk_pem_listener(struct ipc_msg *m)
{
	mk_pem(m);
	m->u.pem_chunk.scope = IPC_SCOPE_LISTENER;
	m->u.pem_chunk.identity = CONFIG_LISTENERS_MAX - 1;
}

static void
mk_pem_connector(struct ipc_msg *m)
{
	mk_pem(m);
	m->u.pem_chunk.scope = IPC_SCOPE_CONNECTOR;
	m->u.pem_chunk.identity = CONFIG_CONNECTORS_MAX - 1;
	m->u.pem_chunk.kind = IPC_PEM_CRL;
}

static void
mk_trust(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_TRUST, 16);
	m->u.trust.scope = IPC_SCOPE_LISTENER;
	m->u.trust.index = CONFIG_LISTENERS_MAX - 1;
	m->u.trust.generation = 0x01020304;
	m->u.trust.ca_len = 4321;
	m->u.trust.crl_len = PEM_SIZE_MAX;
	fill(m->u.trust.digest, sizeof(m->u.trust.digest), 41);
}

static void
mk_trust_connector(struct ipc_msg *m)
{
	mk_trust(m);
	m->u.trust.scope = IPC_SCOPE_CONNECTOR;
	m->u.trust.index = 0;
	m->u.trust.ca_len = 0;
	m->u.trust.crl_len = 0;
}

static void
mk_generation(struct ipc_msg *m)
{
	struct ipc_generation *g = &m->u.generation;

	ipc_msg_init(m, IPC_GENERATION, 9);
	g->identity = 0;
	g->key_type = IPC_KEY_EC_P256;
	g->generation = 1;
	fill(g->key_id, sizeof(g->key_id), 19);
	g->key_bits = 256;
	g->chain_len = 1234;
	g->ca_len = 0;
	g->crl_len = PEM_SIZE_MAX;
	fill(g->digest, sizeof(g->digest), 23);
	strcpy(g->name, "node");
}

static void
mk_generation_rsa(struct ipc_msg *m)
{
	mk_generation(m);
	m->u.generation.key_type = IPC_KEY_RSA;
	m->u.generation.key_bits = 4096;
	memset(m->u.generation.name, 'n', IPC_NAME_MAX - 1);   /* longest name */
}

static void
mk_ticket(struct ipc_msg *m, uint32_t count)
{
	ipc_msg_init(m, IPC_TICKET_KEYS, 10);
	m->u.ticket_keys.count = count;
	m->u.ticket_keys.lifetime = 3600;
	for (uint32_t i = 0; i < count; i++) {
		m->u.ticket_keys.slot[i].created = 1700000000ull + i;
		fill(m->u.ticket_keys.slot[i].name, IPC_TICKET_NAME_LEN, 29 + i);
		fill(m->u.ticket_keys.slot[i].aes_key, IPC_TICKET_AES_LEN, 31 + i);
		fill(m->u.ticket_keys.slot[i].hmac_key, IPC_TICKET_HMAC_LEN, 37 + i);
	}
}
static void mk_ticket1(struct ipc_msg *m) { mk_ticket(m, 1); }
static void mk_ticket2(struct ipc_msg *m) { mk_ticket(m, 2); }

static void
mk_audit_len(struct ipc_msg *m, uint16_t n)
{
	ipc_msg_init(m, IPC_AUDIT, 11);
	m->u.audit.event = 3;
	memset(m->u.audit.json, ' ', n);
	m->u.audit.json[0] = '{';
	m->u.audit.json[n - 1] = '}';
	m->u.audit.len = n;
}
static void mk_audit(struct ipc_msg *m)     { mk_audit_len(m, 40); }
static void mk_audit_min(struct ipc_msg *m) { mk_audit_len(m, 2); }
static void mk_audit_max(struct ipc_msg *m) { mk_audit_len(m, IPC_AUDIT_MAX); }

static void
mk_revoke(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_REVOKE, 12);
	m->u.revoke.identity = 2;
	m->u.revoke.generation = 5;
}

static void
mk_stats_n(struct ipc_msg *m, uint32_t n)
{
	ipc_msg_init(m, IPC_STATS, 13);
	m->u.stats.total_conns = 77;
	m->u.stats.n = n;
	for (uint32_t i = 0; i < n; i++) {
		m->u.stats.e[i].identity = (uint16_t)(i % CONFIG_IDENTITIES_MAX);
		m->u.stats.e[i].generation = i + 1;
		m->u.stats.e[i].conns = i * 3;
	}
}
static void mk_stats(struct ipc_msg *m)     { mk_stats_n(m, 2); }
static void mk_stats_min(struct ipc_msg *m) { mk_stats_n(m, 0); }
static void mk_stats_max(struct ipc_msg *m) { mk_stats_n(m, IPC_STATS_MAX); }

static void
mk_channel(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_CHANNEL, 14);
	m->u.channel.kind = IPC_CHANNEL_WORKER;
	m->u.channel.worker = WORKERS_MAX - 1;
}

static void
mk_child_event(struct ipc_msg *m)
{
	ipc_msg_init(m, IPC_CHILD_EVENT, 15);
	m->u.child_event.kind = IPC_CHILD_EXITED;
	m->u.child_event.child = WORKERS_MAX;
	m->u.child_event.pid = 31337;
	m->u.child_event.status = -9;
	m->u.child_event.syscall = -1;
}

typedef void (*mk_fn)(struct ipc_msg *);

/* Every builder with the body size ipc.h documents for it. */
static const struct { mk_fn mk; uint32_t body_len; } valid[] = {
	{ mk_hello, 8 }, { mk_hello_ok, 8 }, { mk_ping, 0 }, { mk_pong, 0 }, { mk_stats_req, 0 },
	{ mk_err, 4 }, { mk_admission, 4 },
	{ mk_sign, 36 + 130 }, { mk_sign_min, 36 + 1 }, { mk_sign_max, 36 + IPC_TBS_MAX },
	{ mk_sign_ok, 4 + 72 }, { mk_sign_ok_min, 4 + 1 }, { mk_sign_ok_max, 4 + IPC_SIG_MAX },
	{ mk_pem, 20 + 100 }, { mk_pem_max, 20 + IPC_CHUNK_MAX },
	{ mk_pem_listener, 20 + 100 }, { mk_pem_connector, 20 + 100 },
	{ mk_trust, 52 }, { mk_trust_connector, 52 },
	{ mk_generation, 156 }, { mk_generation_rsa, 156 },
	{ mk_ticket1, 184 }, { mk_ticket2, 184 },
	{ mk_audit, 4 + 40 }, { mk_audit_min, 4 + 2 }, { mk_audit_max, 4 + IPC_AUDIT_MAX },
	{ mk_revoke, 8 }, { mk_stats, 8 + 24 }, { mk_stats_min, 8 }, { mk_stats_max, 8 + 12 * 64 },
	{ mk_channel, 8 }, { mk_child_event, 20 },
};
#define N_VALID (sizeof(valid) / sizeof(valid[0]))

static int
encode_ok(mk_fn mk, uint8_t *buf, struct ipc_msg *m)
{
	int n;

	mk(m);
	n = ipc_encode(m, buf, IPC_FRAME_MAX);
	assert_true(n >= IPC_HDR_LEN);
	return n;
}

static void
put_le(uint8_t *p, uint64_t v, unsigned width)
{
	for (unsigned i = 0; i < width; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* ---- codec ---- */

static void
test_roundtrip_all(void **state)
{
	uint8_t buf[IPC_FRAME_MAX], buf2[IPC_FRAME_MAX];
	struct ipc_msg m, d;
	int seen[IPC_TYPE_MAX] = { 0 };

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, buf, &m);

		assert_int_equal(n, IPC_HDR_LEN + valid[i].body_len);
		assert_int_equal(ipc_decode(buf, (size_t)n, &d), IPC_E_OK);
		assert_int_equal(d.hdr.version, IPC_VERSION);
		assert_int_equal(d.hdr.type, m.hdr.type);
		assert_int_equal(d.hdr.body_len, valid[i].body_len);
		assert_true(d.hdr.req_id == m.hdr.req_id);
		assert_memory_equal(&d.u, &m.u, sizeof(d.u));
		assert_int_equal(ipc_encode(&d, buf2, sizeof(buf2)), n);
		assert_memory_equal(buf, buf2, (size_t)n);
		seen[m.hdr.type] = 1;
	}
	/* Every type in the protocol is covered. */
	for (int t = 0; t < IPC_TYPE_MAX; t++)
		if (strcmp(ipc_type_name((uint16_t)t), "UNKNOWN") != 0)
			assert_true(seen[t]);
}

/* The wire is little-endian, header first, exactly as ipc.h says. */
static void
test_wire_layout(void **state)
{
	static const uint8_t ping[] = { 1, 0, 10, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1 };
	static const uint8_t err_body[] = { 4, 0, 0, 0 };
	static const uint8_t rev_body[] = { 0x34, 0x12, 0, 0, 0x78, 0x56, 0x34, 0x12 };
	static const uint8_t trust_head[] = { IPC_SCOPE_LISTENER, 0, CONFIG_LISTENERS_MAX - 1, 0,
	    4, 3, 2, 1 };
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_PING, 0x0102030405060708ull);
	m.hdr.version = 77;     /* computed by the encoder, never taken from the caller */
	m.hdr.body_len = 999;
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), 16);
	assert_memory_equal(buf, ping, sizeof(ping));

	ipc_msg_init(&m, IPC_ERR, 0);
	m.u.err.code = IPC_ERR_BUSY;
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), 20);
	assert_int_equal(buf[4], 4);
	assert_memory_equal(buf + 16, err_body, 4);

	ipc_msg_init(&m, IPC_REVOKE, 0);
	m.u.revoke.identity = 0x1234 % CONFIG_IDENTITIES_MAX;
	m.u.revoke.generation = 0x12345678;
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), 24);
	assert_int_equal(buf[16], 0x1234 % CONFIG_IDENTITIES_MAX);
	assert_memory_equal(buf + 18, rev_body + 2, 6);

	/* TRUST: scope, a reserved byte, then the index; a PEM_CHUNK's scope is its byte 3. */
	mk_trust(&m);
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), 16 + 52);
	assert_memory_equal(buf + 16, trust_head, sizeof(trust_head));
	mk_pem_connector(&m);
	assert_true(ipc_encode(&m, buf, sizeof(buf)) > 16 + 20);
	assert_int_equal(buf[16 + 2], IPC_PEM_CRL);
	assert_int_equal(buf[16 + 3], IPC_SCOPE_CONNECTOR);
}

static void
test_truncated(void **state)
{
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m, d;

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, buf, &m);

		for (int k = 0; k < n; k++)
			assert_int_equal(ipc_decode(buf, (size_t)k, &d),
			    k < IPC_HDR_LEN ? IPC_E_SHORT : IPC_E_LENGTH);
	}
}

static void
test_oversize(void **state)
{
	uint8_t buf[IPC_FRAME_MAX + 64] = { 0 };
	struct ipc_msg m, d;
	int n = encode_ok(mk_audit_max, buf, &m);

	/* Rejected from the header alone, whatever follows. */
	put_le(buf + 4, IPC_BODY_MAX + 1, 4);
	assert_int_equal(ipc_decode(buf, IPC_HDR_LEN, &d), IPC_E_OVERSIZE);
	assert_int_equal(ipc_decode(buf, IPC_FRAME_MAX + 1, &d), IPC_E_OVERSIZE);
	put_le(buf + 4, UINT32_MAX, 4);
	assert_int_equal(ipc_decode(buf, (size_t)n, &d), IPC_E_OVERSIZE);
	/* Version is checked first. */
	put_le(buf, 2, 2);
	assert_int_equal(ipc_decode(buf, (size_t)n, &d), IPC_E_VERSION);
}

static void
test_version(void **state)
{
	static const uint16_t bad[] = { 0, 2, 0x100, 0xffff };
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m, d;
	int n = encode_ok(mk_sign, buf, &m);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_le(buf, bad[i], 2);
		assert_int_equal(ipc_decode(buf, (size_t)n, &d), IPC_E_VERSION);
	}
}

static void
test_unknown_type(void **state)
{
	static const uint16_t bad[] = { 0, 17, 18, 31, IPC_TYPE_MAX, 0x100, 0xffff };
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m, d;
	int n = encode_ok(mk_hello, buf, &m);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_le(buf + 2, bad[i], 2);
		assert_int_equal(ipc_decode(buf, (size_t)n, &d), IPC_E_TYPE);
		m.hdr.type = bad[i];
		assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), IPC_E_TYPE);
		n = encode_ok(mk_hello, buf, &m);
	}
}

/* body_len in the header disagrees with the bytes that came. */
static void
test_body_len_mismatch(void **state)
{
	uint8_t buf[IPC_FRAME_MAX + 1];
	struct ipc_msg m, d;

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, buf, &m);

		buf[n] = 0;
		assert_int_equal(ipc_decode(buf, (size_t)n + 1, &d), IPC_E_LENGTH);
		put_le(buf + 4, valid[i].body_len + 1, 4);
		assert_int_equal(ipc_decode(buf, (size_t)n, &d),
		    valid[i].body_len + 1 > IPC_BODY_MAX ? IPC_E_OVERSIZE : IPC_E_LENGTH);
		if (valid[i].body_len > 0) {
			put_le(buf + 4, valid[i].body_len - 1, 4);
			assert_int_equal(ipc_decode(buf, (size_t)n, &d), IPC_E_LENGTH);
		}
	}
}

/* Header and bytes agree, but the body is one byte short or long for its type. */
static void
test_type_size(void **state)
{
	uint8_t buf[IPC_FRAME_MAX + 1];
	struct ipc_msg m, d;

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, buf, &m);

		buf[n] = 0;
		if (valid[i].body_len < IPC_BODY_MAX) {
			put_le(buf + 4, valid[i].body_len + 1, 4);
			assert_int_equal(ipc_decode(buf, (size_t)n + 1, &d), IPC_E_LENGTH);
		}
		if (valid[i].body_len > 0) {
			put_le(buf + 4, valid[i].body_len - 1, 4);
			assert_int_equal(ipc_decode(buf, (size_t)n - 1, &d), IPC_E_LENGTH);
		}
	}
}

/*
 * One field of a valid frame out of range on the wire: write `val` (width bytes, LE) at body
 * offset `off`; body_len >= 0 also resizes the frame (for declared lengths).
 */
static const struct {
	mk_fn    mk;
	unsigned off, width;
	uint32_t val;
	int      body_len;
} bad_wire[] = {
	{ mk_hello, 4, 4, 1, -1 },
	{ mk_hello_ok, 0, 4, CONFIG_IDENTITIES_MAX + 1, -1 }, { mk_hello_ok, 4, 4, 0x80000000u, -1 },
	{ mk_sign, 34, 2, 0, 36 }, { mk_sign_max, 34, 2, IPC_TBS_MAX + 1, 36 + IPC_TBS_MAX + 1 },
	{ mk_sign_ok, 0, 2, 0, 4 }, { mk_sign_ok_max, 0, 2, IPC_SIG_MAX + 1, 4 + IPC_SIG_MAX + 1 },
	{ mk_sign_ok, 3, 1, 1, -1 },
	{ mk_err, 0, 2, 0, -1 }, { mk_err, 0, 2, IPC_ERR_CODE_MAX, -1 }, { mk_err, 0, 2, 0xffff, -1 },
	{ mk_err, 2, 2, 0x100, -1 },
	{ mk_pem, 0, 2, CONFIG_IDENTITIES_MAX, -1 }, { mk_pem, 2, 1, 0, -1 },
	{ mk_pem, 2, 1, IPC_PEM_KIND_MAX, -1 }, { mk_pem, 3, 1, IPC_SCOPE_MAX, -1 },
	{ mk_pem, 3, 1, 0xff, -1 }, { mk_pem, 4, 4, 0, -1 },
	{ mk_pem, 8, 4, PEM_SIZE_MAX + 1, -1 }, { mk_pem, 12, 4, 5000 - 100 + 1, -1 },
	{ mk_pem, 12, 4, UINT32_MAX, -1 }, { mk_pem, 16, 2, 0, 20 },
	{ mk_pem_max, 16, 2, IPC_CHUNK_MAX + 1, 20 + IPC_CHUNK_MAX + 1 }, { mk_pem, 18, 2, 1, -1 },
	{ mk_pem_listener, 0, 2, CONFIG_LISTENERS_MAX, -1 },
	{ mk_pem_listener, 2, 1, IPC_PEM_CHAIN, -1 },
	{ mk_pem_connector, 0, 2, CONFIG_CONNECTORS_MAX, -1 },
	{ mk_pem_connector, 2, 1, IPC_PEM_CHAIN, -1 },
	{ mk_trust, 0, 1, IPC_SCOPE_IDENTITY, -1 }, { mk_trust, 0, 1, IPC_SCOPE_MAX, -1 },
	{ mk_trust, 1, 1, 1, -1 }, { mk_trust, 2, 2, CONFIG_LISTENERS_MAX, -1 },
	{ mk_trust_connector, 2, 2, CONFIG_CONNECTORS_MAX, -1 }, { mk_trust, 4, 4, 0, -1 },
	{ mk_trust, 8, 4, PEM_SIZE_MAX + 1, -1 }, { mk_trust, 12, 4, PEM_SIZE_MAX + 1, -1 },
	{ mk_trust, 48, 4, 1, -1 },
	{ mk_generation, 0, 2, CONFIG_IDENTITIES_MAX, -1 }, { mk_generation, 2, 2, 0, -1 },
	{ mk_generation, 2, 2, IPC_KEY_TYPE_MAX, -1 }, { mk_generation, 2, 2, IPC_KEY_EC_P384, -1 },
	{ mk_generation, 2, 2, IPC_KEY_RSA, -1 }, { mk_generation, 4, 4, 0, -1 },
	{ mk_generation, 40, 4, 384, -1 }, { mk_generation_rsa, 40, 4, 1024, -1 },
	{ mk_generation_rsa, 40, 4, 8192, -1 }, { mk_generation, 44, 4, 0, -1 },
	{ mk_generation, 44, 4, PEM_SIZE_MAX + 1, -1 }, { mk_generation, 48, 4, PEM_SIZE_MAX + 1, -1 },
	{ mk_generation, 52, 4, PEM_SIZE_MAX + 1, -1 }, { mk_generation, 88, 1, 0, -1 },
	{ mk_generation, 88 + 10, 1, 'x', -1 }, { mk_generation, 88 + 1, 1, '\n', -1 },
	{ mk_generation, 88 + 63, 1, 'x', -1 }, { mk_generation_rsa, 88 + 63, 1, 'x', -1 },
	{ mk_generation, 152, 4, 1, -1 },
	{ mk_ticket2, 0, 4, 0, -1 }, { mk_ticket2, 0, 4, 3, -1 }, { mk_ticket2, 4, 4, 0, -1 },
	{ mk_ticket1, 8 + 88 + 5, 1, 1, -1 }, { mk_ticket1, 8 + 88, 1, 1, -1 },
	{ mk_audit, 0, 2, 0, -1 }, { mk_audit, 2, 2, 0, 4 }, { mk_audit, 2, 2, 1, 5 },
	{ mk_audit_max, 2, 2, IPC_AUDIT_MAX + 1, 4 + IPC_AUDIT_MAX + 1 }, { mk_audit, 4 + 5, 1, 0, -1 },
	{ mk_audit, 4 + 39, 1, 0, -1 },
	{ mk_revoke, 0, 2, CONFIG_IDENTITIES_MAX, -1 }, { mk_revoke, 2, 1, 1, -1 },
	{ mk_revoke, 4, 4, 0, -1 },
	{ mk_stats_max, 4, 4, IPC_STATS_MAX + 1, 8 + 12 * (IPC_STATS_MAX + 1) },
	{ mk_stats, 8, 2, CONFIG_IDENTITIES_MAX, -1 }, { mk_stats, 8 + 2, 1, 1, -1 },
	{ mk_stats, 8 + 12 + 4, 4, 0, -1 },
	{ mk_admission, 0, 4, 2, -1 },
	{ mk_channel, 0, 4, 0, -1 }, { mk_channel, 0, 4, IPC_CHANNEL_KIND_MAX, -1 },
	{ mk_channel, 4, 4, WORKERS_MAX, -1 }, { mk_channel, 4, 4, UINT32_MAX, -1 },
	{ mk_child_event, 0, 4, 0, -1 }, { mk_child_event, 0, 4, IPC_CHILD_EVENT_MAX, -1 },
	{ mk_child_event, 4, 4, WORKERS_MAX + 1, -1 }, { mk_child_event, 8, 4, 0, -1 },
	{ mk_child_event, 8, 4, (uint32_t)-5, -1 }, { mk_child_event, 16, 4, (uint32_t)-2, -1 },
};

static void
test_field_ranges_wire(void **state)
{
	for (size_t i = 0; i < sizeof(bad_wire) / sizeof(bad_wire[0]); i++) {
		uint8_t buf[IPC_FRAME_MAX] = { 0 };
		struct ipc_msg m, d;
		int n = encode_ok(bad_wire[i].mk, buf, &m);

		put_le(buf + IPC_HDR_LEN + bad_wire[i].off, bad_wire[i].val, bad_wire[i].width);
		if (bad_wire[i].body_len >= 0) {
			n = IPC_HDR_LEN + bad_wire[i].body_len;
			put_le(buf + 4, (uint32_t)bad_wire[i].body_len, 4);
		}
		if (ipc_decode(buf, (size_t)n, &d) != IPC_E_FIELD)
			fail_msg("bad_wire[%zu] (%s) decoded as %d", i, ipc_type_name(m.hdr.type),
			    ipc_decode(buf, (size_t)n, &d));
	}
}

/* The same rules on the encoding side: nothing invalid ever leaves. */
static int
bad_struct(int i, struct ipc_msg *m)
{
	switch (i) {
	case 0:  mk_hello(m); m->u.hello.flags = 1; break;
	case 1:  mk_hello_ok(m); m->u.hello_ok.flags = 2; break;
	case 2:  mk_hello_ok(m); m->u.hello_ok.identities = CONFIG_IDENTITIES_MAX + 1; break;
	case 3:  mk_sign(m); m->u.sign.tbs_len = 0; break;
	case 4:  mk_sign(m); m->u.sign.tbs_len = IPC_TBS_MAX + 1; break;
	case 5:  mk_sign_ok(m); m->u.sign_ok.sig_len = 0; break;
	case 6:  mk_sign_ok(m); m->u.sign_ok.sig_len = IPC_SIG_MAX + 1; break;
	case 7:  mk_err(m); m->u.err.code = 0; break;
	case 8:  mk_err(m); m->u.err.code = IPC_ERR_CODE_MAX; break;
	case 9:  mk_pem(m); m->u.pem_chunk.kind = 0; break;
	case 10: mk_pem(m); m->u.pem_chunk.kind = IPC_PEM_KIND_MAX; break;
	case 11: mk_pem(m); m->u.pem_chunk.len = 0; break;
	case 12: mk_pem(m); m->u.pem_chunk.len = IPC_CHUNK_MAX + 1; m->u.pem_chunk.total = 10000; break;
	case 13: mk_pem(m); m->u.pem_chunk.offset = 4901; break;
	case 14: mk_pem(m); m->u.pem_chunk.total = PEM_SIZE_MAX + 1; break;
	case 15: mk_pem(m); m->u.pem_chunk.offset = UINT32_MAX; break;
	case 16: mk_pem(m); m->u.pem_chunk.generation = 0; break;
	case 17: mk_generation(m); m->u.generation.key_type = 0; break;
	case 18: mk_generation(m); m->u.generation.key_type = IPC_KEY_TYPE_MAX; break;
	case 19: mk_generation(m); m->u.generation.generation = 0; break;
	case 20: mk_generation(m); m->u.generation.chain_len = 0; break;
	case 21: mk_generation(m); m->u.generation.chain_len = PEM_SIZE_MAX + 1; break;
	case 22: mk_generation(m); m->u.generation.ca_len = PEM_SIZE_MAX + 1; break;
	case 23: mk_generation(m); m->u.generation.name[0] = '\0'; break;
	case 24: mk_generation(m); memset(m->u.generation.name, 'a', IPC_NAME_MAX); break;
	case 25: mk_generation(m); m->u.generation.flags = 1; break;
	case 26: mk_generation(m); m->u.generation.key_bits = 255; break;
	case 27: mk_generation(m); m->u.generation.name[2] = '\x1b'; break;
	case 28: mk_ticket2(m); m->u.ticket_keys.count = 0; break;
	case 29: mk_ticket2(m); m->u.ticket_keys.count = 3; break;
	case 30: mk_ticket2(m); m->u.ticket_keys.lifetime = 0; break;
	case 31: mk_audit(m); m->u.audit.len = 1; break;
	case 32: mk_audit(m); m->u.audit.len = IPC_AUDIT_MAX + 1; break;
	case 33: mk_audit(m); m->u.audit.json[3] = '\0'; break;
	case 34: mk_audit(m); m->u.audit.event = 0; break;
	case 35: mk_stats(m); m->u.stats.n = IPC_STATS_MAX + 1; break;
	case 36: mk_stats(m); m->u.stats.e[1].generation = 0; break;
	case 37: mk_admission(m); m->u.admission.accept = 7; break;
	case 38: mk_channel(m); m->u.channel.kind = 0; break;
	case 39: mk_channel(m); m->u.channel.worker = WORKERS_MAX; break;
	case 40: mk_child_event(m); m->u.child_event.kind = IPC_CHILD_EVENT_MAX; break;
	case 41: mk_child_event(m); m->u.child_event.child = WORKERS_MAX + 1; break;
	case 42: mk_child_event(m); m->u.child_event.syscall = -2; break;
	case 43: mk_revoke(m); m->u.revoke.generation = 0; break;
	case 44: mk_revoke(m); m->u.revoke.identity = CONFIG_IDENTITIES_MAX; break;
	case 45: mk_sign(m); m->u.sign.tbs_len = UINT16_MAX; break;
	case 46: mk_stats(m); m->u.stats.n = UINT32_MAX; break;
	case 47: mk_pem(m); m->u.pem_chunk.scope = IPC_SCOPE_MAX; break;
	case 48: mk_pem_listener(m); m->u.pem_chunk.kind = IPC_PEM_CHAIN; break;
	case 49: mk_pem_listener(m); m->u.pem_chunk.identity = CONFIG_LISTENERS_MAX; break;
	case 50: mk_pem_connector(m); m->u.pem_chunk.identity = CONFIG_CONNECTORS_MAX; break;
	case 51: mk_trust(m); m->u.trust.scope = IPC_SCOPE_IDENTITY; break;
	case 52: mk_trust(m); m->u.trust.index = CONFIG_LISTENERS_MAX; break;
	case 53: mk_trust(m); m->u.trust.generation = 0; break;
	case 54: mk_trust(m); m->u.trust.ca_len = PEM_SIZE_MAX + 1; break;
	case 55: mk_trust(m); m->u.trust.crl_len = UINT32_MAX; break;
	case 56: mk_trust(m); m->u.trust.flags = 2; break;
	default: return 0;
	}
	return 1;
}

static void
test_field_ranges_encode(void **state)
{
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m;

	for (int i = 0; bad_struct(i, &m); i++)
		if (ipc_encode(&m, buf, sizeof(buf)) != IPC_E_FIELD)
			fail_msg("bad_struct(%d) (%s) encoded", i, ipc_type_name(m.hdr.type));
}

static void
test_encode_space(void **state)
{
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m;

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, buf, &m);

		assert_int_equal(ipc_encode(&m, buf, (size_t)n - 1), IPC_E_SPACE);
		assert_int_equal(ipc_encode(&m, buf, 0), IPC_E_SPACE);
		assert_int_equal(ipc_encode(&m, buf, (size_t)n), n);
	}
}

/* Bytes of the struct that are not part of the message never reach the wire. */
static void
test_no_leak(void **state)
{
	uint8_t clean[IPC_FRAME_MAX], dirty[IPC_FRAME_MAX];
	struct ipc_msg m, g;

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, clean, &m);

		/* Same message, built on top of garbage. */
		memset(&g, 0xa5, sizeof(g));
		g.hdr = m.hdr;
		switch (m.hdr.type) {
		case IPC_SIGN:
			memcpy(&g.u.sign, &m.u.sign, offsetof(struct ipc_sign, tbs) + m.u.sign.tbs_len);
			break;
		case IPC_SIGN_OK:
			memcpy(&g.u.sign_ok, &m.u.sign_ok,
			    offsetof(struct ipc_sign_ok, sig) + m.u.sign_ok.sig_len);
			break;
		case IPC_PEM_CHUNK:
			g.u.pem_chunk = m.u.pem_chunk;
			memset(g.u.pem_chunk.data + m.u.pem_chunk.len, 0xa5,
			    IPC_CHUNK_MAX - m.u.pem_chunk.len);
			break;
		case IPC_GENERATION: {
			size_t l = strlen(m.u.generation.name);

			g.u.generation = m.u.generation;
			if (l + 1 < IPC_NAME_MAX)
				memset(g.u.generation.name + l + 1, 'Z', IPC_NAME_MAX - l - 1);
			break;
		}
		case IPC_TICKET_KEYS:
			memcpy(&g.u.ticket_keys, &m.u.ticket_keys, sizeof(m.u.ticket_keys));
			if (m.u.ticket_keys.count == 1)
				memset(&g.u.ticket_keys.slot[1], 0xa5, sizeof(g.u.ticket_keys.slot[1]));
			break;
		case IPC_AUDIT:
			g.u.audit.event = m.u.audit.event;
			g.u.audit.len = m.u.audit.len;
			memcpy(g.u.audit.json, m.u.audit.json, m.u.audit.len);
			break;
		case IPC_STATS:
			g.u.stats.total_conns = m.u.stats.total_conns;
			g.u.stats.n = m.u.stats.n;
			memcpy(g.u.stats.e, m.u.stats.e, m.u.stats.n * sizeof(m.u.stats.e[0]));
			break;
		default:
			/* Fixed bodies have no unused bytes beyond struct padding, which the
			 * encoder never reads (it writes field by field). */
			memcpy(&g.u, &m.u, sizeof(m.u));
			break;
		}
		assert_int_equal(ipc_encode(&g, dirty, sizeof(dirty)), n);
		assert_memory_equal(clean, dirty, (size_t)n);
	}
}

/* Decoding fills the whole struct: nothing of what was there before survives. */
static void
test_decode_clears(void **state)
{
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m, a, b;

	for (size_t i = 0; i < N_VALID; i++) {
		int n = encode_ok(valid[i].mk, buf, &m);

		memset(&a, 0x00, sizeof(a));
		memset(&b, 0xff, sizeof(b));
		assert_int_equal(ipc_decode(buf, (size_t)n, &a), IPC_E_OK);
		assert_int_equal(ipc_decode(buf, (size_t)n, &b), IPC_E_OK);
		assert_memory_equal(&a, &b, sizeof(a));
		if (m.hdr.type == IPC_AUDIT) {
			assert_int_equal(a.u.audit.json[a.u.audit.len], '\0');
			assert_int_equal(strlen(a.u.audit.json), a.u.audit.len);
		}
	}
}

static void
test_names(void **state)
{
	assert_string_equal(ipc_type_name(IPC_SIGN), "SIGN");
	assert_string_equal(ipc_type_name(IPC_CHILD_EVENT), "CHILD_EVENT");
	assert_string_equal(ipc_type_name(0), "UNKNOWN");
	assert_string_equal(ipc_type_name(20), "UNKNOWN");
	assert_string_equal(ipc_type_name(0xffff), "UNKNOWN");
	for (uint16_t c = 1; c < IPC_ERR_CODE_MAX; c++)
		assert_string_not_equal(ipc_err_name(c), "unknown error code");
	assert_string_equal(ipc_err_name(0), "unknown error code");
	assert_string_equal(ipc_err_name(IPC_ERR_CODE_MAX), "unknown error code");
	for (int e = IPC_E_SPACE; e <= IPC_E_OK; e++)
		for (int f = e + 1; f <= IPC_E_OK; f++)
			assert_string_not_equal(ipc_codec_strerror(e), ipc_codec_strerror(f));
	assert_string_equal(ipc_codec_strerror(-99), "unknown IPC codec error");
}

/* ---- channel ---- */

static void
pair(struct ipc_chan *a, struct ipc_chan *b)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	ipc_chan_init(a, sv[0]);
	ipc_chan_init(b, sv[1]);
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static int
fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

/* A pipe whose read end never blocks, so a test that fails does not hang. */
static void
mkpipe(int p[2])
{
	assert_int_equal(pipe(p), 0);
	assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
}

/* Every write end of the (empty) pipe whose read end is rfd has been closed. */
static int
pipe_all_writers_closed(int rfd)
{
	char c;

	return read(rfd, &c, 1) == 0;
}

static void
test_chan_send_recv(void **state)
{
	struct ipc_chan a, b;
	struct ipc_msg m, d;
	int fd = 7, err = 7;

	pair(&a, &b);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_AGAIN);
	for (size_t i = 0; i < N_VALID; i++) {
		valid[i].mk(&m);
		if (m.hdr.type == IPC_CHANNEL)
			continue;
		assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
		assert_false(ipc_chan_has_queued(&a));
		assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_OK);
		assert_int_equal(fd, -1);
		assert_int_equal(err, IPC_E_OK);
		assert_int_equal(d.hdr.type, m.hdr.type);
		assert_true(d.hdr.req_id == m.hdr.req_id);
		assert_memory_equal(&d.u, &m.u, sizeof(d.u));
	}
	/* Both directions; NULL out-parameters are allowed. */
	mk_pong(&m);
	assert_int_equal(ipc_chan_send(&b, &m, -1), IPC_IO_OK);
	assert_int_equal(ipc_chan_recv_wait(&a, &d, NULL, NULL, 1000), IPC_IO_OK);
	assert_int_equal(d.hdr.type, IPC_PONG);
	/* A message that does not encode is not sent. */
	mk_sign(&m);
	m.u.sign.tbs_len = 0;
	assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_BADMSG);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_AGAIN);
	ipc_chan_close(&a);
	ipc_chan_close(&b);
	assert_int_equal(a.fd, -1);
}

static void
test_chan_fd_passing(void **state)
{
	struct ipc_chan a, b;
	struct ipc_msg m, d;
	int p[2], fd, err;
	char c = 0;

	pair(&a, &b);
	mkpipe(p);
	mk_channel(&m);
	assert_int_equal(ipc_chan_send(&a, &m, p[1]), IPC_IO_OK);
	assert_false(fd_is_open(p[1]));   /* the channel closed its copy once sent */
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_OK);
	assert_int_equal(d.hdr.type, IPC_CHANNEL);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(write(fd, "x", 1), 1);
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(c, 'x');
	close(fd);
	assert_true(pipe_all_writers_closed(p[0]));

	/* A descriptor on any other type, or IPC_CHANNEL without one, is refused and closed. */
	close(p[0]);
	mkpipe(p);
	mk_ping(&m);
	assert_int_equal(ipc_chan_send(&a, &m, p[1]), IPC_IO_BADMSG);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);
	mk_channel(&m);
	assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_BADMSG);
	m.u.channel.worker = WORKERS_MAX;
	mkpipe(p);
	assert_int_equal(ipc_chan_send(&a, &m, p[1]), IPC_IO_BADMSG);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_AGAIN);
	ipc_chan_close(&a);
	ipc_chan_close(&b);
}

/* Sends a raw datagram carrying nfds copies of fd. */
static void
raw_send(int sock, const void *buf, size_t len, int fd, int nfds)
{
	union {
		struct cmsghdr hdr;
		char           buf[CMSG_SPACE(8 * sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (nfds > 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		for (int i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof(int));
	}
	assert_int_equal(sendmsg(sock, &msg, 0), (ssize_t)len);
}

static void
test_chan_bad_datagrams(void **state)
{
	uint8_t big[IPC_FRAME_MAX + 100], frame[IPC_FRAME_MAX];
	struct ipc_chan a, b;
	struct ipc_msg m, d;
	int p[2], fd, err, n, before;

	pair(&a, &b);
	before = count_fds();

	/* Larger than any frame: refused from MSG_TRUNC, the rest discarded by the kernel. */
	memset(big, 0, sizeof(big));
	raw_send(a.fd, big, IPC_FRAME_MAX + 1, -1, 0);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_OVERSIZE);
	assert_int_equal(fd, -1);
	raw_send(a.fd, big, sizeof(big), -1, 0);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_OVERSIZE);

	/* Two descriptors on one frame: refused, both closed. */
	n = encode_ok(mk_channel, frame, &m);
	mkpipe(p);
	raw_send(a.fd, frame, (size_t)n, p[1], 2);
	close(p[1]);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_FIELD);
	assert_int_equal(fd, -1);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);
	assert_int_equal(count_fds(), before);

	/* Far more descriptors than the control buffer holds: MSG_CTRUNC, nothing leaks. */
	mkpipe(p);
	raw_send(a.fd, frame, (size_t)n, p[1], 8);
	close(p[1]);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_FIELD);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);

	/* A descriptor on a frame that may not carry one, and a frame that does not decode. */
	n = encode_ok(mk_ping, frame, &m);
	mkpipe(p);
	raw_send(a.fd, frame, (size_t)n, p[1], 1);
	close(p[1]);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_FIELD);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);

	frame[0] = 9;
	mkpipe(p);
	raw_send(a.fd, frame, (size_t)n, p[1], 1);
	close(p[1]);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_VERSION);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);
	raw_send(a.fd, frame, 3, -1, 0);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_SHORT);

	/* IPC_CHANNEL without its descriptor. */
	n = encode_ok(mk_channel, frame, &m);
	raw_send(a.fd, frame, (size_t)n, -1, 0);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_BADMSG);
	assert_int_equal(err, IPC_E_FIELD);

	/* The channel is still usable afterwards; the caller decides whether to close it. */
	mk_ping(&m);
	assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_OK);
	assert_int_equal(count_fds(), before);
	ipc_chan_close(&a);
	ipc_chan_close(&b);
}

static void
test_chan_eof(void **state)
{
	struct ipc_chan a, b;
	struct ipc_msg m, d;
	int fd, err;

	pair(&a, &b);
	mk_ping(&m);
	assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
	ipc_chan_close(&a);
	/* Frames sent before the close still arrive, then EOF. */
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_OK);
	assert_int_equal(ipc_chan_recv(&b, &d, &fd, &err), IPC_IO_EOF);
	assert_int_equal(ipc_chan_recv_wait(&b, &d, &fd, &err, 1000), IPC_IO_EOF);
	/* Sending to a closed peer is an error with errno, never SIGPIPE. */
	errno = 0;
	assert_int_equal(ipc_chan_send(&b, &m, -1), IPC_IO_SYSERR);
	assert_int_equal(errno, EPIPE);
	ipc_chan_close(&b);
}

static void
test_chan_recv_wait_timeout(void **state)
{
	struct ipc_chan a, b;
	struct ipc_msg m, d;
	struct timespec t0, t1;
	int fd, err;
	long ms;

	pair(&a, &b);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(ipc_chan_recv_wait(&b, &d, &fd, &err, 50), IPC_IO_AGAIN);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 45 && ms < 2000);
	assert_int_equal(ipc_chan_recv_wait(&b, &d, &fd, &err, 0), IPC_IO_AGAIN);
	mk_hello(&m);
	assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
	assert_int_equal(ipc_chan_recv_wait(&b, &d, &fd, &err, -1), IPC_IO_OK);
	assert_int_equal(d.hdr.type, IPC_HELLO);
	ipc_chan_close(&a);
	ipc_chan_close(&b);
}

/* Small send buffer, so the socket fills after a handful of frames. */
static void
pair_small(struct ipc_chan *a, struct ipc_chan *b)
{
	int sz = 4096;

	pair(a, b);
	assert_int_equal(setsockopt(a->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
}

static void
test_chan_queue_flush(void **state)
{
	struct ipc_chan a, b;
	struct ipc_msg m, d;
	uint64_t sent = 0, got = 0;
	int fd, err, p[2];
	char c;

	pair_small(&a, &b);
	assert_int_equal(ipc_chan_flush(&a), IPC_IO_OK);   /* nothing queued */
	/* Fill the socket until frames start to queue, then queue a few more. */
	mk_sign_ok_max(&m);
	while (!ipc_chan_has_queued(&a)) {
		m.hdr.req_id = sent++;
		assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
		assert_true(sent < 10000);
	}
	for (int i = 0; i < 10; i++) {
		m.hdr.req_id = sent++;
		assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
	}
	/* A queued descriptor travels in order with its frame. */
	mkpipe(p);
	mk_channel(&m);
	m.hdr.req_id = sent++;
	assert_int_equal(ipc_chan_send(&a, &m, p[1]), IPC_IO_OK);
	assert_true(a.q_len == 12);
	assert_int_equal(ipc_chan_flush(&a), IPC_IO_AGAIN);

	/* Drain and flush until everything has arrived, in order. */
	while (got < sent) {
		enum ipc_io r = ipc_chan_recv(&b, &d, &fd, &err);

		if (r == IPC_IO_AGAIN) {
			assert_true(ipc_chan_has_queued(&a));
			(void)ipc_chan_flush(&a);
			continue;
		}
		assert_int_equal(r, IPC_IO_OK);
		assert_true(d.hdr.req_id == got);
		if (d.hdr.type == IPC_CHANNEL) {
			assert_true(fd >= 0);
			assert_int_equal(write(fd, "q", 1), 1);
			close(fd);
		}
		got++;
	}
	assert_false(ipc_chan_has_queued(&a));
	assert_int_equal(ipc_chan_flush(&a), IPC_IO_OK);
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(c, 'q');
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);
	ipc_chan_close(&a);
	ipc_chan_close(&b);
}

static void
test_chan_queue_cap(void **state)
{
	struct ipc_chan a, b;
	struct ipc_msg m;
	int p[2], q[2], before = count_fds();
	char c;

	pair_small(&a, &b);
	mk_ping(&m);
	while (!ipc_chan_has_queued(&a))
		assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
	/* One queued descriptor, to check that close() releases it. */
	mkpipe(q);
	mk_channel(&m);
	assert_int_equal(ipc_chan_send(&a, &m, q[1]), IPC_IO_OK);
	mk_ping(&m);
	while (a.q_len < IPC_QUEUE_MAX)
		assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_OK);
	assert_int_equal(ipc_chan_send(&a, &m, -1), IPC_IO_FULL);
	assert_true(a.q_len == IPC_QUEUE_MAX);
	/* A descriptor offered to a full channel is closed, not leaked. */
	mkpipe(p);
	mk_channel(&m);
	assert_int_equal(ipc_chan_send(&a, &m, p[1]), IPC_IO_FULL);
	assert_true(pipe_all_writers_closed(p[0]));
	close(p[0]);
	/* Still queued, so still open; ipc_chan_close() drops the queue and closes it. */
	assert_int_equal(read(q[0], &c, 1), -1);
	assert_int_equal(errno, EAGAIN);
	ipc_chan_close(&a);
	assert_true(pipe_all_writers_closed(q[0]));
	close(q[0]);
	ipc_chan_close(&b);
	assert_int_equal(count_fds(), before);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_all),
		cmocka_unit_test(test_wire_layout),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_unknown_type),
		cmocka_unit_test(test_body_len_mismatch),
		cmocka_unit_test(test_type_size),
		cmocka_unit_test(test_field_ranges_wire),
		cmocka_unit_test(test_field_ranges_encode),
		cmocka_unit_test(test_encode_space),
		cmocka_unit_test(test_no_leak),
		cmocka_unit_test(test_decode_clears),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_chan_send_recv),
		cmocka_unit_test(test_chan_fd_passing),
		cmocka_unit_test(test_chan_bad_datagrams),
		cmocka_unit_test(test_chan_eof),
		cmocka_unit_test(test_chan_recv_wait_timeout),
		cmocka_unit_test(test_chan_queue_flush),
		cmocka_unit_test(test_chan_queue_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
