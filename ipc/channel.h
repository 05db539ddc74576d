/*
 * A non-blocking SEQPACKET channel with a bounded outbound queue, so neither keyd nor a worker
 * ever blocks on a peer that does not read.  One frame per datagram; an optional descriptor
 * travels with a frame as SCM_RIGHTS.
 */
#ifndef REDOUBT_IPC_CHANNEL_H
#define REDOUBT_IPC_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "ipc/ipc.h"

#define IPC_QUEUE_MAX 8192   /* queued outbound frames before the peer counts as stuck */

struct ipc_qframe;

struct ipc_chan {
	int                 fd;
	struct ipc_qframe  *q_head, *q_tail;
	size_t              q_len;
};

enum ipc_io {
	IPC_IO_OK = 0,    /* a frame was received / the frame was sent or queued */
	IPC_IO_AGAIN,     /* recv: nothing to read now */
	IPC_IO_EOF,       /* peer closed */
	IPC_IO_SYSERR,    /* errno says why */
	IPC_IO_BADMSG,    /* recv: a frame that does not decode (*err = enum ipc_codec_err);
	                     send: the message does not encode */
	IPC_IO_FULL       /* send: queue at IPC_QUEUE_MAX; the peer is stuck */
};

void ipc_chan_init(struct ipc_chan *c, int fd);
/* Closes the descriptor and drops queued frames (closing any queued descriptors). */
void ipc_chan_close(struct ipc_chan *c);

/*
 * Sends m (with pass_fd >= 0 attached; ownership of pass_fd passes to the channel, which
 * closes it once sent or dropped).  Queues when the socket is full.
 */
enum ipc_io ipc_chan_send(struct ipc_chan *c, const struct ipc_msg *m, int pass_fd);
/* Writes queued frames until the socket is full.  IPC_IO_OK when the queue is empty. */
enum ipc_io ipc_chan_flush(struct ipc_chan *c);
int ipc_chan_has_queued(const struct ipc_chan *c);

/*
 * Receives one frame.  *got_fd is a descriptor that came with it, or -1 (a frame carrying
 * more than one descriptor is IPC_IO_BADMSG and every received descriptor is closed).
 * On IPC_IO_BADMSG, *err is the codec error.  A frame larger than IPC_FRAME_MAX is
 * IPC_IO_BADMSG / IPC_E_OVERSIZE (detected with MSG_TRUNC, never buffered).
 */
enum ipc_io ipc_chan_recv(struct ipc_chan *c, struct ipc_msg *m, int *got_fd, int *err);

/* Blocking helper for start-up and tests: waits up to timeout_ms for one frame. */
enum ipc_io ipc_chan_recv_wait(struct ipc_chan *c, struct ipc_msg *m, int *got_fd, int *err,
    int timeout_ms);

#endif
