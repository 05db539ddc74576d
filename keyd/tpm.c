/*
 * TPM 2.0 through tss2-esys: the key blob (read, write, public key) and the ESYS calls keyd and
 * `redoubt tpm` need (open with a primary, create, load, sign).  No threads here: the caller
 * owns the ESYS context (keyd: its TPM thread only; the CLI: main).
 */
#include "common/errbuf.h"
#include "keyd/tpm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>

#include "keyd/tpm_internal.h"

#define TPM_RSA_EXPONENT_DEFAULT 65537u
/* TPM2_TRANSIENT_FIRST, without the header's shift of a signed int into its sign bit. */
#define TPM_TRANSIENT_FIRST      ((TPM2_HC)0x80000000u)

/* ---- the blob ------------------------------------------------------------------------ */

struct tpm_key *
tpm_key_ref(struct tpm_key *k)
{
	if (k != NULL)
		atomic_fetch_add(&k->refs, 1);
	return k;
}

void
tpm_key_unref(struct tpm_key *k)
{
	if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1)
		return;
	EVP_PKEY_free(k->pub_pkey);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

static int
tpm_ecc_group(TPMI_ECC_CURVE curve, const char **name, size_t *flen)
{
	switch (curve) {
	case TPM2_ECC_NIST_P256:
		*name = "P-256";
		*flen = 32;
		return 0;
	case TPM2_ECC_NIST_P384:
		*name = "P-384";
		*flen = 48;
		return 0;
	default:
		return -1;
	}
}

