/*
 * The keyd provider: keymgmt + signature for EC (P-256, P-384) and RSA keys whose private
 * half lives in keyd.  Written from OpenSSL 3.0's provider contract (provider-keymgmt(7),
 * provider-signature(7)) and the behaviour of libssl 3.0 recorded in
 * shared/notes/key-isolation.md §3:
 *   - libssl signs with EVP_DigestSign(), so the one-shot digest_sign sees the whole TBS;
 *   - digest_sign_init also runs while libssl probes sigalgs: it must not talk to keyd;
 *   - export must refuse private selections, or libssl would sign with a public-only copy
 *     in the default provider;
 *   - the key's names must include "id-ecPublicKey"/"rsaEncryption" for ssl_cert_lookup.
 */
#include "worker/keyd_provider.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/async.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include "common/fips.h"
#include "common/log.h"
#include "keyd/sign_policy.h"
#include "worker/keyd_client.h"

#define KP_PARAM_KEY_ID "redoubt-key-id"

/*
 * Where public halves and everything else come from: the default provider, or in FIPS mode
 * the fips provider (common/fips.c loaded it; the default provider is not loaded at all).
 */
static const char *kp_pub_props = "provider=default";
static int kp_fips;
#define KP_MDNAME_MAX   32

struct kp_key {
	EVP_PKEY *pub;                    /* public half, held in the default provider */
	int       is_ec;
	int       has_id;
	uint8_t   key_id[IPC_KEY_ID_LEN];
};

struct kp_sigctx {
	struct kp_key *key;
	char     mdname[KP_MDNAME_MAX];
	int      pad_mode;                /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
};

/* ---------- keymgmt ---------- */

static OSSL_FUNC_keymgmt_new_fn kp_km_new;
static OSSL_FUNC_keymgmt_free_fn kp_km_free;
static OSSL_FUNC_keymgmt_has_fn kp_km_has;
static OSSL_FUNC_keymgmt_match_fn kp_km_match;
static OSSL_FUNC_keymgmt_import_fn kp_km_import_ec;
static OSSL_FUNC_keymgmt_import_fn kp_km_import_rsa;
static OSSL_FUNC_keymgmt_import_types_fn kp_km_import_types_ec;
static OSSL_FUNC_keymgmt_import_types_fn kp_km_import_types_rsa;
static OSSL_FUNC_keymgmt_export_fn kp_km_export;
static OSSL_FUNC_keymgmt_export_types_fn kp_km_export_types_ec;
static OSSL_FUNC_keymgmt_export_types_fn kp_km_export_types_rsa;
static OSSL_FUNC_keymgmt_get_params_fn kp_km_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn kp_km_gettable_params;
static OSSL_FUNC_keymgmt_query_operation_name_fn kp_km_opname_ec;
static OSSL_FUNC_keymgmt_query_operation_name_fn kp_km_opname_rsa;

static void *
kp_km_new(void *provctx)
{
	return OPENSSL_zalloc(sizeof(struct kp_key));
}

static void
kp_km_free(void *keydata)
{
	struct kp_key *k = keydata;

	if (k == NULL)
		return;
	EVP_PKEY_free(k->pub);
	OPENSSL_free(k);
}

static int
kp_km_has(const void *keydata, int selection)
{
	const struct kp_key *k = keydata;

	if (k == NULL || k->pub == NULL)
		return 0;
	/* We "have" the private key when keyd holds it for us: we know its id. */
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !k->has_id)
		return 0;
	return 1;
}

static int
kp_km_match(const void *a, const void *b, int selection)
{
	const struct kp_key *ka = a, *kb = b;

	if (ka->pub == NULL || kb->pub == NULL)
		return 0;
	/* Private halves cannot be compared here; the public halves decide. */
	if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0)
		return EVP_PKEY_eq(ka->pub, kb->pub) == 1;
	if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0)
		return EVP_PKEY_parameters_eq(ka->pub, kb->pub) == 1;
	return 1;
}

