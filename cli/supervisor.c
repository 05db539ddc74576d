/*
 * Process supervision: spawn (fork + privilege drop + fexecve of our own binary, so every
 * child starts from a fresh address space that never held the supervisor's state), wire
 * the keyd <-> worker socketpairs, restart with backoff, forward signals, stop cleanly.
 */
#include "cli/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/child.h"
#include "common/log.h"
#include "common/privdrop.h"
#include "common/sandbox_supervisor.h"
#include "common/sd_daemon.h"

#define SUP_KEYD_START_MS   30000  /* keyd loads keys (a TPM may be slow) before workers start */
#define SUP_STOP_GRACE_MS   5000   /* after SIGTERM, children get this long before SIGKILL */
#define SUP_STABLE_MS       10000  /* a child that ran this long restarts without backoff */
#define SUP_PASSPHRASE_ENV  "REDOUBT_KEY_PASSPHRASE"

static struct supervisor *sup;
static struct ev_timer sup_stop_timer;

static void sup_spawn(struct sup_child *c);

/* ---------- the child side of fork ---------- */

static _Noreturn void
sup_exec_child(struct sup_child *c, int chan_fd)
{
	int src[3 + CONFIG_LISTENERS_MAX + CONFIG_CONNECTORS_MAX + 1], tmp[sizeof(src) / sizeof(int)];
	size_t n = 0;
	char idx[16], *argv[5], *envp[2] = { NULL, NULL }, *pass;
	static char passenv[4096];
	const struct passwd *pw;
	sigset_t all;
	pid_t parent = getppid();
	int exe;

	src[n++] = sup->cfg_fd;
	src[n++] = chan_fd;
	/* keyd's control socket at CHILD_FD_FIRST: bound by serve while it was still root. */
	if (strcmp(c->role, "keyd") == 0 && sup->control_fd >= 0)
		src[n++] = sup->control_fd;
	if (strcmp(c->role, "worker") == 0)
		for (size_t i = 0; i < sup->n_socks; i++)
			src[n++] = sup->sock_fds[i];
	/* Move every source above the target range first, so no dup2 clobbers a source. */
	src[n] = sup->exe_fd;
	for (size_t i = 0; i <= n; i++)
		if ((tmp[i] = fcntl(src[i], F_DUPFD_CLOEXEC, (int)(CHILD_FD_CONFIG + n + 1))) == -1)
			fatal("spawn %s: F_DUPFD", c->role);
	for (size_t i = 0; i < n; i++)
		if (dup2(tmp[i], CHILD_FD_CONFIG + (int)i) == -1)
			fatal("spawn %s: dup2", c->role);
	/* Our binary, just above the inherited set, closed by the exec itself. */
	exe = CHILD_FD_CONFIG + (int)n;
	if (dup3(tmp[n], exe, O_CLOEXEC) == -1)
		fatal("spawn %s: dup3", c->role);
	if (close_range((unsigned)exe + 1, ~0U, 0) == -1)
		fatal("spawn %s: close_range", c->role);

	sigfillset(&all);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (sup->privsep) {
		pw = strcmp(c->role, "keyd") == 0 ? &sup->keyd_pw : &sup->worker_pw;
		privdrop_to(pw);
	} else
		privdrop_caps();
	/* Die with the supervisor (set after the uid change, which clears it). */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || getppid() != parent)
		_exit(1);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("spawn %s: PR_SET_NO_NEW_PRIVS", c->role);

	/* Only keyd may see the key passphrase; workers get an empty environment. */
	pass = getenv(SUP_PASSPHRASE_ENV);
	if (strcmp(c->role, "keyd") == 0 && pass != NULL &&
	    snprintf(passenv, sizeof(passenv), "%s=%s", SUP_PASSPHRASE_ENV, pass) <
	    (int)sizeof(passenv))
		envp[0] = passenv;
	argv[0] = "redoubt";
	argv[1] = (char *)c->role;
	if (strcmp(c->role, "keyd") == 0) {
		argv[2] = sup->cfg->path;
		argv[3] = NULL;
	} else {
		snprintf(idx, sizeof(idx), "%u", c->index);
		argv[2] = idx;
		argv[3] = sup->cfg->path;
		argv[4] = NULL;
	}
	fexecve(exe, argv, envp);
	fatal("spawn %s: fexecve", c->role);
}

/* ---------- wiring ---------- */

