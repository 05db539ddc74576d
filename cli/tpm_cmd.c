/*
 * `redoubt tpm create-key --out BLOB --type p256|p384|rsa2048 [--tcti TCTI]
 *                         [--csr FILE --subject /CN=.../O=... [--san DNS:a,IP:b]]`
 *     creates a signing key inside the TPM (it never leaves it), writes the key blob that
 *     `key = tpm:BLOB` names, and optionally a certificate signing request signed by the TPM;
 * `redoubt tpm public BLOB`
 *     prints the blob's public key (PEM); no TPM needed.
 *
 * The TCTI is always explicit (default: the kernel resource manager), never tss2's
 * auto-detection, which would also try TCP port 2321 that any local user could occupy.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli/cli.h"
#include "common/log.h"
#include "keyd/tpm.h"
#include "policy/config_parser.h"

#define TPM_CMD_SUBJECT_MAX 1024   /* bytes of a --subject value */

static int
tpm_usage(void)
{
	fprintf(stderr, "usage: redoubt tpm create-key --out BLOB --type p256|p384|rsa2048 "
	    "[--tcti TCTI] [--csr FILE --subject /CN=NAME[/O=ORG...] [--san DNS:a,IP:b]]\n"
	    "       redoubt tpm public BLOB\n"
	    "TCTI default: %s (tests: swtpm:host=127.0.0.1,port=N)\n", CONFIG_TPM_TCTI_DEFAULT);
	return EXIT_USAGE;
}

/* "/CN=a/O=b" -> X509_NAME. */
static X509_NAME *
tpm_parse_subject(const char *s)
{
	char buf[TPM_CMD_SUBJECT_MAX], *save = NULL, *tok;
	X509_NAME *n;

	if (strlen(s) >= sizeof(buf) || s[0] != '/' || (n = X509_NAME_new()) == NULL)
		return NULL;
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, "/", &save); tok != NULL; tok = strtok_r(NULL, "/", &save)) {
		char *eq = strchr(tok, '=');

		if (eq == NULL || eq == tok || eq[1] == '\0')
			goto fail;
		*eq = '\0';
		if (!X509_NAME_add_entry_by_txt(n, tok, MBSTRING_UTF8, (unsigned char *)eq + 1, -1,
		    -1, 0))
			goto fail;
	}
	if (X509_NAME_entry_count(n) == 0)
		goto fail;
	return n;
fail:
	X509_NAME_free(n);
	return NULL;
}

/* A CSR whose signature the TPM makes: ECDSA with the curve's hash, or RSA PKCS#1 SHA-256. */
static int
tpm_write_csr(struct tpm_esys *t, ESYS_TR key, EVP_PKEY *pub, int is_rsa, int p384,
    const char *path, const char *subject, const char *san)
{
	const char *md = p384 ? "SHA384" : "SHA256";
	X509_REQ *req = NULL;
	X509_NAME *name = NULL;
	X509_ALGOR *alg = NULL;
	ASN1_BIT_STRING *bs = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *ext;
	unsigned char *tbs = NULL, dg[EVP_MAX_MD_SIZE], sig[IPC_SIG_MAX];
	unsigned dlen = 0;
	size_t siglen = 0;
	char err[TPM_ERR_MAX] = "";
	int len, nid, rc = -1;
	FILE *f = NULL;

	if ((name = tpm_parse_subject(subject)) == NULL) {
		fprintf(stderr, "tpm create-key: --subject '%s' is not of the form /CN=NAME[/O=...]\n",
		    subject);
		goto out;
	}
	if ((req = X509_REQ_new()) == NULL || !X509_REQ_set_version(req, 0) ||
	    !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, pub))
		goto ssl;
	if (san != NULL) {
		if ((ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san)) == NULL) {
			fprintf(stderr, "tpm create-key: --san '%s' is not a subjectAltName list "
			    "(e.g. DNS:node.example.com,IP:10.0.0.1)\n", san);
			goto out;
		}
		if ((exts = sk_X509_EXTENSION_new_null()) == NULL ||
		    !sk_X509_EXTENSION_push(exts, ext)) {
			X509_EXTENSION_free(ext);
			goto ssl;
		}
		if (!X509_REQ_add_extensions(req, exts))
			goto ssl;
	}
	nid = is_rsa ? NID_sha256WithRSAEncryption :
	    p384 ? NID_ecdsa_with_SHA384 : NID_ecdsa_with_SHA256;
	if ((alg = X509_ALGOR_new()) == NULL ||
	    !X509_ALGOR_set0(alg, OBJ_nid2obj(nid), is_rsa ? V_ASN1_NULL : V_ASN1_UNDEF, NULL) ||
	    !X509_REQ_set1_signature_algo(req, alg))
		goto ssl;
	if ((len = i2d_re_X509_REQ_tbs(req, &tbs)) <= 0 ||
	    EVP_Digest(tbs, (size_t)len, dg, &dlen, EVP_get_digestbyname(md), NULL) != 1)
		goto ssl;
	if (tpm_esys_sign(t, key, is_rsa, 0, md, dg, dlen, sig, sizeof(sig), &siglen, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "tpm create-key: CSR: %s\n", err);
		goto out;
	}
	if ((bs = ASN1_BIT_STRING_new()) == NULL || !ASN1_BIT_STRING_set(bs, sig, (int)siglen))
		goto ssl;
	bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bs);
	bs = NULL;
	if (X509_REQ_verify(req, pub) != 1) {
		fprintf(stderr, "tpm create-key: CSR: the TPM's signature does not verify\n");
		goto out;
	}
	if ((f = fopen(path, "w")) == NULL || !PEM_write_X509_REQ(f, req)) {
		fprintf(stderr, "tpm create-key: cannot write CSR %s\n", path);
		goto out;
	}
	rc = 0;
	goto out;