/* Builds the public half in the default provider from public parameters, and takes the id. */
static int
kp_km_import(struct kp_key *k, const char *alg, int selection, const OSSL_PARAM params[])
{
	const OSSL_PARAM *p;
	EVP_PKEY_CTX *ctx;
	EVP_PKEY *pub = NULL;

	/* Private material never enters a worker: refuse it rather than ignore it. */
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL)
		return 0;
	if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0)
		return 0;
	ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, kp_pub_props);
	if (ctx == NULL)
		return 0;
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pub, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) <= 0) {
		EVP_PKEY_CTX_free(ctx);
		return 0;
	}
	EVP_PKEY_CTX_free(ctx);
	p = OSSL_PARAM_locate_const(params, KP_PARAM_KEY_ID);
	if (p != NULL) {
		const void *id = NULL;
		size_t idlen = 0;
		if (!OSSL_PARAM_get_octet_string_ptr(p, &id, &idlen) || idlen != IPC_KEY_ID_LEN) {
			EVP_PKEY_free(pub);
			return 0;
		}
		memcpy(k->key_id, id, IPC_KEY_ID_LEN);
		k->has_id = 1;
	}
	EVP_PKEY_free(k->pub);
	k->pub = pub;
	return 1;
}

static int
kp_km_import_ec(void *keydata, int selection, const OSSL_PARAM params[])
{
	struct kp_key *k = keydata;

	k->is_ec = 1;
	return kp_km_import(k, "EC", selection, params);
}

static int
kp_km_import_rsa(void *keydata, int selection, const OSSL_PARAM params[])
{
	struct kp_key *k = keydata;

	k->is_ec = 0;
	return kp_km_import(k, "RSA", selection, params);
}

static const OSSL_PARAM kp_types_ec[] = {
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
	OSSL_PARAM_octet_string(KP_PARAM_KEY_ID, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM kp_types_rsa[] = {
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
	OSSL_PARAM_octet_string(KP_PARAM_KEY_ID, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM *kp_km_import_types_ec(int sel) { return kp_types_ec; }
static const OSSL_PARAM *kp_km_import_types_rsa(int sel) { return kp_types_rsa; }
static const OSSL_PARAM *kp_km_export_types_ec(int sel) { return kp_types_ec; }
static const OSSL_PARAM *kp_km_export_types_rsa(int sel) { return kp_types_rsa; }

static int
kp_km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	struct kp_key *k = keydata;
	OSSL_PARAM *params = NULL;
	int ok;

	/* The refusal that keeps libssl from signing with a public-only copy elsewhere. */
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 || k->pub == NULL)
		return 0;
	if (EVP_PKEY_todata(k->pub, EVP_PKEY_PUBLIC_KEY, &params) <= 0)
		return 0;
	ok = cb(params, cbarg);
	OSSL_PARAM_free(params);
	return ok;
}

static int
kp_km_get_params(void *keydata, OSSL_PARAM params[])
{
	struct kp_key *k = keydata;

	if (k->pub == NULL)
		return 0;
	return EVP_PKEY_get_params(k->pub, params);
}

static const OSSL_PARAM kp_gettable[] = {
	OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
	OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
	OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
	OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM *kp_km_gettable_params(void *provctx) { return kp_gettable; }

static const char *kp_km_opname_ec(int op) { return op == OSSL_OP_SIGNATURE ? "ECDSA" : NULL; }
static const char *kp_km_opname_rsa(int op) { return op == OSSL_OP_SIGNATURE ? "RSA" : NULL; }

#define KP_KEYMGMT_COMMON                                                             \
	{ OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))kp_km_new },                         \
	{ OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))kp_km_free },                       \
	{ OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))kp_km_has },                         \
	{ OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))kp_km_match },                     \
	{ OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))kp_km_export },                   \
	{ OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))kp_km_get_params },           \
	{ OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))kp_km_gettable_params }

static const OSSL_DISPATCH kp_keymgmt_ec[] = {
	KP_KEYMGMT_COMMON,
	{ OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))kp_km_import_ec },
	{ OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))kp_km_import_types_ec },
	{ OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))kp_km_export_types_ec },
	{ OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))kp_km_opname_ec },
	{ 0, NULL }
};

static const OSSL_DISPATCH kp_keymgmt_rsa[] = {
	KP_KEYMGMT_COMMON,
	{ OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))kp_km_import_rsa },
	{ OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))kp_km_import_types_rsa },
	{ OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))kp_km_export_types_rsa },
	{ OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))kp_km_opname_rsa },
	{ 0, NULL }
};

/* ---------- signature ---------- */

static OSSL_FUNC_signature_newctx_fn kp_sig_newctx;
static OSSL_FUNC_signature_freectx_fn kp_sig_freectx;
static OSSL_FUNC_signature_digest_sign_init_fn kp_sig_init;
static OSSL_FUNC_signature_digest_sign_fn kp_sig_sign;
static OSSL_FUNC_signature_set_ctx_params_fn kp_sig_set_params;
static OSSL_FUNC_signature_settable_ctx_params_fn kp_sig_settable_params;

