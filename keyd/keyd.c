/*
 * `redoubt keyd CONFIG`: the key daemon, started by the supervisor under its own user.
 *
 * Start-up, in order: not dumpable; secure heap before any key is read; audit log open;
 * every identity loaded and validated; ticket keys made; then tell the supervisor we are
 * ready and serve the worker channels.  keyd never opens a network socket.
 */
#include "keyd/keyd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <seccomp.h>
#include <openssl/evp.h>

#include "audit/events.h"
#include "cli/cli.h"
#include "common/child.h"
#include "common/fips.h"
#include "common/log.h"
#include "common/seccomp_util.h"
#include "keyd/sandbox.h"
#include "keyd/tpm.h"

#define KEYD_EXIT_CONFIG 78   /* a key or certificate problem: the supervisor reports it */

struct keyd *kd;
static struct keyd keyd_state;

/* ---------- audit ---------- */

static void
keyd_set_admission(int accept)
{
	struct ipc_msg m;

	if (kd->admission == accept)
		return;
	kd->admission = accept;
	log_warnx("audit log %s: %s new connections", accept ? "writable again" :
	    "cannot be written", accept ? "accepting" : "refusing");
	ipc_msg_init(&m, IPC_ADMISSION, 0);
	m.u.admission.accept = (uint32_t)accept;
	keyd_broadcast(&m);
}

void
keyd_audit(uint16_t event, int worker, const char *outcome, const char *reason,
    json_t *fields)
{
	int ok;

	if (kd->audit == NULL)
		return;
	ok = audit_write(kd->audit, event, worker, outcome, reason, fields) == 0;
	/* Fail closed: no new connections while the trail cannot be written. */
	if (kd->cfg->audit_fail_closed)
		keyd_set_admission(ok);
}

static void
keyd_audit_timer_cb(struct ev_timer *t)
{
	int next;

	audit_writer_tick(kd->audit);
	if (kd->cfg->audit_fail_closed)
		keyd_set_admission(audit_writer_healthy(kd->audit));
	next = audit_writer_next_ms(kd->audit);
	evloop_timer_after(&kd->loop, &kd->audit_timer, next > 1000 || next < 0 ? 1000 :
	    (uint64_t)next);
}

/* A start-up step failed after the audit log opened: say why there too, then exit 78. */
static _Noreturn void
keyd_start_failed(const char *why)
{
	log_warnx("%s", why);
	keyd_audit(AUDIT_SERVICE_START, AUDIT_WORKER_NONE, "failure", why, NULL);
	if (kd->audit != NULL)
		audit_writer_close(kd->audit);
	exit(KEYD_EXIT_CONFIG);
}

/* ---------- supervisor channel ---------- */

void
keyd_request_restart(unsigned worker, const char *why)
{
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_CHILD_EVENT, 0);
	m.u.child_event.kind = IPC_CHILD_VIOLATION;
	m.u.child_event.child = 1 + worker;
	m.u.child_event.pid = (int32_t)getpid();   /* the reporter; the index names the worker */
	m.u.child_event.syscall = -1;
	if (ipc_chan_send(&kd->sup, &m, -1) != IPC_IO_OK)
		log_warnx("worker %u: cannot ask the supervisor for a restart (%s)", worker, why);
}

static void
keyd_child_event(const struct ipc_child_event *ce)
{
	json_t *f = json_pack("{s:s, s:i, s:i}", "process", ce->child == 0 ? "keyd" : "worker",
	    "pid", ce->pid, "status", ce->status);
	char reason[96];

	if (f != NULL && ce->child > 0)
		json_object_set_new(f, "worker_index", json_integer(ce->child - 1));
	if (ce->kind == IPC_CHILD_EXITED) {
		if (ce->syscall >= 0) {
			char name[32];
			sbx_syscall_name(seccomp_arch_native(), ce->syscall, name, sizeof(name));
			json_object_set_new(f, "syscall", json_integer(ce->syscall));
			json_object_set_new(f, "syscall_name", json_string(name));
			snprintf(reason, sizeof(reason), "killed by the sandbox (syscall %s)", name);
			keyd_audit(AUDIT_SANDBOX_VIOLATION, AUDIT_WORKER_NONE, "failure", reason, f);
		}
		snprintf(reason, sizeof(reason), "exited with status %d", ce->status);
		keyd_audit(AUDIT_CHILD_EXITED, AUDIT_WORKER_NONE, "failure", reason, f);
	} else if (ce->kind == IPC_CHILD_RESTARTED)
		keyd_audit(AUDIT_CHILD_RESTARTED, AUDIT_WORKER_NONE, "success", "restarted", f);
	json_decref(f);
}