/* Ownership of fd (>= 0) passes here, sent or not. */
int
supervisor_send(struct sup_child *c, const struct ipc_msg *m, int fd)
{
	if (c->chan.fd < 0 && fd >= 0)
		close(fd);
	if (c->chan.fd < 0 || ipc_chan_send(&c->chan, m, fd) != IPC_IO_OK) {
		log_warnx("cannot send a %s message to %s %u", ipc_type_name(m->hdr.type), c->role,
		    c->index);
		return -1;
	}
	(void)ipc_chan_flush(&c->chan);
	return 0;
}

static int
sup_send_fd(struct sup_child *c, uint32_t kind, unsigned worker, int fd)
{
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_CHANNEL, 0);
	m.u.channel.kind = kind;
	m.u.channel.worker = worker;
	return supervisor_send(c, &m, fd);
}

/* A fresh keyd <-> worker socketpair: keyd's end to keyd, the other to the worker. */
static void
sup_wire(struct sup_child *w)
{
	int sv[2];

	if (sup->role != SUP_ROLE_ALL || sup->keyd.pid == 0 || w->pid == 0)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == -1) {
		log_warn("socketpair for worker %u", w->index);
		return;
	}
	if (sup_send_fd(&sup->keyd, IPC_CHANNEL_WORKER, w->index, sv[0]) == -1) {
		close(sv[1]);
		return;
	}
	(void)sup_send_fd(w, IPC_CHANNEL_KEYD, w->index, sv[1]);
}

/*
 * Worker exits and restarts go to keyd for its audit trail: directly, or across the link
 * when keyd has its own supervisor.  syscall_nr: what a seccomp filter killed it for, or -1.
 */
static void
sup_tell_keyd(uint32_t kind, const struct sup_child *c, int status, int syscall_nr)
{
	struct ipc_msg m;

	if (c == &sup->keyd)
		return;
	ipc_msg_init(&m, IPC_CHILD_EVENT, 0);
	m.u.child_event.kind = kind;
	m.u.child_event.child = 1 + c->index;
	m.u.child_event.pid = c->pid > 0 ? c->pid : 1;
	m.u.child_event.status = status;
	m.u.child_event.syscall = syscall_nr;
	if (sup->role == SUP_ROLE_WORKERS)
		supervisor_link_report(sup, &m);
	else if (sup->keyd.pid > 0)
		(void)supervisor_send(&sup->keyd, &m, -1);
}

/* keyd's "worker N broke the protocol", for a worker this configuration has. */
int
supervisor_is_violation(const struct supervisor *s, const struct ipc_msg *m)
{
	return m->hdr.type == IPC_CHILD_EVENT && m->u.child_event.kind == IPC_CHILD_VIOLATION &&
	    m->u.child_event.child >= 1 && m->u.child_event.child <= s->cfg->workers;
}

void
supervisor_kill_worker(struct supervisor *s, unsigned worker)
{
	struct sup_child *w = &s->workers[worker];

	log_warnx("keyd reports a protocol violation by worker %u: restarting it", w->index);
	if (w->pid > 0)
		(void)kill(w->pid, SIGKILL);
}

int
supervisor_role_parse(const char *arg, enum sup_role *role)
{
	if (strcmp(arg, "all") == 0)
		*role = SUP_ROLE_ALL;
	else if (strcmp(arg, "keyd") == 0)
		*role = SUP_ROLE_KEYD;
	else if (strcmp(arg, "workers") == 0)
		*role = SUP_ROLE_WORKERS;
	else {
		fprintf(stderr, "redoubt: --role must be all, keyd or workers, not '%s'\n", arg);
		return -1;
	}
	return 0;
}

/* ---------- messages from children ---------- */

static void
sup_child_msg(struct sup_child *c, const struct ipc_msg *m)
{
	if (c == &sup->keyd && m->hdr.type == IPC_CHILD_EVENT &&
	    m->u.child_event.kind == IPC_CHILD_READY) {
		c->ready = 1;
		return;
	}
	if (c == &sup->keyd && supervisor_is_violation(sup, m)) {
		if (sup->role == SUP_ROLE_KEYD)
			supervisor_link_report(sup, m);     /* the workers' supervisor restarts it */
		else
			supervisor_kill_worker(sup, m->u.child_event.child - 1);
		return;
	}
	log_warnx("%s %u: unexpected %s message", c->role, c->index, ipc_type_name(m->hdr.type));
}

