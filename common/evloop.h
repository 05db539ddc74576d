/*
 * A small epoll event loop shared by keyd and the workers: edge-triggered descriptor
 * handlers, one-shot timers in a binary min-heap, and a deferred-call list that runs after
 * the current batch of events (how an async TLS job that keyd completed gets resumed
 * outside any OpenSSL call).  Single-threaded by design.
 */
#ifndef REDOUBT_EVLOOP_H
#define REDOUBT_EVLOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct evloop;

struct ev_io {
	int    fd;
	void (*cb)(struct ev_io *io, uint32_t events);
	void  *arg;
};

struct ev_timer {
	uint64_t when_ms;        /* monotonic milliseconds */
	size_t   heap_idx;       /* 0 = not armed; else 1-based heap position */
	void   (*cb)(struct ev_timer *t);
	void    *arg;
};

struct ev_defer {
	TAILQ_ENTRY(ev_defer) entry;
	int    queued;           /* 0, or the list it is on: 1 deferred, 2 running */
	void (*cb)(struct ev_defer *d);
	void  *arg;
};

TAILQ_HEAD(ev_defer_list, ev_defer);

struct evloop {
	int       epfd;
	int       stop;
	uint64_t  now_ms;        /* cached at each wake-up */
	uint64_t  iterations;    /* lets a provider tell a real resume from a spurious one */
	struct ev_timer **heap;  /* 1-based */
	size_t    heap_len, heap_cap;
	struct ev_defer_list deferred;
	struct ev_defer_list running;  /* the batch being run; cancel must find entries here too */
};

int  evloop_init(struct evloop *l);
void evloop_free(struct evloop *l);
uint64_t evloop_clock_ms(void);

/* events: EPOLLIN / EPOLLOUT / EPOLLET / EPOLLEXCLUSIVE ... */
int  evloop_add(struct evloop *l, struct ev_io *io, uint32_t events);
int  evloop_mod(struct evloop *l, struct ev_io *io, uint32_t events);
void evloop_del(struct evloop *l, struct ev_io *io);

void evloop_timer_init(struct ev_timer *t, void (*cb)(struct ev_timer *), void *arg);
void evloop_timer_set(struct evloop *l, struct ev_timer *t, uint64_t when_ms);
void evloop_timer_after(struct evloop *l, struct ev_timer *t, uint64_t delay_ms);
void evloop_timer_cancel(struct evloop *l, struct ev_timer *t);
static inline int evloop_timer_armed(const struct ev_timer *t) { return t->heap_idx != 0; }

void evloop_defer_init(struct ev_defer *d, void (*cb)(struct ev_defer *), void *arg);
/* Queues d once; queuing an already queued d is a no-op. */
void evloop_defer(struct evloop *l, struct ev_defer *d);
void evloop_defer_cancel(struct evloop *l, struct ev_defer *d);

/*
 * Delivers the listed signals (0-terminated) through a signalfd registered with cb, instead
 * of asynchronous handlers: they are blocked, then read by the loop like any event.
 */
int  evloop_add_signals(struct evloop *l, struct ev_io *io, const int *sigs,
    void (*cb)(struct ev_io *, uint32_t));

/* One wait + dispatch + timers + deferred calls.  max_wait_ms < 0 waits for the next timer. */
int  evloop_run_once(struct evloop *l, int max_wait_ms);
/* Runs until evloop_stop(). */
int  evloop_run(struct evloop *l);
void evloop_stop(struct evloop *l);

#endif