static void *
kp_sig_newctx(void *provctx, const char *propq)
{
	return OPENSSL_zalloc(sizeof(struct kp_sigctx));
}

static void
kp_sig_freectx(void *vctx)
{
	OPENSSL_free(vctx);
}

static int
kp_sig_set_params(void *vctx, const OSSL_PARAM params[])
{
	struct kp_sigctx *ctx = vctx;
	const OSSL_PARAM *p;

	if (params == NULL)
		return 1;
	p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
	if (p != NULL) {
		char *md = ctx->mdname;
		if (!OSSL_PARAM_get_utf8_string(p, &md, sizeof(ctx->mdname)))
			return 0;
	}
	/* libssl passes pad-mode as an integer; other callers may use the name. */
	p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
	if (p != NULL) {
		if (p->data_type == OSSL_PARAM_INTEGER) {
			if (!OSSL_PARAM_get_int(p, &ctx->pad_mode))
				return 0;
		} else if (p->data_type == OSSL_PARAM_UTF8_STRING) {
			const char *s = p->data;
			if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
				ctx->pad_mode = RSA_PKCS1_PSS_PADDING;
			else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
				ctx->pad_mode = RSA_PKCS1_PADDING;
			else
				return 0;
		} else
			return 0;
		if (ctx->pad_mode != RSA_PKCS1_PSS_PADDING && ctx->pad_mode != RSA_PKCS1_PADDING)
			return 0;
	}
	/* keyd always uses salt length = digest length, which is what TLS requires. */
	p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
	if (p != NULL && p->data_type == OSSL_PARAM_UTF8_STRING &&
	    strcmp(p->data, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) != 0)
		return 0;
	return 1;
}

static const OSSL_PARAM kp_sig_settable[] = {
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
	OSSL_PARAM_int(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL),
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
	OSSL_PARAM_END
};

static const OSSL_PARAM *
kp_sig_settable_params(void *vctx, void *provctx)
{
	return kp_sig_settable;
}

/* Called during sigalg probing as well as for real: record, never contact keyd. */
static int
kp_sig_init(void *vctx, const char *mdname, void *keydata, const OSSL_PARAM params[])
{
	struct kp_sigctx *ctx = vctx;
	struct kp_key *k = keydata;

	if (k == NULL || k->pub == NULL || !k->has_id)
		return 0;
	ctx->key = k;
	ctx->pad_mode = k->is_ec ? 0 : RSA_PKCS1_PADDING;
	ctx->mdname[0] = '\0';
	if (mdname != NULL && snprintf(ctx->mdname, sizeof(ctx->mdname), "%s", mdname) >=
	    (int)sizeof(ctx->mdname))
		return 0;
	return kp_sig_set_params(ctx, params);
}

/* 0 = SHA-256, 1 = SHA-384, 2 = SHA-512, -1 other; accepts OpenSSL's name aliases. */
static int
kp_md_index(const char *mdname)
{
	/* The names libssl passes, answered without a fetch (a locked table walk) per handshake. */
	static const char *const known[][3] = {
		{ "SHA256", "SHA2-256", "SHA-256" },
		{ "SHA384", "SHA2-384", "SHA-384" },
		{ "SHA512", "SHA2-512", "SHA-512" },
	};
	EVP_MD *md;
	int idx = -1;

	if (mdname[0] == '\0')
		return -1;
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			if (strcasecmp(mdname, known[i][j]) == 0)
				return i;
	md = EVP_MD_fetch(NULL, mdname, NULL);
	if (md == NULL)
		return -1;
	if (EVP_MD_is_a(md, "SHA2-256"))
		idx = 0;
	else if (EVP_MD_is_a(md, "SHA2-384"))
		idx = 1;
	else if (EVP_MD_is_a(md, "SHA2-512"))
		idx = 2;
	EVP_MD_free(md);
	return idx;
}