static void
keyd_sup_cb(struct ev_io *io, uint32_t events)
{
	struct ipc_msg m;
	int fd, err;

	if (events & EPOLLOUT)
		(void)ipc_chan_flush(&kd->sup);
	for (;;) {
		switch (ipc_chan_recv(&kd->sup, &m, &fd, &err)) {
		case IPC_IO_OK:
			if (m.hdr.type == IPC_CHANNEL && m.u.channel.kind == IPC_CHANNEL_WORKER &&
			    fd >= 0) {
				keyd_worker_attach(m.u.channel.worker, fd);
				break;
			}
			if (fd >= 0)
				close(fd);
			if (m.hdr.type == IPC_CHILD_EVENT)
				keyd_child_event(&m.u.child_event);
			else
				log_warnx("supervisor: unexpected %s message", ipc_type_name(m.hdr.type));
			break;
		case IPC_IO_AGAIN:
			return;
		case IPC_IO_BADMSG:
			fatalx("supervisor: bad frame: %s", ipc_codec_strerror(err));
		default:
			log_warnx("supervisor went away; stopping");
			evloop_del(&kd->loop, io);
			evloop_stop(&kd->loop);
			return;
		}
	}
}

/* ---------- signals ---------- */

static void
keyd_sig_cb(struct ev_io *io, uint32_t events)
{
	struct signalfd_siginfo si;
	char err[CONFIG_ERR_MAX];
	struct keyd_rotate_req rr;

	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
			evloop_stop(&kd->loop);
			break;
		case SIGHUP:
			/* The same rotation as `redoubt rotate`; the sender is who asked. */
			rr = (struct keyd_rotate_req){ "SIGHUP", (long)si.ssi_uid, (long)si.ssi_pid, 0 };
			json_decref(keyd_rotate(&rr));
			break;
		case SIGUSR1:
			if (kd->audit != NULL && audit_writer_reopen(kd->audit, err, sizeof(err)) == -1)
				log_warnx("audit: %s", err);
			break;
		default:
			break;
		}
	}
}

static int
keyd_signals(void)
{
	static const int sigs[] = { SIGTERM, SIGHUP, SIGUSR1, 0 };

	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit on the audit log is a write error (fail closed), not a crash. */
	signal(SIGXFSZ, SIG_IGN);
	/* Ctrl-C reaches the whole process group; the supervisor decides, not us. */
	signal(SIGINT, SIG_IGN);
	return evloop_add_signals(&kd->loop, &kd->sig_io, sigs, keyd_sig_cb);
}

/* ---------- start and stop ---------- */

static void
keyd_expiry_timer_cb(struct ev_timer *t)
{
	keyd_expiry_check();
}

static void
keyd_config_audit(void)
{
	char hex[65];
	json_t *f;

	for (int i = 0; i < 32; i++)
		snprintf(hex + (size_t)i * 2, 3, "%02x", kd->cfg->sha256[i]);
	f = json_pack("{s:s, s:s, s:i}", "config", kd->cfg->path, "config_sha256", hex,
	    "workers", (int)kd->cfg->workers);
	keyd_audit(AUDIT_SERVICE_START, AUDIT_WORKER_NONE, "success", "keyd started", f);
	keyd_audit(AUDIT_CONFIG_LOADED, AUDIT_WORKER_NONE, "success", "configuration loaded", f);
	json_decref(f);
}

static void
keyd_ready(void)
{
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_CHILD_EVENT, 0);
	m.u.child_event.kind = IPC_CHILD_READY;
	m.u.child_event.pid = (int32_t)getpid();
	m.u.child_event.syscall = -1;
	if (ipc_chan_send(&kd->sup, &m, -1) != IPC_IO_OK)
		fatalx("keyd: cannot tell the supervisor we are ready");
}