static void
sup_child_io_cb(struct ev_io *io, uint32_t events)
{
	struct sup_child *c = io->arg;
	struct ipc_msg m;
	int fd, err;

	if (events & EPOLLOUT)
		(void)ipc_chan_flush(&c->chan);
	for (;;) {
		enum ipc_io r = ipc_chan_recv(&c->chan, &m, &fd, &err);
		if (r == IPC_IO_OK) {
			if (fd >= 0)
				close(fd);
			sup_child_msg(c, &m);
			continue;
		}
		if (r == IPC_IO_BADMSG) {
			log_warnx("%s %u: bad frame (%s): stopping it", c->role, c->index,
			    ipc_codec_strerror(err));
			if (c->pid > 0)
				(void)kill(c->pid, SIGKILL);
		}
		if (r != IPC_IO_AGAIN) {
			/* EOF: the child is exiting; SIGCHLD does the rest. */
			evloop_del(&sup->loop, io);
			ipc_chan_close(&c->chan);
		}
		return;
	}
}

/* ---------- spawning and restarting ---------- */

static void
sup_spawn(struct sup_child *c)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		fatal("socketpair for %s", c->role);
	pid = fork();
	if (pid == -1)
		fatal("fork %s", c->role);
	if (pid == 0)
		sup_exec_child(c, sv[1]);
	close(sv[1]);
	(void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
	ipc_chan_init(&c->chan, sv[0]);
	c->io.fd = sv[0];
	c->io.cb = sup_child_io_cb;
	c->io.arg = c;
	if (evloop_add(&sup->loop, &c->io, EPOLLIN) == -1)
		fatal("epoll_ctl for %s", c->role);
	c->pid = pid;
	c->ready = 0;
	c->started_ms = evloop_clock_ms();
	log_debug("started %s %u as pid %d", c->role, c->index, (int)pid);
}

static void
sup_restart_cb(struct ev_timer *t)
{
	struct sup_child *c = t->arg;

	if (sup->stopping || c->pid != 0)
		return;
	sup_spawn(c);
	if (c == &sup->keyd) {
		for (unsigned i = 0; i < sup->cfg->workers; i++)
			sup_wire(&sup->workers[i]);
		supervisor_link_wire_all(sup);
	} else
		sup_wire(c);
	log_info("%s %u restarted (pid %d)", c->role, c->index, (int)c->pid);
	/* Split service: keyd's supervisor wires the worker when it hears of the restart. */
	sup_tell_keyd(IPC_CHILD_RESTARTED, c, 0, -1);
}

static void
sup_describe_exit(int status, char *out, size_t outlen)
{
	if (WIFEXITED(status))
		snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		snprintf(out, outlen, "was killed by its seccomp sandbox (SIGSYS)");
	else if (WIFSIGNALED(status))
		/* A core dump of keyd or a worker would be a bug: they are not dumpable. */
		snprintf(out, outlen, "was killed by signal %d (%s)%s", WTERMSIG(status),
		    strsignal(WTERMSIG(status)), WCOREDUMP(status) ? " and dumped core" : "");
	else
		snprintf(out, outlen, "ended with status 0x%x", status);
}

#define SUP_SECCOMP_RECORD_WAIT_MS 250  /* a SIGSYS death waits this long for the kernel's record */

/*
 * A child that died of SIGSYS was killed by its seccomp filter (it installs no SIGSYS
 * handler): name the syscall from the kernel's own audit record (sandbox_supervisor.h says
 * why that source).  Returns the syscall number, or -1 (how then says it is unknown).
 */
static int
sup_describe_sandbox_kill(const struct sup_child *c, int status, char *how, size_t howlen)
{
	char name[SANDBOX_SYSCALL_NAME_MAX];
	int nr;

	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS) {
		sup_describe_exit(status, how, howlen);
		return -1;
	}
	nr = sandbox_supervisor_killed_by(c->pid, SUP_SECCOMP_RECORD_WAIT_MS, name, sizeof(name));
	if (nr >= 0)
		snprintf(how, howlen, "was killed by its seccomp sandbox: %s", name);
	else
		snprintf(how, howlen, "was killed by its seccomp sandbox (SIGSYS; the kernel's "
		    "record of the syscall was not available)");
	return nr;
}

