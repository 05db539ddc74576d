/*
 * Fuzz target for the IPC codec, the parser keyd runs on every frame a (possibly compromised)
 * worker sends.  Properties checked on every input:
 *   - ipc_decode() returns OK or one of the defined codec errors, and touches nothing outside
 *     the input and the message (the sanitizers watch that);
 *   - a frame that decodes re-encodes to exactly the same bytes (no field is lost, widened,
 *     defaulted or leaked), needs exactly its own length of output, and decodes again to the
 *     same message.
 * Any violation aborts, which libFuzzer and the sanitizers report as a crash.
 *
 * With libFuzzer:  clang -fsanitize=fuzzer,address,undefined ... (LLVMFuzzerTestOneInput only)
 * Without it:      cc -DREDOUBT_FUZZ_MAIN -fsanitize=address,undefined ... gives a main() that
 *   replays files and runs a bounded, deterministic mutation loop (see usage()).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[IPC_FRAME_MAX];
	struct ipc_msg m, again;
	int rc, n;

	rc = ipc_decode(data, size, &m);
	if (rc > IPC_E_OK || rc < IPC_E_SPACE || rc == IPC_E_SPACE)
		abort();    /* not a defined decode error */
	if (rc != IPC_E_OK)
		return 0;
	if (m.hdr.type == IPC_AUDIT && m.u.audit.json[m.u.audit.len] != '\0')
		abort();
	n = ipc_encode(&m, out, sizeof(out));
	if (n < 0 || (size_t)n != size || memcmp(out, data, size) != 0)
		abort();    /* the round trip is not exact */
	if (ipc_encode(&m, out, size - 1) != IPC_E_SPACE)
		abort();
	if (ipc_decode(out, (size_t)n, &again) != IPC_E_OK || memcmp(&again, &m, sizeof(m)) != 0)
		abort();
	return 0;
}

#ifdef REDOUBT_FUZZ_MAIN

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/limits.h"

#define FUZZ_INPUT_MAX  (IPC_FRAME_MAX + 256) /* bytes; longer inputs only test the header check */
#define FUZZ_POOL_MAX   4096                  /* inputs kept for mutation (seeds, valid finds) */
#define FUZZ_FILE_MAX   (1u << 20)            /* bytes read from one corpus file */

struct fuzz_input {
	size_t  len;
	uint8_t buf[FUZZ_INPUT_MAX];
};

static struct fuzz_input *fuzz_pool;
static size_t fuzz_pool_len;
static uint64_t fuzz_rng_state;

/* The generator wraps on purpose; keep clang's -fsanitize=integer quiet about it. */
#if defined(__clang__)
#define FUZZ_WRAPS __attribute__((no_sanitize("unsigned-integer-overflow", "unsigned-shift-base")))
#else
#define FUZZ_WRAPS
#endif

/* xorshift64*: deterministic for a given seed, so a failing run can be repeated exactly. */
FUZZ_WRAPS static uint64_t
fuzz_rand(void)
{
	fuzz_rng_state ^= fuzz_rng_state >> 12;
	fuzz_rng_state ^= fuzz_rng_state << 25;
	fuzz_rng_state ^= fuzz_rng_state >> 27;
	return fuzz_rng_state * 0x2545F4914F6CDD1Dull;
}

static size_t
fuzz_below(size_t n)
{
	return n == 0 ? 0 : (size_t)(fuzz_rand() % n);
}

static void
fuzz_pool_add(const uint8_t *buf, size_t len)
{
	if (fuzz_pool_len >= FUZZ_POOL_MAX)
		return;
	if (len > FUZZ_INPUT_MAX)
		len = FUZZ_INPUT_MAX;
	fuzz_pool[fuzz_pool_len].len = len;
	memcpy(fuzz_pool[fuzz_pool_len].buf, buf, len);
	fuzz_pool_len++;
}

static void
fuzz_fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 13 + 5);
}

/* Built-in seeds: one valid message per type, and variants (v) at the boundary lengths. */
static const struct {
	uint16_t type;
	uint8_t  v;
} fuzz_seeds[] = {
	{ IPC_HELLO, 0 }, { IPC_HELLO_OK, 0 }, { IPC_SIGN, 0 }, { IPC_SIGN, 1 }, { IPC_SIGN, 2 },
	{ IPC_SIGN_OK, 0 }, { IPC_SIGN_OK, 1 }, { IPC_ERR, 0 }, { IPC_PEM_CHUNK, 0 },
	{ IPC_PEM_CHUNK, 1 }, { IPC_GENERATION, 0 }, { IPC_TICKET_KEYS, 0 },
	{ IPC_TICKET_KEYS, 1 }, { IPC_AUDIT, 0 }, { IPC_AUDIT, 1 }, { IPC_PING, 0 }, { IPC_PONG, 0 },
	{ IPC_REVOKE, 0 }, { IPC_STATS_REQ, 0 }, { IPC_STATS, 0 }, { IPC_STATS, 1 },
	{ IPC_ADMISSION, 0 }, { IPC_CHANNEL, 0 }, { IPC_CHILD_EVENT, 0 }, { IPC_GENERATION, 1 },
	{ IPC_PEM_CHUNK, 2 }, { IPC_TRUST, 0 },
};