/* The TLS SignatureScheme this key, digest and padding amount to, or 0. */
static uint16_t
kp_sigalg(const struct kp_sigctx *ctx)
{
	static const uint16_t pss[] = {
		TLS_SIGALG_RSA_PSS_SHA256, TLS_SIGALG_RSA_PSS_SHA384, TLS_SIGALG_RSA_PSS_SHA512 };
	static const uint16_t pkcs1[] = {
		TLS_SIGALG_RSA_PKCS1_SHA256, TLS_SIGALG_RSA_PKCS1_SHA384, TLS_SIGALG_RSA_PKCS1_SHA512 };
	int md = kp_md_index(ctx->mdname);
	char group[32];

	if (md < 0)
		return 0;
	if (!ctx->key->is_ec)
		return ctx->pad_mode == RSA_PKCS1_PSS_PADDING ? pss[md] : pkcs1[md];
	if (!EVP_PKEY_get_utf8_string_param(ctx->key->pub, OSSL_PKEY_PARAM_GROUP_NAME,
	    group, sizeof(group), NULL))
		return 0;
	if (strcmp(group, "prime256v1") == 0 && md == 0)
		return TLS_SIGALG_ECDSA_P256_SHA256;
	if (strcmp(group, "secp384r1") == 0 && md == 1)
		return TLS_SIGALG_ECDSA_P384_SHA384;
	return 0;
}

/*
 * Waits for keyd's answer.  Inside libssl's async job we pause; the event loop wakes us
 * through the wait-ctx callback.  A resume with the request still pending is normal
 * (spurious resume) and we pause again; if the loop made no progress at all between two
 * resumes, pausing is not working and we fall back to a blocking wait instead of spinning.
 */
static void
kp_wait(struct keyd_sign *s)
{
	ASYNC_JOB *job = ASYNC_get_current_job();
	ASYNC_WAIT_CTX *wctx;
	ASYNC_callback_fn cb = NULL;
	void *cbarg = NULL;

	if (job == NULL || (wctx = ASYNC_get_wait_ctx(job)) == NULL ||
	    !ASYNC_WAIT_CTX_get_callback(wctx, &cb, &cbarg) || cb == NULL) {
		keyd_sign_wait(s);
		return;
	}
	s->wake = cb;
	s->wake_arg = cbarg;
	while (s->state == KSIGN_PENDING) {
		uint64_t before = keyd_client_iterations();
		if (!ASYNC_pause_job()) {
			keyd_sign_wait(s);
			return;
		}
		if (s->state == KSIGN_PENDING && keyd_client_iterations() == before) {
			keyd_sign_wait(s);
			return;
		}
	}
}

static int
kp_sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
    const unsigned char *tbs, size_t tbslen)
{
	struct kp_sigctx *ctx = vctx;
	struct keyd_sign *s;
	size_t maxsig = (size_t)EVP_PKEY_get_size(ctx->key->pub);
	uint16_t sigalg;
	int ok = 0;

	/* Size query: answered locally. */
	if (sig == NULL) {
		*siglen = maxsig;
		return 1;
	}
	sigalg = kp_sigalg(ctx);
	if (sigalg == 0) {
		ERR_raise_data(ERR_LIB_PROV, ERR_R_UNSUPPORTED, "keyd provider: no TLS sigalg "
		    "for digest '%s' with this key", ctx->mdname);
		return 0;
	}
	if (tbslen == 0 || tbslen > IPC_TBS_MAX) {
		ERR_raise_data(ERR_LIB_PROV, ERR_R_PASSED_INVALID_ARGUMENT,
		    "keyd provider: %zu-byte input is not a TLS handshake input", tbslen);
		return 0;
	}
	/* On the heap: this runs on a 32 KiB fibre stack. */
	s = OPENSSL_zalloc(sizeof(*s));
	if (s == NULL)
		return 0;
	keyd_sign_start(s, ctx->key->key_id, sigalg, tbs, tbslen);
	kp_wait(s);
	if (s->state == KSIGN_DONE && s->sig_len <= sigsize && s->sig_len <= maxsig) {
		memcpy(sig, s->sig, s->sig_len);
		*siglen = s->sig_len;
		ok = 1;
	} else {
		ERR_raise_data(ERR_LIB_PROV, ERR_R_OPERATION_FAIL, "no signature from keyd: %s",
		    s->state == KSIGN_DONE ? "signature too large" : ipc_err_name(s->err));
	}
	keyd_sign_finish(s);
	OPENSSL_clear_free(s, sizeof(*s));
	return ok;
}

static const OSSL_DISPATCH kp_signature[] = {
	{ OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))kp_sig_newctx },
	{ OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))kp_sig_freectx },
	{ OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))kp_sig_init },
	{ OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))kp_sig_sign },
	{ OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))kp_sig_set_params },
	{ OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))kp_sig_settable_params },
	{ 0, NULL }
};

/* ---------- provider ---------- */

#define KP_PROPS "provider=" KEYD_PROVIDER_NAME
/*
 * FIPS mode: the handles carry fips=yes, or no fetch under the fips=yes default property would
 * find them.  The claim is about where the signature is made: keyd, itself in FIPS mode (or a
 * TPM); this provider does no cryptography.  docs/fips.md says so.
 */
