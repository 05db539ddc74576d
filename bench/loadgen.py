#!/usr/bin/python3
"""Bounded TLS load generator for the handshake, resumption and idle-connection figures.

redis-benchmark cannot resume TLS sessions and cannot hold connections open on command, so
these three measurements use this small client (Python 3 standard library only).

  loadgen.py handshake --port P --cafile CA [--resume] --count N --duration S --threads T
      Each request is one new TCP connection: TLS handshake (full, or resumed with the
      session of the thread's previous connection when --resume), PING, +PONG, close.
  loadgen.py hold --port P --cafile CA --steps 1000,10000 --duration S --threads T
      Opens connections (handshake + PING each) and keeps them idle; at each step prints
      "HOLD n" and waits for one line on stdin before going on; then closes them all.

Protocol with the harness (bench.py), so that client start-up and warm-up stay outside the
measured window: the client prints "READY" once set up (after one warm-up connection per
thread), waits for a line on stdin, runs, and prints one JSON object as its last line.
Every loop is bounded by a count and by a deadline; every socket has a timeout.
"""

import argparse
import json
import resource
import socket
import ssl
import sys
import threading
import time

SOCKET_TIMEOUT_S = 10.0     # no single connect/handshake/reply may stall a thread longer
MAX_COUNT = 1_000_000       # sanity bound on any loop, whatever the caller asks
PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"


def make_context(cafile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def read_exact(sock, want):
    buf = b""
    while len(buf) < len(want):
        chunk = sock.recv(len(want) - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection before replying")
        buf += chunk
    if buf != want:
        raise ConnectionError("unexpected reply %r" % buf[:40])


def one_connection(ctx, host, port, session):
    """Connect, handshake, PING. Returns the open TLS socket."""
    raw = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=host, session=session)
    except BaseException:
        raw.close()
        raise
    try:
        tls.sendall(PING)
        # Reading the reply also processes the TLS 1.3 NewSessionTicket messages, so
        # tls.session is resumable afterwards.
        read_exact(tls, PONG)
    except BaseException:
        tls.close()
        raise
    return tls


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[idx]


def wait_go():
    print("READY", flush=True)
    if not sys.stdin.readline():
        sys.exit("loadgen: stdin closed before GO")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        sys.exit("loadgen: RLIMIT_NOFILE is %d, need %d (raise it with ulimit -n)" % (soft, need))


def cmd_handshake(args):
    ctx = make_context(args.cafile)
    lock = threading.Lock()
    state = {"issued": 0}

    def take_ticket():
        with lock:
            if state["issued"] >= args.count:
                return False
            state["issued"] += 1
            return True

    class Worker:
        def __init__(self):
            self.session = None
            self.lat = []
            self.ok = 0
            self.reused = 0
            self.errors = 0
            self.last_error = None
            self.version = None
            self.cipher = None

        def connect(self):
            tls = one_connection(ctx, args.host, args.port, self.session if args.resume else None)
            self.version = tls.version()
            self.cipher = tls.cipher()[0]
            reused = tls.session_reused
            if args.resume:
                self.session = tls.session
            tls.close()
            return reused

        def warm(self):
            # One connection outside the measured window: gives --resume its first session.
            try:
                self.connect()
            except (OSError, ssl.SSLError) as e:
                self.last_error = "warm-up: %s" % e

        def run(self, deadline):
            while time.monotonic() < deadline and take_ticket():
                t0 = time.perf_counter()
                try:
                    reused = self.connect()
                except (OSError, ssl.SSLError) as e:
                    self.errors += 1
                    self.last_error = str(e)
                    continue
                self.lat.append(time.perf_counter() - t0)
                self.ok += 1
                self.reused += 1 if reused else 0

    workers = [Worker() for _ in range(args.threads)]
    for w in workers:
        w.warm()
    wait_go()
    t_start = time.monotonic()
    cpu0 = time.process_time()
    deadline = t_start + args.duration
    threads = [threading.Thread(target=w.run, args=(deadline,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    lat = sorted(x for w in workers for x in w.lat)
    ok = sum(w.ok for w in workers)
    errors = sum(w.errors for w in workers)
    out = {
        "mode": "resume" if args.resume else "full",
        "requested": args.count,
        "ok": ok,
        "errors": errors,
        "reused": sum(w.reused for w in workers),
        "wall_s": wall,
        "ops_per_s": ok / wall if wall > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1e3 if lat else None,
        "p99_ms": percentile(lat, 0.99) * 1e3 if lat else None,
        "client_cpu_s": time.process_time() - cpu0,
        "version": next((w.version for w in workers if w.version), None),
        "cipher": next((w.cipher for w in workers if w.cipher), None),
        "last_error": next((w.last_error for w in workers if w.last_error), None),
        "timed_out": ok + errors < args.count,
    }
    print(json.dumps(out), flush=True)
    return 0


def cmd_hold(args):
    steps = sorted(int(s) for s in args.steps.split(","))
    raise_nofile(steps[-1] + 64)
    ctx = make_context(args.cafile)
    held = []
    lock = threading.Lock()
    errors = [0]
    last_error = [None]
    deadline = time.monotonic() + args.duration
    wait_go()

    def open_until(target):
        def worker():
            while time.monotonic() < deadline:
                with lock:
                    if len(held) + inflight[0] >= target:
                        return
                    inflight[0] += 1
                try:
                    tls = one_connection(ctx, args.host, args.port, None)
                except (OSError, ssl.SSLError) as e:
                    with lock:
                        inflight[0] -= 1
                        errors[0] += 1
                        last_error[0] = str(e)
                        if errors[0] > args.max_errors:
                            return
                    continue
                with lock:
                    inflight[0] -= 1
                    held.append(tls)

        inflight = [0]
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    reached = []
    t0 = time.monotonic()
    for n in steps:
        open_until(n)
        reached.append({"target": n, "held": len(held), "t_s": time.monotonic() - t0})
        print("HOLD %d %d" % (n, len(held)), flush=True)
        if not sys.stdin.readline():
            break
    for tls in held:
        try:
            tls.close()
        except OSError:
            pass
    print(json.dumps({"steps": reached, "errors": errors[0], "last_error": last_error[0],
                      "client_cpu_s": time.process_time()}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("handshake", "hold"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--cafile", required=True)
        p.add_argument("--threads", type=int, default=8)
        p.add_argument("--duration", type=float, default=10.0, help="hard deadline, seconds")
    h = sub.choices["handshake"]
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--resume", action="store_true")
    o = sub.choices["hold"]
    o.add_argument("--steps", default="1000,10000")
    o.add_argument("--max-errors", type=int, default=100)
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("loadgen: only loopback targets are allowed")
    if args.cmd == "handshake" and not 0 < args.count <= MAX_COUNT:
        sys.exit("loadgen: --count must be in 1..%d" % MAX_COUNT)
    if args.cmd == "hold" and max(int(s) for s in args.steps.split(",")) > MAX_COUNT:
        sys.exit("loadgen: --steps above %d" % MAX_COUNT)
    return cmd_handshake(args) if args.cmd == "handshake" else cmd_hold(args)


if __name__ == "__main__":
    sys.exit(main())
