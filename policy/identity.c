/*
 * Allow-list matching against a peer certificate's SANs and CN.
 */
#include "policy/identity.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509v3.h>

static const char *const identity_kind_prefix[] = {
	[ALLOW_DNS] = "dns", [ALLOW_IP] = "ip", [ALLOW_URI] = "uri", [ALLOW_CN] = "cn",
};

/* "*.example.com" matches "a.example.com" but neither "example.com" nor "a.b.example.com". */
static int
identity_dns_match(const char *pattern, const char *name, size_t namelen)
{
	size_t plen = strlen(pattern);

	if (plen > 2 && pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = memchr(name, '.', namelen);
		size_t rest;
		if (dot == NULL || dot == name)
			return 0;
		rest = namelen - (size_t)(dot - name);
		return rest == plen - 1 && strncasecmp(dot, pattern + 1, rest) == 0;
	}
	return plen == namelen && strncasecmp(pattern, name, namelen) == 0;
}

static int
identity_ip_match(const char *literal, const unsigned char *ip, int iplen)
{
	unsigned char buf[16];

	if (iplen == 4 && inet_pton(AF_INET, literal, buf) == 1)
		return memcmp(buf, ip, 4) == 0;
	if (iplen == 16 && inet_pton(AF_INET6, literal, buf) == 1)
		return memcmp(buf, ip, 16) == 0;
	return 0;
}

static int
identity_san_match(GENERAL_NAMES *sans, const struct allow_entry *e)
{
	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		const ASN1_STRING *s;

		switch (gn->type) {
		case GEN_DNS:
			s = gn->d.dNSName;
			if (e->kind == ALLOW_DNS && memchr(s->data, '\0', (size_t)s->length) == NULL &&
			    identity_dns_match(e->value, (const char *)s->data, (size_t)s->length))
				return 1;
			break;
		case GEN_IPADD:
			s = gn->d.iPAddress;
			if (e->kind == ALLOW_IP && identity_ip_match(e->value, s->data, s->length))
				return 1;
			break;
		case GEN_URI:
			s = gn->d.uniformResourceIdentifier;
			if (e->kind == ALLOW_URI && (size_t)s->length == strlen(e->value) &&
			    memcmp(s->data, e->value, (size_t)s->length) == 0)
				return 1;
			break;
		default:
			break;
		}
	}
	return 0;
}

static int
identity_cn_match(X509 *cert, const char *cn)
{
	X509_NAME *subj = X509_get_subject_name(cert);
	int idx = -1;

	while ((idx = X509_NAME_get_index_by_NID(subj, NID_commonName, idx)) >= 0) {
		const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, s);
		int ok = len >= 0 && (size_t)len == strlen(cn) && memcmp(utf8, cn, (size_t)len) == 0;
		OPENSSL_free(utf8);
		if (ok)
			return 1;
	}
	return 0;
}

int
identity_match(X509 *cert, const struct allow_entry *allow, size_t n)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int ok = 0;

	for (size_t i = 0; i < n && !ok; i++) {
		if (allow[i].kind == ALLOW_CN)
			ok = identity_cn_match(cert, allow[i].value);
		else if (sans != NULL)
			ok = identity_san_match(sans, &allow[i]);
	}
	GENERAL_NAMES_free(sans);
	return ok;
}

/* Appends "[, ]label" + len bytes of value, cutting at outlen. */
static void
identity_append(char *out, size_t outlen, size_t *used, const char *label, const char *value,
    size_t len)
{
	int r;

	if (*used >= outlen - 1)
		return;
	r = snprintf(out + *used, outlen - *used, "%s%s%.*s", *used ? ", " : "", label,
	    (int)len, value);
	if (r > 0)
		*used += (size_t)r;
	if (*used >= outlen)
		*used = outlen - 1;
}

void
identity_describe(X509 *cert, char *out, size_t outlen)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	char subj[256], ip[INET6_ADDRSTRLEN];
	size_t used = 0;

	out[0] = '\0';
	X509_NAME_oneline(X509_get_subject_name(cert), subj, sizeof(subj));
	identity_append(out, outlen, &used, "subject ", subj, strlen(subj));
	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		switch (gn->type) {
		case GEN_DNS:
			identity_append(out, outlen, &used, "DNS:",
			    (const char *)gn->d.dNSName->data, (size_t)gn->d.dNSName->length);
			break;
		case GEN_URI:
			identity_append(out, outlen, &used, "URI:",
			    (const char *)gn->d.uniformResourceIdentifier->data,
			    (size_t)gn->d.uniformResourceIdentifier->length);
			break;
		case GEN_IPADD:
			if (inet_ntop(gn->d.iPAddress->length == 4 ? AF_INET : AF_INET6,
			    gn->d.iPAddress->data, ip, sizeof(ip)) != NULL)
				identity_append(out, outlen, &used, "IP:", ip, strlen(ip));
			break;
		default:
			break;
		}
	}
	GENERAL_NAMES_free(sans);
}

void
identity_entry_format(const struct allow_entry *e, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s:%s", identity_kind_prefix[e->kind], e->value);
}