/* Fills *m with built-in seed i; 0 past the end. */
static int
fuzz_seed(int i, struct ipc_msg *m)
{
	static const uint16_t tbs[] = { 1, 130, IPC_TBS_MAX };
	static const uint16_t sig[] = { 72, IPC_SIG_MAX };
	unsigned v;

	if (i < 0 || (size_t)i >= sizeof(fuzz_seeds) / sizeof(fuzz_seeds[0]))
		return 0;
	v = fuzz_seeds[i].v;
	ipc_msg_init(m, fuzz_seeds[i].type, (uint64_t)i * 0x0101010101ull);
	switch (m->hdr.type) {
	case IPC_HELLO:
		m->u.hello.pid = 4242;
		break;
	case IPC_HELLO_OK:
		m->u.hello_ok.identities = 2;
		break;
	case IPC_SIGN:
		fuzz_fill(m->u.sign.key_id, IPC_KEY_ID_LEN, 1);
		m->u.sign.sigalg = 0x0804;
		m->u.sign.tbs_len = tbs[v];
		fuzz_fill(m->u.sign.tbs, m->u.sign.tbs_len, 2);
		break;
	case IPC_SIGN_OK:
		m->u.sign_ok.sig_len = sig[v];
		fuzz_fill(m->u.sign_ok.sig, m->u.sign_ok.sig_len, 3);
		break;
	case IPC_ERR:
		m->u.err.code = IPC_ERR_POLICY;
		break;
	case IPC_PEM_CHUNK:
		m->u.pem_chunk.identity = 1;
		m->u.pem_chunk.kind = v == 0 ? IPC_PEM_CHAIN : IPC_PEM_CRL;
		/* v 2: a listener's own CRL */
		m->u.pem_chunk.scope = v == 2 ? IPC_SCOPE_LISTENER : IPC_SCOPE_IDENTITY;
		m->u.pem_chunk.generation = 3;
		m->u.pem_chunk.total = 4000;
		m->u.pem_chunk.offset = v == 0 ? 0 : 4000 - IPC_CHUNK_MAX;
		m->u.pem_chunk.len = v == 0 ? 64 : IPC_CHUNK_MAX;
		fuzz_fill(m->u.pem_chunk.data, m->u.pem_chunk.len, 4);
		break;
	case IPC_GENERATION:
		m->u.generation.identity = (uint16_t)v;
		m->u.generation.key_type = v == 0 ? IPC_KEY_EC_P384 : IPC_KEY_RSA;
		m->u.generation.key_bits = v == 0 ? 384 : 2048;
		m->u.generation.generation = 2;
		m->u.generation.chain_len = 2345;
		m->u.generation.ca_len = 1000;
		fuzz_fill(m->u.generation.key_id, IPC_KEY_ID_LEN, 5);
		fuzz_fill(m->u.generation.digest, sizeof(m->u.generation.digest), 6);
		if (v == 0)
			memcpy(m->u.generation.name, "node", 5);
		else    /* the longest name: 63 characters and its terminator */
			memset(m->u.generation.name, 'n', IPC_NAME_MAX - 1);
		break;
	case IPC_TRUST:
		m->u.trust.scope = IPC_SCOPE_CONNECTOR;
		m->u.trust.index = 2;
		m->u.trust.generation = 2;
		m->u.trust.ca_len = 1000;
		m->u.trust.crl_len = 3000;
		fuzz_fill(m->u.trust.digest, sizeof(m->u.trust.digest), 10);
		break;
	case IPC_TICKET_KEYS:
		m->u.ticket_keys.count = v + 1;
		m->u.ticket_keys.lifetime = 3600;
		for (unsigned k = 0; k <= v; k++) {
			m->u.ticket_keys.slot[k].created = 1700000000u + k;
			fuzz_fill(m->u.ticket_keys.slot[k].name, IPC_TICKET_NAME_LEN, 7 + k);
			fuzz_fill(m->u.ticket_keys.slot[k].aes_key, IPC_TICKET_AES_LEN, 8 + k);
			fuzz_fill(m->u.ticket_keys.slot[k].hmac_key, IPC_TICKET_HMAC_LEN, 9 + k);
		}
		break;
	case IPC_AUDIT:
		m->u.audit.event = 1;
		m->u.audit.len = v == 0 ? 2 : IPC_AUDIT_MAX;
		memset(m->u.audit.json, ' ', m->u.audit.len);
		m->u.audit.json[0] = '{';
		m->u.audit.json[m->u.audit.len - 1] = '}';
		break;
	case IPC_REVOKE:
		m->u.revoke.identity = 1;
		m->u.revoke.generation = 1;
		break;
	case IPC_STATS:
		m->u.stats.n = v == 0 ? 1 : IPC_STATS_MAX;
		for (uint32_t e = 0; e < m->u.stats.n; e++) {
			m->u.stats.e[e].identity = (uint16_t)(e % CONFIG_IDENTITIES_MAX);
			m->u.stats.e[e].generation = e + 1;
			m->u.stats.e[e].conns = e;
			m->u.stats.total_conns += e;
		}
		break;
	case IPC_ADMISSION:
		m->u.admission.accept = 1;
		break;
	case IPC_CHANNEL:
		m->u.channel.kind = IPC_CHANNEL_KEYD;
		m->u.channel.worker = 3;
		break;
	case IPC_CHILD_EVENT:
		m->u.child_event.kind = IPC_CHILD_RESTARTED;
		m->u.child_event.child = 1;
		m->u.child_event.pid = 1234;
		m->u.child_event.syscall = 59;
		break;
	default:    /* PING, PONG, STATS_REQ: empty */
		break;
	}
	return 1;
}