int
keyd_main(int argc, char **argv)
{
	struct rlimit nocore = { 0, 0 };
	char err[KEYSTORE_ERR_MAX], ferr[FIPS_ERR_MAX];

	if (argc != 2)
		fatalx("usage: redoubt keyd CONFIG (started by 'redoubt serve')");
	log_init("keyd", LOG_LVL_INFO);
	kd = &keyd_state;
	kd->admission = 1;
	kd->started = (uint64_t)time(NULL);
	kd->cfg = child_load_config("keyd", argv[1]);
	log_set_level(kd->cfg->log_level);

	/* Private keys live here: no core dumps, no ptrace, no /proc/PID/mem for our own user. */
	if (prctl(PR_SET_DUMPABLE, 0) == -1 || setrlimit(RLIMIT_CORE, &nocore) == -1)
		fatal("keyd: PR_SET_DUMPABLE / RLIMIT_CORE");
	/* Before any key is parsed, so private components land in mlocked, undumped pages. */
	if (CRYPTO_secure_malloc_init(kd->cfg->secure_heap, KEYD_SECURE_HEAP_MINSIZE) != 1)
		fatalx("keyd: cannot set up a %zu-byte secure heap (mlock): raise RLIMIT_MEMLOCK "
		    "(LimitMEMLOCK=) or lower secure-heap", kd->cfg->secure_heap);
	if (OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) != 1)
		fatalx("keyd: OpenSSL initialisation failed");
	if (fips_enable(kd->cfg, ferr, sizeof(ferr)) == -1) {
		log_warnx("%s", ferr);
		exit(KEYD_EXIT_CONFIG);
	}
	if (evloop_init(&kd->loop) == -1)
		fatal("keyd: epoll");
	if (kd->cfg->audit_log[0] != '\0') {
		kd->audit = audit_writer_open(kd->cfg, err, sizeof(err));
		if (kd->audit == NULL) {
			log_warnx("%s", err);
			exit(KEYD_EXIT_CONFIG);
		}
		evloop_timer_init(&kd->audit_timer, keyd_audit_timer_cb, NULL);
		evloop_timer_after(&kd->loop, &kd->audit_timer, 1000);
	}
	if (keyd_identities_load(err, sizeof(err)) == -1)
		keyd_start_failed(err);
	/* The TPM is opened before the sandbox; its thread starts inside it (below). */
	if (keyd_tpm_init(err, sizeof(err)) == -1)
		keyd_start_failed(err);
	keyd_tickets_init();
	evloop_timer_init(&kd->expiry_timer, keyd_expiry_timer_cb, NULL);
	keyd_expiry_check();
	/* Both before the sandbox: the group database and inotify watches are set up once. */
	keyd_control_init(CHILD_FD_FIRST);
	keyd_autoreload_init();
	ipc_chan_init(&kd->sup, CHILD_FD_PARENT);
	kd->sup_io.fd = CHILD_FD_PARENT;
	kd->sup_io.cb = keyd_sup_cb;
	if (evloop_add(&kd->loop, &kd->sup_io, EPOLLIN) == -1 || keyd_signals() == -1)
		fatal("keyd: event set-up");
	keyd_config_audit();
	sandbox_keyd_enter(kd->cfg);
	if (keyd_tpm_start(err, sizeof(err)) == -1)
		keyd_start_failed(err);
	keyd_ready();

	if (evloop_run(&kd->loop) == -1)
		fatal("keyd: event loop");

	keyd_audit(AUDIT_SERVICE_STOP, AUDIT_WORKER_NONE, "success", "keyd stopping", NULL);
	keyd_control_close();
	keyd_autoreload_close();
	json_decref(kd->last_rotation);
	for (unsigned i = 0; i < WORKERS_MAX; i++)
		keyd_worker_close(&kd->workers[i], "keyd stopping");
	if (kd->audit != NULL)
		audit_writer_close(kd->audit);
	keyd_identities_free();
	OPENSSL_cleanse(&kd->tickets, sizeof(kd->tickets));
	evloop_free(&kd->loop);
	config_free(kd->cfg);
	return 0;
}