EVP_PKEY *
tpm_public_to_pkey(const TPM2B_PUBLIC *pub)
{
	const TPMT_PUBLIC *p = &pub->publicArea;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	BIGNUM *n = NULL, *e = NULL;
	uint8_t point[1 + 2 * 48];
	const char *group;
	size_t flen;

	if ((bld = OSSL_PARAM_BLD_new()) == NULL)
		return NULL;
	if (p->type == TPM2_ALG_ECC) {
		const TPMS_ECC_POINT *q = &p->unique.ecc;

		if (tpm_ecc_group(p->parameters.eccDetail.curveID, &group, &flen) == -1 ||
		    q->x.size == 0 || q->x.size > flen || q->y.size == 0 || q->y.size > flen)
			goto out;
		/* Uncompressed point, each coordinate left-padded to the field size. */
		memset(point, 0, sizeof(point));
		point[0] = 0x04;
		memcpy(point + 1 + flen - q->x.size, q->x.buffer, q->x.size);
		memcpy(point + 1 + 2 * flen - q->y.size, q->y.buffer, q->y.size);
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
		    1 + 2 * flen))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	} else if (p->type == TPM2_ALG_RSA) {
		uint32_t exp = p->parameters.rsaDetail.exponent;

		if (p->unique.rsa.size == 0 ||
		    (n = BN_bin2bn(p->unique.rsa.buffer, p->unique.rsa.size, NULL)) == NULL ||
		    (e = BN_new()) == NULL ||
		    !BN_set_word(e, exp != 0 ? exp : TPM_RSA_EXPONENT_DEFAULT) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else
		goto out;
	if (ctx == NULL || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
out:
	ERR_clear_error();
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	BN_free(n);
	BN_free(e);
	return pkey;
}

int
tpm_key_read(const char *path, struct tpm_key **out, EVP_PKEY **pub, char *err,
    size_t errlen)
{
	struct tpm_key *k = NULL;
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;
	size_t off = 0;
	struct stat st;
	BIO *bio = NULL;
	int rc = -1;

	*out = NULL;
	*pub = NULL;
	if ((bio = BIO_new_file(path, "r")) == NULL) {
		errbuf_set(err, errlen, "TPM key blob %s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (stat(path, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size > TPM_BLOB_FILE_MAX) {
		errbuf_set(err, errlen, "TPM key blob %s: not a regular file of at most %u bytes", path,
		    TPM_BLOB_FILE_MAX);
		goto out;
	}
	if (!PEM_read_bio(bio, &name, &header, &data, &len) ||
	    strcmp(name, TPM_BLOB_PEM_NAME) != 0) {
		errbuf_set(err, errlen, "TPM key blob %s: no '-----BEGIN %s-----' block (make one with "
		    "'redoubt tpm create-key')", path, TPM_BLOB_PEM_NAME);
		goto out;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		errbuf_set(err, errlen, "TPM key blob %s: out of memory", path);
		goto out;
	}
	atomic_init(&k->refs, 1);
	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(data, (size_t)len, &off, &k->pub) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(data, (size_t)len, &off, &k->priv) != TSS2_RC_SUCCESS ||
	    off != (size_t)len) {
		errbuf_set(err, errlen, "TPM key blob %s: corrupt (public and private parts do not "
		    "parse)", path);
		goto out;
	}
	if (EVP_Digest(data, (size_t)len, k->id, NULL, EVP_sha256(), NULL) != 1 ||
	    (k->pub_pkey = tpm_public_to_pkey(&k->pub)) == NULL) {
		errbuf_set(err, errlen, "TPM key blob %s: not an ECC P-256/P-384 or RSA key", path);
		goto out;
	}
	if (!(k->pub.publicArea.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) ||
	    (k->pub.publicArea.objectAttributes & TPMA_OBJECT_RESTRICTED)) {
		errbuf_set(err, errlen, "TPM key blob %s: not an unrestricted signing key", path);
		goto out;
	}
	if (!EVP_PKEY_up_ref(k->pub_pkey))
		goto out;
	*pub = k->pub_pkey;
	*out = k;
	k = NULL;
	rc = 0;
out:
	ERR_clear_error();
	tpm_key_unref(k);
	BIO_free(bio);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	return rc;
}

int
tpm_blob_write(const char *path, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
    char *err, size_t errlen)
{
	uint8_t buf[sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE)];
	size_t off = 0;
	FILE *f;
	int fd, ok;

	if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_PRIVATE_Marshal(priv, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS) {
		errbuf_set(err, errlen, "%s: cannot marshal the key blob", path);
		return -1;
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1 ||
	    (f = fdopen(fd, "w")) == NULL) {
		errbuf_set(err, errlen, "%s: cannot create: %s", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	ok = PEM_write(f, TPM_BLOB_PEM_NAME, "", buf, (long)off) > 0;
	ok = fclose(f) == 0 && ok;
	if (!ok)
		errbuf_set(err, errlen, "%s: cannot write the key blob", path);
	return ok ? 0 : -1;
}

/* ---- ESYS ---------------------------------------------------------------------------- */

static void
tpm_rc_err(char *err, size_t errlen, const char *what, TSS2_RC rc)
{
	errbuf_set(err, errlen, "TPM %s failed: TPM/TSS code 0x%x (tpm2_rc_decode 0x%x explains it)",
	    what, rc, rc);
}

/* The storage primary: ECC P-256, AES-128-CFB, the template tpm2_createprimary -G ecc256 uses. */
static const TPM2B_PUBLIC tpm_primary_template = {
	.publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
		    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
		    TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH,
		.parameters.eccDetail = {
			.symmetric = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
			    .mode.aes = TPM2_ALG_CFB },
			.scheme = { .scheme = TPM2_ALG_NULL },
			.curveID = TPM2_ECC_NIST_P256,
			.kdf = { .scheme = TPM2_ALG_NULL },
		},
	},
};

/*
 * Transient objects left behind by a client that died (a TPM simulator has no resource
 * manager, and only three object slots).  With the kernel resource manager this finds only
 * our own (none yet).
 */
static void
tpm_flush_stale(struct tpm_esys *t)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more = TPM2_NO;
	ESYS_TR tr;

	if (Esys_GetCapability(t->ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
	    TPM_TRANSIENT_FIRST, TPM2_MAX_CAP_HANDLES, &more, &cap) != TSS2_RC_SUCCESS)
		return;
	for (UINT32 i = 0; i < cap->data.handles.count; i++)
		if (Esys_TR_FromTPMPublic(t->ctx, cap->data.handles.handle[i], ESYS_TR_NONE,
		    ESYS_TR_NONE, ESYS_TR_NONE, &tr) == TSS2_RC_SUCCESS)
			(void)Esys_FlushContext(t->ctx, tr);
	Esys_Free(cap);
}