static int
fuzz_write_seeds(const char *dir)
{
	uint8_t buf[IPC_FRAME_MAX];
	struct ipc_msg m;
	char path[4096];
	int n;

	for (int i = 0; fuzz_seed(i, &m); i++) {
		FILE *f;

		if ((n = ipc_encode(&m, buf, sizeof(buf))) < 0) {
			fprintf(stderr, "fuzz_ipc: seed %d (%s) does not encode: %s\n", i,
			    ipc_type_name(m.hdr.type), ipc_codec_strerror(n));
			return 1;
		}
		snprintf(path, sizeof(path), "%s/%02d-%s.bin", dir, i, ipc_type_name(m.hdr.type));
		if ((f = fopen(path, "wb")) == NULL || fwrite(buf, 1, (size_t)n, f) != (size_t)n ||
		    fclose(f) != 0) {
			fprintf(stderr, "fuzz_ipc: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	return 0;
}

/* Runs one file through the target and keeps it for mutation. */
static int
fuzz_replay_file(const char *path)
{
	static uint8_t buf[FUZZ_FILE_MAX];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		fprintf(stderr, "fuzz_ipc: %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	fuzz_pool_add(buf, n);
	return 1;
}

/* A file, or every regular file in a directory (not recursive).  Returns files replayed. */
static int
fuzz_replay(const char *path)
{
	struct stat st;
	struct dirent *de;
	char sub[4096];
	DIR *d;
	int count = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "fuzz_ipc: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return fuzz_replay_file(path);
	if ((d = opendir(path)) == NULL) {
		fprintf(stderr, "fuzz_ipc: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if (stat(sub, &st) == 0 && S_ISREG(st.st_mode) && fuzz_replay_file(sub) > 0)
			count++;
	}
	closedir(d);
	return count;
}

static void
fuzz_put_le(uint8_t *p, uint64_t v, size_t width)
{
	for (size_t i = 0; i < width; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* Values that sit on the edges of the codec's ranges. */
static uint32_t
fuzz_interesting(size_t len)
{
	static const uint32_t v[] = {
		0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
		IPC_TBS_MAX, IPC_TBS_MAX + 1, IPC_SIG_MAX, IPC_SIG_MAX + 1, IPC_CHUNK_MAX,
		IPC_CHUNK_MAX + 1, IPC_AUDIT_MAX, IPC_AUDIT_MAX + 1, IPC_BODY_MAX, IPC_BODY_MAX + 1,
		IPC_STATS_MAX, IPC_STATS_MAX + 1, WORKERS_MAX, WORKERS_MAX + 1, PEM_SIZE_MAX,
		PEM_SIZE_MAX + 1, 0x7fffffff, 0x80000000u, 0xffffffffu,
	};
	size_t k = fuzz_below(sizeof(v) / sizeof(v[0]) + 3);

	if (k == sizeof(v) / sizeof(v[0]))
		return (uint32_t)len;
	if (k == sizeof(v) / sizeof(v[0]) + 1) {    /* the body length, off by one */
		uint32_t body = (uint32_t)(len - IPC_HDR_LEN);

		return fuzz_below(2) ? body + 1 : body - (body > 0);
	}
	if (k == sizeof(v) / sizeof(v[0]) + 2)
		return (uint32_t)fuzz_rand();
	return v[k];
}

static void
fuzz_mutate(struct fuzz_input *in)
{
	size_t pos, w;

	switch (fuzz_below(9)) {
	case 0:     /* bit flip */
		if (in->len > 0) {
			pos = fuzz_below(in->len);
			in->buf[pos] ^= (uint8_t)(1u << fuzz_below(8));
		}
		break;
	case 1:     /* random byte */
		if (in->len > 0)
			in->buf[fuzz_below(in->len)] = (uint8_t)fuzz_rand();
		break;
	case 2:     /* truncation */
		in->len = fuzz_below(in->len + 1);
		break;
	case 3:     /* extension */
		for (w = 1 + fuzz_below(32); w > 0 && in->len < FUZZ_INPUT_MAX; w--)
			in->buf[in->len++] = (uint8_t)fuzz_rand();
		break;
	case 4:     /* header body_len: exact, off by one, or anything */
		if (in->len >= IPC_HDR_LEN)
			fuzz_put_le(in->buf + 4, fuzz_interesting(in->len), 4);
		break;
	case 5:     /* header type or version */
		if (in->len >= IPC_HDR_LEN)
			fuzz_put_le(in->buf + (fuzz_below(2) ? 2 : 0), fuzz_below(40), 2);
		break;
	case 6:     /* a length/range field anywhere in the body: 1, 2 or 4 bytes */
	case 7:
		w = (size_t)1 << fuzz_below(3);
		if (in->len >= IPC_HDR_LEN + w) {
			pos = IPC_HDR_LEN + fuzz_below(in->len - IPC_HDR_LEN - w + 1);
			fuzz_put_le(in->buf + pos, fuzz_interesting(in->len), w);
		}
		break;
	default:    /* splice: the tail of another pool entry */
		if (fuzz_pool_len > 0) {
			const struct fuzz_input *o = &fuzz_pool[fuzz_below(fuzz_pool_len)];
			size_t at = fuzz_below(in->len + 1), from = fuzz_below(o->len + 1);
			size_t k = o->len - from;

			if (at + k > FUZZ_INPUT_MAX)
				k = FUZZ_INPUT_MAX - at;
			memcpy(in->buf + at, o->buf + from, k);
			in->len = at + k;
		}
		break;
	}
	/* Half the time, make the header agree with the length so the body gets parsed. */
	if (in->len >= IPC_HDR_LEN && fuzz_below(2) == 0)
		fuzz_put_le(in->buf + 4, in->len - IPC_HDR_LEN, 4);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: fuzz_ipc [-n iterations] [-s seed] [file|dir]...\n"
	    "       fuzz_ipc -w dir     write the built-in seed frames to dir\n"
	    "Replays every file given (directories: their regular files), then mutates them and\n"
	    "the built-in seeds for -n iterations (default 200000; 0 = replay only).\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	unsigned long long iters = 200000, seed = 0x5eed, ok = 0;
	static struct fuzz_input cur;
	struct ipc_msg m;
	int replayed = 0, r;

	if ((fuzz_pool = calloc(FUZZ_POOL_MAX, sizeof(*fuzz_pool))) == NULL)
		return 1;
	for (r = 1; r < argc; r++) {
		if (strcmp(argv[r], "-n") == 0 && r + 1 < argc)
			iters = strtoull(argv[++r], NULL, 0);
		else if (strcmp(argv[r], "-s") == 0 && r + 1 < argc)
			seed = strtoull(argv[++r], NULL, 0);
		else if (strcmp(argv[r], "-w") == 0 && r + 1 < argc)
			return fuzz_write_seeds(argv[++r]);
		else if (argv[r][0] == '-')
			usage();
		else {
			int k = fuzz_replay(argv[r]);

			if (k < 0)
				return 1;
			replayed += k;
		}
	}
	for (int i = 0; fuzz_seed(i, &m); i++) {
		uint8_t buf[IPC_FRAME_MAX];
		int n = ipc_encode(&m, buf, sizeof(buf));

		if (n < 0)
			abort();
		LLVMFuzzerTestOneInput(buf, (size_t)n);
		fuzz_pool_add(buf, (size_t)n);
	}

	fuzz_rng_state = seed ? seed : 1;
	for (unsigned long long i = 0; i < iters; i++) {
		cur = fuzz_pool[fuzz_below(fuzz_pool_len)];
		for (size_t k = 1 + fuzz_below(4); k > 0; k--)
			fuzz_mutate(&cur);
		LLVMFuzzerTestOneInput(cur.buf, cur.len);
		/* Keep new valid frames: they are the ones that reach the field checks. */
		if (ipc_decode(cur.buf, cur.len, &m) == IPC_E_OK) {
			ok++;
			fuzz_pool_add(cur.buf, cur.len);
		}
	}
	printf("fuzz_ipc: %d file(s) replayed, %llu mutations (seed %#llx), %llu decoded, "
	    "pool %zu, no failures\n", replayed, iters, seed, ok, fuzz_pool_len);
	free(fuzz_pool);
	return 0;
}

#endif /* REDOUBT_FUZZ_MAIN */