#define KP_PROPS_FIPS KP_PROPS ",fips=yes"

static const OSSL_ALGORITHM kp_keymgmt_algs_fips[] = {
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1", KP_PROPS_FIPS, kp_keymgmt_ec, "keyd EC handle" },
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", KP_PROPS_FIPS, kp_keymgmt_rsa,
	    "keyd RSA handle" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM kp_signature_algs_fips[] = {
	{ "ECDSA", KP_PROPS_FIPS, kp_signature, "ECDSA through keyd" },
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", KP_PROPS_FIPS, kp_signature,
	    "RSA through keyd" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM kp_keymgmt_algs[] = {
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1", KP_PROPS, kp_keymgmt_ec, "keyd EC handle" },
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", KP_PROPS, kp_keymgmt_rsa, "keyd RSA handle" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM kp_signature_algs[] = {
	{ "ECDSA", KP_PROPS, kp_signature, "ECDSA through keyd" },
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", KP_PROPS, kp_signature, "RSA through keyd" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM *
kp_query(void *provctx, int operation_id, int *no_cache)
{
	*no_cache = 0;
	switch (operation_id) {
	case OSSL_OP_KEYMGMT:
		return kp_fips ? kp_keymgmt_algs_fips : kp_keymgmt_algs;
	case OSSL_OP_SIGNATURE:
		return kp_fips ? kp_signature_algs_fips : kp_signature_algs;
	default:
		return NULL;
	}
}

static const OSSL_DISPATCH kp_provider[] = {
	{ OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))kp_query },
	{ 0, NULL }
};

static int
kp_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in, const OSSL_DISPATCH **out,
    void **provctx)
{
	*out = kp_provider;
	*provctx = (void *)handle;
	return 1;
}

int
keyd_provider_load(void)
{
	/* FIPS mode: fips=yes for everything, the fips provider preferred over our handles'
	 * keymgmt (certificate decoding), and no default provider. */
	if (fips_active()) {
		kp_fips = 1;
		kp_pub_props = "provider=fips";
		if (!OSSL_PROVIDER_add_builtin(NULL, KEYD_PROVIDER_NAME, kp_init) ||
		    OSSL_PROVIDER_load(NULL, KEYD_PROVIDER_NAME) == NULL ||
		    !EVP_set_default_properties(NULL, "fips=yes,?provider=fips")) {
			log_ssl_errors("keyd provider (FIPS mode)");
			return -1;
		}
		return 0;
	}
	if (!OSSL_PROVIDER_add_builtin(NULL, KEYD_PROVIDER_NAME, kp_init) ||
	    OSSL_PROVIDER_load(NULL, "default") == NULL ||
	    OSSL_PROVIDER_load(NULL, KEYD_PROVIDER_NAME) == NULL ||
	    !EVP_set_default_properties(NULL, "?provider=default")) {
		log_ssl_errors("keyd provider");
		return -1;
	}
	return 0;
}

EVP_PKEY *
keyd_provider_key(X509 *leaf, const uint8_t key_id[IPC_KEY_ID_LEN])
{
	EVP_PKEY *pub = X509_get0_pubkey(leaf), *handle = NULL;
	OSSL_PARAM *pubp = NULL, *all = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	size_t n = 0;
	const char *alg;

	if (pub == NULL)
		return NULL;
	if (EVP_PKEY_is_a(pub, "EC"))
		alg = "EC";
	else if (EVP_PKEY_is_a(pub, "RSA"))
		alg = "RSA";
	else
		return NULL;
	if (EVP_PKEY_todata(pub, EVP_PKEY_PUBLIC_KEY, &pubp) <= 0)
		goto done;
	while (pubp[n].key != NULL)
		n++;
	all = OPENSSL_zalloc((n + 2) * sizeof(*all));
	if (all == NULL)
		goto done;
	memcpy(all, pubp, n * sizeof(*all));
	all[n] = OSSL_PARAM_construct_octet_string(KP_PARAM_KEY_ID, (void *)key_id,
	    IPC_KEY_ID_LEN);
	all[n + 1] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, KP_PROPS);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &handle, EVP_PKEY_KEYPAIR, all) <= 0) {
		log_ssl_errors("keyd provider: key handle");
		handle = NULL;
	}
done:
	EVP_PKEY_CTX_free(ctx);
	OPENSSL_free(all);
	OSSL_PARAM_free(pubp);
	return handle;
}
