/*
 * auto-reload = yes: keyd watches every file a rotation reads (certificates, keys, passphrase
 * files, CA bundles, CRLs) and rotates by itself when they change.
 *
 * inotify watches the directories that hold the files (an editor's or certbot's rename, and
 * Kubernetes' "..data" symlink swap, replace the file, so a watch on the file itself would
 * be lost).  Any event there starts a quiet period (AUTORELOAD_DEBOUNCE_MS, restarted by
 * every further event); then the files' identity (device, inode, size, mtime, ctime — of
 * the file a path leads to, through symlinks) is compared with what the last attempt saw,
 * and if it changed the rotation runs.  Without inotify (no instance or watch available)
 * keyd stats the files every AUTORELOAD_POLL_MS and rotates once they look the same on two
 * polls in a row.
 *
 * Only a complete, valid, matching set is ever loaded: the rotation validates everything
 * (a new certificate with the old key does not match, a half-written PEM does not parse),
 * and refuses the set otherwise — the running generation stays, the refusal is logged and
 * audited, and the next change of the files tries again.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "keyd/keyd.h"

#define AUTORELOAD_DEBOUNCE_MS 500    /* quiet time after the last change before looking */
#define AUTORELOAD_POLL_MS     2000   /* stat() interval when inotify is not available */
#define AUTORELOAD_EVBUF       4096   /* bytes of inotify events read at once */
#define AUTORELOAD_TPM_PREFIX  "tpm:"
/* Directories watched: every file of every identity, listener and connector, at most. */
#define AUTORELOAD_WATCH_MAX   (CONFIG_IDENTITIES_MAX * 5 + \
    (CONFIG_LISTENERS_MAX + CONFIG_CONNECTORS_MAX) * 2)
#define AUTORELOAD_WATCH_MASK  (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | \
    IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)

static struct {
	const char     *mode;             /* "off", "inotify", "poll" */
	int             ifd;              /* inotify instance, -1 when polling */
	struct ev_io    io;
	struct ev_timer debounce;
	struct ev_timer poll;
	uint8_t         last[32];         /* the files as the last rotation attempt saw them */
	uint8_t         seen[32];         /* polling: the files at the previous poll */
} ar = { .mode = "off", .ifd = -1 };

typedef int (*ar_path_fn)(const char *path, void *arg);

/* Calls fn for every file a rotation reads; stops at the first nonzero return. */
static int
ar_each_path(ar_path_fn fn, void *arg)
{
	const struct config *cfg = kd->cfg;
	int r = 0;

	for (size_t i = 0; r == 0 && i < cfg->n_identities; i++) {
		const struct config_identity *id = &cfg->identities[i];
		const char *key = id->key;

		if (strncmp(key, AUTORELOAD_TPM_PREFIX, strlen(AUTORELOAD_TPM_PREFIX)) == 0)
			key += strlen(AUTORELOAD_TPM_PREFIX);
		const char *paths[] = { id->cert, key, id->key_passphrase_file, id->ca, id->crl };
		for (size_t p = 0; r == 0 && p < sizeof(paths) / sizeof(paths[0]); p++)
			if (paths[p][0] != '\0')
				r = fn(paths[p], arg);
	}
	for (size_t i = 0; r == 0 && i < cfg->n_listeners; i++) {
		if (cfg->listeners[i].ca[0] != '\0')
			r = fn(cfg->listeners[i].ca, arg);
		if (r == 0 && cfg->listeners[i].crl[0] != '\0')
			r = fn(cfg->listeners[i].crl, arg);
	}
	for (size_t i = 0; r == 0 && i < cfg->n_connectors; i++) {
		if (cfg->connectors[i].ca[0] != '\0')
			r = fn(cfg->connectors[i].ca, arg);
		if (r == 0 && cfg->connectors[i].crl[0] != '\0')
			r = fn(cfg->connectors[i].crl, arg);
	}
	return r;
}

/* ---------- what the files look like ---------- */

static int
ar_digest_path(const char *path, void *arg)
{
	EVP_MD_CTX *md = arg;
	struct stat st;
	int64_t v[7] = { 0 };

	if (stat(path, &st) == 0) {
		v[0] = (int64_t)st.st_dev;
		v[1] = (int64_t)st.st_ino;
		v[2] = (int64_t)st.st_size;
		v[3] = (int64_t)st.st_mtim.tv_sec;
		v[4] = (int64_t)st.st_mtim.tv_nsec;
		v[5] = (int64_t)st.st_ctim.tv_sec;
		v[6] = (int64_t)st.st_ctim.tv_nsec;
	} else
		v[0] = -(int64_t)errno;   /* missing now: a change too, when it comes back */
	return EVP_DigestUpdate(md, path, strlen(path) + 1) &&
	    EVP_DigestUpdate(md, v, sizeof(v)) ? 0 : -1;
}