/* (Re-)creates the storage primary: at open, and after another client flushed ours. */
int
tpm_esys_primary(struct tpm_esys *t, char *err, size_t errlen)
{
	TPM2B_SENSITIVE_CREATE sens;
	TPM2B_DATA outside;
	TPML_PCR_SELECTION pcr;
	TSS2_RC rc;

	if (t->primary != ESYS_TR_NONE && Esys_FlushContext(t->ctx, t->primary) != TSS2_RC_SUCCESS)
		(void)Esys_TR_Close(t->ctx, &t->primary);
	t->primary = ESYS_TR_NONE;
	memset(&sens, 0, sizeof(sens));
	memset(&outside, 0, sizeof(outside));
	memset(&pcr, 0, sizeof(pcr));
	rc = Esys_CreatePrimary(t->ctx, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
	    ESYS_TR_NONE, &sens, &tpm_primary_template, &outside, &pcr, &t->primary, NULL, NULL,
	    NULL, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		t->primary = ESYS_TR_NONE;
		tpm_rc_err(err, errlen, "CreatePrimary (owner hierarchy)", rc);
		return -1;
	}
	return 0;
}

int
tpm_esys_open(const char *tcti, struct tpm_esys *t, char *err, size_t errlen)
{
	TSS2_RC rc;

	memset(t, 0, sizeof(*t));
	t->primary = ESYS_TR_NONE;
	if (tcti == NULL || tcti[0] == '\0') {
		errbuf_set(err, errlen, "TPM: no tpm-tcti given");
		return -1;
	}
	if ((rc = Tss2_TctiLdr_Initialize(tcti, &t->tcti)) != TSS2_RC_SUCCESS) {
		errbuf_set(err, errlen, "TPM: cannot open TCTI '%s': code 0x%x (is the TPM or simulator "
		    "there, and is its TCTI library installed, e.g. libtss2-tcti-device0?)", tcti, rc);
		t->tcti = NULL;
		return -1;
	}
	if ((rc = Esys_Initialize(&t->ctx, t->tcti, NULL)) != TSS2_RC_SUCCESS) {
		tpm_rc_err(err, errlen, "Esys_Initialize", rc);
		goto fail;
	}
	/* Already started (by the firmware, the kernel or swtpm's startup-clear) is fine. */
	rc = Esys_Startup(t->ctx, TPM2_SU_CLEAR);
	if (rc != TSS2_RC_SUCCESS && rc != TPM2_RC_INITIALIZE) {
		tpm_rc_err(err, errlen, "Startup", rc);
		goto fail;
	}
	tpm_flush_stale(t);
	if (tpm_esys_primary(t, err, errlen) == -1)
		goto fail;
	return 0;
fail:
	tpm_esys_close(t);
	return -1;
}

void
tpm_esys_close(struct tpm_esys *t)
{
	if (t->ctx != NULL && t->primary != ESYS_TR_NONE)
		(void)Esys_FlushContext(t->ctx, t->primary);
	if (t->ctx != NULL)
		Esys_Finalize(&t->ctx);
	if (t->tcti != NULL)
		Tss2_TctiLdr_Finalize(&t->tcti);
	t->ctx = NULL;
	t->tcti = NULL;
	t->primary = ESYS_TR_NONE;
}

int
tpm_esys_create(struct tpm_esys *t, enum tpm_key_kind kind, TPM2B_PUBLIC **pub,
    TPM2B_PRIVATE **priv, char *err, size_t errlen)
{
	TPM2B_PUBLIC tmpl;
	TPM2B_SENSITIVE_CREATE sens;
	TPM2B_DATA outside;
	TPML_PCR_SELECTION pcr;
	TPMT_PUBLIC *p = &tmpl.publicArea;
	TSS2_RC rc;

	memset(&tmpl, 0, sizeof(tmpl));
	memset(&sens, 0, sizeof(sens));
	memset(&outside, 0, sizeof(outside));
	memset(&pcr, 0, sizeof(pcr));
	p->nameAlg = TPM2_ALG_SHA256;
	/* Sign only (no decrypt: never a decryption oracle); made in and bound to this TPM. */
	p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
	    TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT;
	if (kind == TPM_KEY_RSA2048) {
		p->type = TPM2_ALG_RSA;
		p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
		p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
		p->parameters.rsaDetail.keyBits = 2048;
		p->parameters.rsaDetail.exponent = 0;
	} else {
		p->type = TPM2_ALG_ECC;
		p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
		p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
		p->parameters.eccDetail.curveID = kind == TPM_KEY_P384 ? TPM2_ECC_NIST_P384 :
		    TPM2_ECC_NIST_P256;
		p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	}
	rc = Esys_Create(t->ctx, t->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
	    &tmpl, &outside, &pcr, priv, pub, NULL, NULL, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		tpm_rc_err(err, errlen, "Create", rc);
		return -1;
	}
	return 0;
}