static void
sup_child_exited(struct sup_child *c, int status)
{
	char how[128];
	uint64_t ran = evloop_clock_ms() - c->started_ms;
	int syscall_nr = sup_describe_sandbox_kill(c, status, how, sizeof(how));

	if (c->io.fd >= 0 && c->chan.fd >= 0) {
		evloop_del(&sup->loop, &c->io);
		ipc_chan_close(&c->chan);
	}
	if (sup->stopping) {
		log_debug("%s %u (pid %d) %s", c->role, c->index, (int)c->pid, how);
		c->pid = 0;
		return;
	}
	log_warnx("%s %u (pid %d) %s; restarting", c->role, c->index, (int)c->pid, how);
	sup_tell_keyd(IPC_CHILD_EXITED, c, WIFEXITED(status) ? WEXITSTATUS(status) :
	    -WTERMSIG(status), syscall_nr);
	c->pid = 0;
	if (ran >= SUP_STABLE_MS || c->restart_delay_ms == 0)
		c->restart_delay_ms = SUPERVISOR_RESTART_DELAY_MS;
	else if ((c->restart_delay_ms *= 2) > SUPERVISOR_RESTART_DELAY_MAX)
		c->restart_delay_ms = SUPERVISOR_RESTART_DELAY_MAX;
	evloop_timer_after(&sup->loop, &c->restart, c->restart_delay_ms);
}

static struct sup_child *
sup_find(pid_t pid)
{
	if (sup->keyd.pid == pid)
		return &sup->keyd;
	for (unsigned i = 0; i < sup->cfg->workers; i++)
		if (sup->workers[i].pid == pid)
			return &sup->workers[i];
	return NULL;
}

static int
sup_children_left(void)
{
	int n = sup->keyd.pid != 0;

	for (unsigned i = 0; i < sup->cfg->workers; i++)
		n += sup->workers[i].pid != 0;
	return n;
}

static void
sup_reap(void)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct sup_child *c = sup_find(pid);
		if (c != NULL)
			sup_child_exited(c, status);
	}
	if (sup->stopping && sup_children_left() == 0)
		evloop_stop(&sup->loop);
}

/* ---------- signals and stopping ---------- */

static void
sup_kill_all(int sig, int keyd_too)
{
	for (unsigned i = 0; i < sup->cfg->workers; i++)
		if (sup->workers[i].pid > 0)
			(void)kill(sup->workers[i].pid, sig);
	if (keyd_too && sup->keyd.pid > 0)
		(void)kill(sup->keyd.pid, sig);
}

static void
sup_stop_timer_cb(struct ev_timer *t)
{
	log_warnx("children still running %d ms after SIGTERM: killing them", SUP_STOP_GRACE_MS);
	sup_kill_all(SIGKILL, 1);
}

static void
sup_stop(void)
{
	if (sup->stopping)
		return;
	sup->stopping = 1;
	log_info("stopping");
	/* Workers first (they finish their handshakes with keyd's help), keyd last. */
	sup_kill_all(SIGTERM, 0);
	if (sup->keyd.pid > 0)
		(void)kill(sup->keyd.pid, SIGTERM);
	evloop_timer_init(&sup_stop_timer, sup_stop_timer_cb, NULL);
	evloop_timer_after(&sup->loop, &sup_stop_timer, SUP_STOP_GRACE_MS);
	if (sup_children_left() == 0)
		evloop_stop(&sup->loop);
}

static void
sup_sig_cb(struct ev_io *io, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			sup_reap();
			break;
		case SIGTERM:
		case SIGINT:
			sup_stop();
			break;
		case SIGHUP:
		case SIGUSR1:
			/* Rotation and audit-log reopening are keyd's business. */
			if (sup->keyd.pid > 0)
				(void)kill(sup->keyd.pid, (int)si.ssi_signo);
			break;
		default:
			break;
		}
	}
}

static void
sup_signals(void)
{
	static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, 0 };

	signal(SIGPIPE, SIG_IGN);
	if (evloop_add_signals(&sup->loop, &sup->sig_io, sigs, sup_sig_cb) == -1)
		fatal("supervisor: signals");
}