ssl:
	fprintf(stderr, "tpm create-key: cannot build the CSR\n");
	ERR_print_errors_fp(stderr);
out:
	if (f != NULL && fclose(f) != 0)
		rc = -1;
	ERR_clear_error();
	OPENSSL_free(tbs);
	ASN1_BIT_STRING_free(bs);
	X509_ALGOR_free(alg);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	X509_REQ_free(req);
	return rc;
}

static int
tpm_create_key(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "type", required_argument, NULL, 't' },
		{ "tcti", required_argument, NULL, 'T' },
		{ "csr", required_argument, NULL, 'r' },
		{ "subject", required_argument, NULL, 's' },
		{ "san", required_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 }
	};
	const char *out = NULL, *type = NULL, *csr = NULL, *subject = NULL, *san = NULL;
	const char *tcti = CONFIG_TPM_TCTI_DEFAULT;
	enum tpm_key_kind kind;
	struct tpm_esys t;
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PRIVATE *priv = NULL;
	EVP_PKEY *pkey = NULL;
	ESYS_TR h = ESYS_TR_NONE;
	char err[TPM_ERR_MAX];
	int opt, rc = 1;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'o': out = optarg; break;
		case 't': type = optarg; break;
		case 'T': tcti = optarg; break;
		case 'r': csr = optarg; break;
		case 's': subject = optarg; break;
		case 'a': san = optarg; break;
		default: return tpm_usage();
		}
	}
	if (out == NULL || type == NULL || optind != argc || (csr == NULL) != (subject == NULL))
		return tpm_usage();
	if (strcmp(type, "p256") == 0)
		kind = TPM_KEY_P256;
	else if (strcmp(type, "p384") == 0)
		kind = TPM_KEY_P384;
	else if (strcmp(type, "rsa2048") == 0)
		kind = TPM_KEY_RSA2048;
	else
		return tpm_usage();
	if (tpm_esys_open(tcti, &t, err, sizeof(err)) == -1) {
		fprintf(stderr, "tpm create-key: %s\n", err);
		return 1;
	}
	if (tpm_esys_create(&t, kind, &pub, &priv, err, sizeof(err)) == -1 ||
	    tpm_blob_write(out, pub, priv, err, sizeof(err)) == -1) {
		fprintf(stderr, "tpm create-key: %s\n", err);
		goto done;
	}
	if ((pkey = tpm_public_to_pkey(pub)) == NULL) {
		fprintf(stderr, "tpm create-key: the TPM returned an unusable public key\n");
		goto done;
	}
	if (csr != NULL) {
		if (tpm_esys_load(&t, pub, priv, &h, err, sizeof(err)) == -1) {
			fprintf(stderr, "tpm create-key: %s\n", err);
			goto done;
		}
		if (tpm_write_csr(&t, h, pkey, kind == TPM_KEY_RSA2048, kind == TPM_KEY_P384, csr,
		    subject, san) == -1)
			goto done;
	}
	printf("wrote %s (%s key made in the TPM; its private part never leaves it)%s%s\n", out,
	    type, csr != NULL ? "; CSR " : "", csr != NULL ? csr : "");
	rc = 0;
done:
	if (h != ESYS_TR_NONE)
		(void)Esys_FlushContext(t.ctx, h);
	Esys_Free(pub);
	Esys_Free(priv);
	EVP_PKEY_free(pkey);
	tpm_esys_close(&t);
	return rc;
}

static int
tpm_public(int argc, char **argv)
{
	struct tpm_key *k = NULL;
	EVP_PKEY *pub = NULL;
	char err[TPM_ERR_MAX];
	int rc = 0;

	if (argc != 2)
		return tpm_usage();
	if (tpm_key_read(argv[1], &k, &pub, err, sizeof(err)) == -1) {
		fprintf(stderr, "tpm public: %s\n", err);
		return 1;
	}
	if (!PEM_write_PUBKEY(stdout, pub)) {
		fprintf(stderr, "tpm public: cannot write the public key\n");
		rc = 1;
	}
	EVP_PKEY_free(pub);
	tpm_key_unref(k);
	return rc;
}

int
cmd_tpm(int argc, char **argv)
{
	log_init("tpm", LOG_LVL_WARN);
	if (argc < 2)
		return tpm_usage();
	if (strcmp(argv[1], "create-key") == 0)
		return tpm_create_key(argc - 1, argv + 1);
	if (strcmp(argv[1], "public") == 0)
		return tpm_public(argc - 1, argv + 1);
	return tpm_usage();
}