static void
ar_signature(uint8_t out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    ar_each_path(ar_digest_path, md) != 0 || !EVP_DigestFinal_ex(md, out, NULL))
		memset(out, 0, 32);   /* no digest: the next look counts as a change */
	EVP_MD_CTX_free(md);
}

void
keyd_autoreload_snapshot(void)
{
	if (kd->cfg->auto_reload)
		ar_signature(ar.last);
}

const char *
keyd_autoreload_mode(void)
{
	return ar.mode;
}

/* ---------- rotating ---------- */

static void
ar_try(const uint8_t now[32])
{
	struct keyd_rotate_req req = { "auto-reload", -1, -1, 0 };
	json_t *answer;

	if (memcmp(now, ar.last, sizeof(ar.last)) == 0)
		return;                   /* touched, but nothing a rotation reads is different */
	log_info("auto-reload: the certificate, key, CA or CRL files changed; rotating");
	answer = keyd_rotate(&req);
	if (!json_is_true(json_object_get(answer, "ok")))
		log_info("auto-reload: keeping the running generations until the files change "
		    "again");
	json_decref(answer);
}

static void
ar_debounce_cb(struct ev_timer *t)
{
	uint8_t now[32];

	ar_signature(now);
	ar_try(now);
}

/* Two polls that agree: the writer is done. */
static void
ar_poll_cb(struct ev_timer *t)
{
	uint8_t now[32];

	ar_signature(now);
	if (memcmp(now, ar.seen, sizeof(now)) == 0)
		ar_try(now);
	memcpy(ar.seen, now, sizeof(now));
	evloop_timer_after(&kd->loop, &ar.poll, AUTORELOAD_POLL_MS);
}

static void
ar_inotify_cb(struct ev_io *io, uint32_t events)
{
	char buf[AUTORELOAD_EVBUF] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	int any = 0;

	/* What changed does not matter: the signature decides.  Drain, then wait for quiet. */
	while ((n = read(ar.ifd, buf, sizeof(buf))) > 0 || (n == -1 && errno == EINTR))
		any |= n > 0;
	if (any)
		evloop_timer_after(&kd->loop, &ar.debounce, AUTORELOAD_DEBOUNCE_MS);
}

/* ---------- watching ---------- */

static int
ar_watch_dir(const char *path, void *arg)
{
	char dir[CONFIG_PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t len;

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else {
		len = slash == path ? 1 : (size_t)(slash - path);
		if (len >= sizeof(dir))
			return -1;
		memcpy(dir, path, len);
		dir[len] = '\0';
	}
	/* The same directory twice is the same watch: inotify returns its descriptor again. */
	if (inotify_add_watch(ar.ifd, dir, AUTORELOAD_WATCH_MASK) == -1) {
		log_warn("auto-reload: cannot watch %s (for %s)", dir, path);
		return -1;
	}
	return 0;
}

static int
ar_inotify_start(void)
{
	if ((ar.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) == -1) {
		log_warn("auto-reload: inotify_init1");
		return -1;
	}
	ar.io.fd = ar.ifd;
	ar.io.cb = ar_inotify_cb;
	if (ar_each_path(ar_watch_dir, NULL) != 0 || evloop_add(&kd->loop, &ar.io, EPOLLIN) == -1) {
		close(ar.ifd);
		ar.ifd = -1;
		return -1;
	}
	return 0;
}

void
keyd_autoreload_init(void)
{
	evloop_timer_init(&ar.debounce, ar_debounce_cb, NULL);
	evloop_timer_init(&ar.poll, ar_poll_cb, NULL);
	if (!kd->cfg->auto_reload)
		return;
	ar_signature(ar.last);
	memcpy(ar.seen, ar.last, sizeof(ar.seen));
	if (ar_inotify_start() == 0)
		ar.mode = "inotify";
	else {
		log_warnx("auto-reload: inotify is not available; checking the files every %d ms "
		    "instead", AUTORELOAD_POLL_MS);
		ar.mode = "poll";
		evloop_timer_after(&kd->loop, &ar.poll, AUTORELOAD_POLL_MS);
	}
	log_info("auto-reload: watching the certificate, key, CA and CRL files (%s)", ar.mode);
}

void
keyd_autoreload_close(void)
{
	evloop_timer_cancel(&kd->loop, &ar.debounce);
	evloop_timer_cancel(&kd->loop, &ar.poll);
	if (ar.ifd >= 0) {
		evloop_del(&kd->loop, &ar.io);
		close(ar.ifd);
		ar.ifd = -1;
	}
}