/* keyd must have loaded every key before any worker starts; its failure is the answer. */
static int
sup_wait_keyd(void)
{
	uint64_t deadline = evloop_clock_ms() + SUP_KEYD_START_MS;
	struct ipc_msg m;
	int status, fd, err;

	/* Not the event loop: a keyd that fails now is reported, not restarted. */
	while (!sup->keyd.ready) {
		if (evloop_clock_ms() >= deadline) {
			log_warnx("keyd did not become ready within %d s", SUP_KEYD_START_MS / 1000);
			return -1;
		}
		switch (ipc_chan_recv_wait(&sup->keyd.chan, &m, &fd, &err, 100)) {
		case IPC_IO_OK:
			if (fd >= 0)
				close(fd);
			sup_child_msg(&sup->keyd, &m);
			continue;
		case IPC_IO_AGAIN:
			break;
		default:
			/* EOF or error: keyd is exiting; waitpid below says how. */
			(void)waitpid(sup->keyd.pid, &status, 0);
			goto exited;
		}
		if (waitpid(sup->keyd.pid, &status, WNOHANG) == sup->keyd.pid)
			goto exited;
	}
	return 0;
exited:
	{
		char how[96];
		sup_describe_exit(status, how, sizeof(how));
		log_warnx("keyd %s before it was ready (its message is above)", how);
		sup->keyd.pid = 0;
	}
	return -1;
}

static void
sup_cleanup(void)
{
	supervisor_link_stop(sup);
	for (size_t i = 0; i < sup->cfg->n_connectors; i++)
		if (sup->cfg->connectors[i].listen.kind == ADDR_UNIX)
			(void)unlink(sup->cfg->connectors[i].listen.path);
	for (size_t i = 0; i < sup->n_socks; i++)
		close(sup->sock_fds[i]);
	free(sup->sock_fds);
	close(sup->cfg_fd);
	close(sup->exe_fd);
	evloop_free(&sup->loop);
	config_free(sup->cfg);
}

int
supervisor_run(struct supervisor *s)
{
	sup = s;
	ipc_chan_init(&sup->link, -1);
	if (evloop_init(&sup->loop) == -1)
		fatal("supervisor: epoll");
	sup_signals();
	sandbox_supervisor_enter(sup->cfg, &sup->loop);
	sup->keyd.role = "keyd";
	evloop_timer_init(&sup->keyd.restart, sup_restart_cb, &sup->keyd);
	for (unsigned i = 0; i < sup->cfg->workers; i++) {
		sup->workers[i].role = "worker";
		sup->workers[i].index = i;
		evloop_timer_init(&sup->workers[i].restart, sup_restart_cb, &sup->workers[i]);
	}
	sup->keyd.chan.fd = -1;
	if (sup->role != SUP_ROLE_WORKERS)
		sup_spawn(&sup->keyd);
	if (sup->role != SUP_ROLE_WORKERS && sup_wait_keyd() == -1) {
		sup->stopping = 1;
		if (sup->keyd.pid > 0) {
			(void)kill(sup->keyd.pid, SIGKILL);
			(void)waitpid(sup->keyd.pid, NULL, 0);
		}
		sup_cleanup();
		return 78;   /* EX_CONFIG: the reason is in keyd's message */
	}
	for (unsigned i = 0; i < sup->cfg->workers && sup->role != SUP_ROLE_KEYD; i++) {
		sup->workers[i].chan.fd = -1;
		sup_spawn(&sup->workers[i]);
		sup_wire(&sup->workers[i]);
	}
	supervisor_link_start(sup);
	if (sup->role == SUP_ROLE_KEYD) {
		log_info("ready: keyd pid %d; workers run under their own supervisor",
		    (int)sup->keyd.pid);
		(void)sd_notify_state("READY=1");
	} else if (sup->role == SUP_ROLE_WORKERS)
		log_info("ready: %u worker%s, %zu listener%s, %zu connector%s; keyd runs under its "
		    "own supervisor", sup->cfg->workers, sup->cfg->workers == 1 ? "" : "s",
		    sup->cfg->n_listeners, sup->cfg->n_listeners == 1 ? "" : "s",
		    sup->cfg->n_connectors, sup->cfg->n_connectors == 1 ? "" : "s");
	else
		log_info("ready: keyd pid %d, %u worker%s, %zu listener%s, %zu connector%s",
		    (int)sup->keyd.pid, sup->cfg->workers, sup->cfg->workers == 1 ? "" : "s",
		    sup->cfg->n_listeners, sup->cfg->n_listeners == 1 ? "" : "s",
		    sup->cfg->n_connectors, sup->cfg->n_connectors == 1 ? "" : "s");
	if (evloop_run(&sup->loop) == -1)
		fatal("supervisor: event loop");
	log_info("stopped");
	sup_cleanup();
	return sup->exit_code;
}