int
tpm_esys_load(struct tpm_esys *t, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
    ESYS_TR *handle, char *err, size_t errlen)
{
	TSS2_RC rc;

	rc = Esys_Load(t->ctx, t->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub,
	    handle);
	if (rc != TSS2_RC_SUCCESS) {
		*handle = ESYS_TR_NONE;
		tpm_rc_err(err, errlen, "Load of the key blob (made by another TPM, or the TPM was "
		    "cleared?)", rc);
		return -1;
	}
	return 0;
}

static TPMI_ALG_HASH
tpm_hash_alg(const char *md, size_t dlen)
{
	if (strcmp(md, "SHA256") == 0 && dlen == 32)
		return TPM2_ALG_SHA256;
	if (strcmp(md, "SHA384") == 0 && dlen == 48)
		return TPM2_ALG_SHA384;
	if (strcmp(md, "SHA512") == 0 && dlen == 64)
		return TPM2_ALG_SHA512;
	return TPM2_ALG_NULL;
}

/* TPMS_SIGNATURE_ECDSA -> DER ECDSA-Sig-Value. */
static int
tpm_ecdsa_der(const TPMS_SIGNATURE_ECDSA *s, uint8_t *sig, size_t cap, size_t *siglen)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(s->signatureR.buffer, s->signatureR.size, NULL);
	BIGNUM *sv = BN_bin2bn(s->signatureS.buffer, s->signatureS.size, NULL);
	unsigned char *p = sig;
	int len;

	if (es == NULL || r == NULL || sv == NULL || !ECDSA_SIG_set0(es, r, sv)) {
		ECDSA_SIG_free(es);
		BN_free(r);
		BN_free(sv);
		return -1;
	}
	len = i2d_ECDSA_SIG(es, NULL);
	if (len <= 0 || (size_t)len > cap || i2d_ECDSA_SIG(es, &p) != len) {
		ECDSA_SIG_free(es);
		return -1;
	}
	ECDSA_SIG_free(es);
	*siglen = (size_t)len;
	return 0;
}

int
tpm_esys_sign(struct tpm_esys *t, ESYS_TR key, int is_rsa, int pss, const char *md,
    const uint8_t *digest, size_t dlen, uint8_t *sig, size_t cap, size_t *siglen,
    char *err, size_t errlen)
{
	TPMT_TK_HASHCHECK check = { .tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL };
	TPMT_SIG_SCHEME scheme;
	TPM2B_DIGEST dg;
	TPMT_SIGNATURE *out = NULL;
	TPMI_ALG_HASH halg = tpm_hash_alg(md, dlen);
	TSS2_RC rc;
	int ret = -1;

	*siglen = 0;
	if (halg == TPM2_ALG_NULL || dlen > sizeof(dg.buffer)) {
		errbuf_set(err, errlen, "TPM sign: digest %s of %zu bytes not supported", md, dlen);
		return -1;
	}
	memset(&scheme, 0, sizeof(scheme));
	if (!is_rsa) {
		scheme.scheme = TPM2_ALG_ECDSA;
		scheme.details.ecdsa.hashAlg = halg;
	} else if (pss) {
		scheme.scheme = TPM2_ALG_RSAPSS;
		scheme.details.rsapss.hashAlg = halg;
	} else {
		scheme.scheme = TPM2_ALG_RSASSA;
		scheme.details.rsassa.hashAlg = halg;
	}
	dg.size = (UINT16)dlen;
	memcpy(dg.buffer, digest, dlen);
	rc = Esys_Sign(t->ctx, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &dg, &scheme,
	    &check, &out);
	if (rc != TSS2_RC_SUCCESS) {
		tpm_rc_err(err, errlen, "Sign", rc);
		return -1;
	}
	if (!is_rsa && out->sigAlg == TPM2_ALG_ECDSA)
		ret = tpm_ecdsa_der(&out->signature.ecdsa, sig, cap, siglen);
	else if (is_rsa && (out->sigAlg == TPM2_ALG_RSAPSS || out->sigAlg == TPM2_ALG_RSASSA) &&
	    out->signature.rsapss.sig.size <= cap) {
		/* rsapss and rsassa share one layout (TPMS_SIGNATURE_RSA). */
		memcpy(sig, out->signature.rsapss.sig.buffer, out->signature.rsapss.sig.size);
		*siglen = out->signature.rsapss.sig.size;
		ret = 0;
	}
	if (ret == -1)
		errbuf_set(err, errlen, "TPM sign: unexpected signature (algorithm 0x%x)", out->sigAlg);
	Esys_Free(out);
	return ret;
}
