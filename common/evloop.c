/*
 * epoll event loop with a timer heap and deferred calls.
 */
#include "common/evloop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"

uint64_t
evloop_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int
evloop_init(struct evloop *l)
{
	memset(l, 0, sizeof(*l));
	TAILQ_INIT(&l->deferred);
	TAILQ_INIT(&l->running);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd == -1)
		return -1;
	l->now_ms = evloop_clock_ms();
	return 0;
}

void
evloop_free(struct evloop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
	free(l->heap);
	l->heap = NULL;
	l->heap_len = l->heap_cap = 0;
}

int
evloop_add(struct evloop *l, struct ev_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

int
evloop_mod(struct evloop *l, struct ev_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev);
}

void
evloop_del(struct evloop *l, struct ev_io *io)
{
	/* Closing the fd removes it too; an explicit delete keeps dup'ed fds from firing. */
	if (io->fd >= 0 && epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL) == -1 &&
	    errno != ENOENT && errno != EBADF)
		log_warn("evloop: epoll_ctl(DEL, %d)", io->fd);
}

int
evloop_add_signals(struct evloop *l, struct ev_io *io, const int *sigs,
    void (*cb)(struct ev_io *, uint32_t))
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	for (; *sigs != 0; sigs++)
		sigaddset(&set, *sigs);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1 ||
	    (fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) == -1)
		return -1;
	io->fd = fd;
	io->cb = cb;
	return evloop_add(l, io, EPOLLIN);
}

/* --- timers: binary min-heap on when_ms, 1-based, each timer knows its slot --- */

static void
heap_place(struct evloop *l, size_t i, struct ev_timer *t)
{
	l->heap[i] = t;
	t->heap_idx = i;
}

static void
heap_up(struct evloop *l, size_t i)
{
	struct ev_timer *t = l->heap[i];

	while (i > 1 && l->heap[i / 2]->when_ms > t->when_ms) {
		heap_place(l, i, l->heap[i / 2]);
		i /= 2;
	}
	heap_place(l, i, t);
}

static void
heap_down(struct evloop *l, size_t i)
{
	struct ev_timer *t = l->heap[i];

	for (;;) {
		size_t c = i * 2;
		if (c > l->heap_len)
			break;
		if (c + 1 <= l->heap_len && l->heap[c + 1]->when_ms < l->heap[c]->when_ms)
			c++;
		if (l->heap[c]->when_ms >= t->when_ms)
			break;
		heap_place(l, i, l->heap[c]);
		i = c;
	}
	heap_place(l, i, t);
}

void
evloop_timer_init(struct ev_timer *t, void (*cb)(struct ev_timer *), void *arg)
{
	t->when_ms = 0;
	t->heap_idx = 0;
	t->cb = cb;
	t->arg = arg;
}

void
evloop_timer_cancel(struct evloop *l, struct ev_timer *t)
{
	size_t i = t->heap_idx;
	struct ev_timer *last;

	if (i == 0)
		return;
	last = l->heap[l->heap_len--];
	t->heap_idx = 0;
	if (last == t)
		return;
	heap_place(l, i, last);
	heap_up(l, i);
	heap_down(l, last->heap_idx);
}

void
evloop_timer_set(struct evloop *l, struct ev_timer *t, uint64_t when_ms)
{
	evloop_timer_cancel(l, t);
	if (l->heap_len + 1 >= l->heap_cap) {
		size_t ncap = l->heap_cap ? l->heap_cap * 2 : 64;
		struct ev_timer **nh = realloc(l->heap, ncap * sizeof(struct ev_timer *));
		if (nh == NULL)
			fatal("evloop: timer heap of %zu entries", ncap);
		l->heap = nh;
		l->heap_cap = ncap;
	}
	t->when_ms = when_ms;
	l->heap[++l->heap_len] = t;
	heap_up(l, l->heap_len);
}

void
evloop_timer_after(struct evloop *l, struct ev_timer *t, uint64_t delay_ms)
{
	evloop_timer_set(l, t, l->now_ms + delay_ms);
}

static void
evloop_run_timers(struct evloop *l)
{
	while (l->heap_len > 0 && l->heap[1]->when_ms <= l->now_ms) {
		struct ev_timer *t = l->heap[1];
		evloop_timer_cancel(l, t);
		t->cb(t);
	}
}

/* --- deferred calls --- */

void
evloop_defer_init(struct ev_defer *d, void (*cb)(struct ev_defer *), void *arg)
{
	d->queued = 0;
	d->cb = cb;
	d->arg = arg;
}

void
evloop_defer(struct evloop *l, struct ev_defer *d)
{
	if (d->queued)
		return;
	d->queued = 1;
	TAILQ_INSERT_TAIL(&l->deferred, d, entry);
}

void
evloop_defer_cancel(struct evloop *l, struct ev_defer *d)
{
	if (d->queued == 1)
		TAILQ_REMOVE(&l->deferred, d, entry);
	else if (d->queued == 2)
		TAILQ_REMOVE(&l->running, d, entry);
	d->queued = 0;
}

static void
evloop_run_deferred(struct evloop *l)
{
	struct ev_defer *d;

	/*
	 * Calls queued while running go to the next round, so a busy connection cannot starve
	 * the loop; a call may cancel (or free the owner of) another call of this round.
	 */
	TAILQ_CONCAT(&l->running, &l->deferred, entry);
	TAILQ_FOREACH(d, &l->running, entry)
		d->queued = 2;
	while ((d = TAILQ_FIRST(&l->running)) != NULL) {
		TAILQ_REMOVE(&l->running, d, entry);
		d->queued = 0;
		d->cb(d);
	}
}

int
evloop_run_once(struct evloop *l, int max_wait_ms)
{
	struct epoll_event evs[EPOLL_EVENTS_MAX];
	int timeout = max_wait_ms, n;

	if (!TAILQ_EMPTY(&l->deferred))
		timeout = 0;
	else if (l->heap_len > 0) {
		uint64_t now = evloop_clock_ms();
		uint64_t due = l->heap[1]->when_ms;
		int until = due <= now ? 0 : (due - now > 60000 ? 60000 : (int)(due - now));
		if (timeout < 0 || until < timeout)
			timeout = until;
	}
	n = epoll_wait(l->epfd, evs, EPOLL_EVENTS_MAX, timeout);
	if (n == -1 && errno != EINTR)
		return -1;
	l->iterations++;
	l->now_ms = evloop_clock_ms();
	for (int i = 0; i < n; i++) {
		struct ev_io *io = evs[i].data.ptr;
		io->cb(io, evs[i].events);
	}
	evloop_run_timers(l);
	evloop_run_deferred(l);
	return 0;
}

int
evloop_run(struct evloop *l)
{
	while (!l->stop)
		if (evloop_run_once(l, -1) == -1)
			return -1;
	return 0;
}

void
evloop_stop(struct evloop *l)
{
	l->stop = 1;
}
