"""Per-worker resource limits (issue 4): max-connections, handshake-timeout, idle-timeout and the
fixed per-connection buffers (CONN_BUF_SIZE per direction).

Each limit is hit on purpose.  The worker must refuse or drop cleanly (never a crash: the same
pid throughout), count and log it (rate-limited where a flood is possible), and keep serving
every other client.
"""
import os
import re
import resource
import select
import socket
import ssl
import time

import pytest

from helpers.procs import wait_until
from helpers.tlsclient import attempt

MAX_CONNS = 1000          # max-connections in the flood test
FLOOD = 5000              # idle TCP connections opened against it
HANDSHAKE_TIMEOUT = 1.0   # seconds, handshake-timeout in the slow-loris test
IDLE_TIMEOUT = 1.0        # seconds, idle-timeout in the idle test
TIMER_SLACK = 1.5         # seconds a timeout may fire late on a loaded 2-core machine
LINGER_S = 2.5            # LINGER_TIMEOUT_MS (2 s) and a margin: earlier probes are gone by then


def _status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _rss_kib(pid):
    return int(_status(pid)["VmRSS"].split()[0])


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, FLOOD + 2048)
    if want < FLOOD + 256:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for {FLOOD} client sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _closed_by_server(s):
    """True when the server closed s (EOF or reset); False while it is open and silent."""
    try:
        return s.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, ConnectionAbortedError, ConnectionRefusedError):
        return True


def test_max_connections_refuses_cleanly_above_the_limit(make_stack, many_fds):
    st = make_stack(workers=1, global_extra={"max-connections": str(MAX_CONNS),
                                             "handshake-timeout": "60s"})
    worker = st.redoubt.worker_pids()[0]
    time.sleep(LINGER_S)
    r = st.resp(timeout=10)
    cid = r.command("CLIENT", "ID")
    offset = st.redoubt.log_size()
    t0 = time.monotonic()
    socks = []
    try:
        for i in range(FLOOD):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", st.port))
            socks.append(s)
            if i % 250 == 249:
                time.sleep(0.02)   # let the worker drain its backlog (4096)

        # Wait until every connection has either been refused (closed by the server) or sits
        # admitted and silent, and the split no longer changes.
        poller = select.poll()
        for s in socks:
            poller.register(s, select.POLLIN)
        closed = set()
        stable_since, last = time.monotonic(), -1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for fd, _ in poller.poll(200):
                poller.unregister(fd)
                closed.add(fd)
            if len(closed) != last:
                last, stable_since = len(closed), time.monotonic()
            elif len(closed) >= FLOOD - MAX_CONNS and time.monotonic() - stable_since > 2:
                break
        admitted = [s for s in socks if s.fileno() not in closed]
        assert all(_closed_by_server(s) for s in socks if s.fileno() in closed)
        # The worker's limit counts every connection, the TLS client above included.
        assert len(admitted) == MAX_CONNS - 1, (
            f"{len(admitted)} connections admitted, {len(closed)} refused; expected "
            f"{MAX_CONNS - 1} admitted next to the TLS client")
        assert not any(_closed_by_server(s) for s in admitted[:50])

        # A new client above the limit: refused at once, never left hanging.
        outcome, detail, secs = attempt(st.port, st.ctx(), timeout=5)
        assert outcome == "refused" and secs < 2, (outcome, detail, secs)
        # The existing client keeps working, on the same backend session.
        assert r.command("CLIENT", "ID") == cid
        assert r.command("SET", "during-flood", "1") == "OK"
        assert r.command("GET", "during-flood") == b"1"
        # Counted and logged, but not a line per refusal: at most one per second.
        log = st.redoubt.log_since(offset)
        refusals = re.findall(r"worker 0: clients: refusing .*max-connections reached", log)
        elapsed = time.monotonic() - t0
        assert 1 <= len(refusals) <= elapsed + 2, (len(refusals), elapsed, log[-2000:])
        assert st.redoubt.worker_pids() == [worker], "the worker was restarted"
        assert "was killed" not in log and "exited with" not in log, log[-2000:]
    finally:
        for s in socks:
            s.close()
    # Below the limit again: new clients are served.
    wait_until(lambda: attempt(st.port, st.ctx(), timeout=5)[0] == "ok", 15, interval=0.2,
               what="a new client to be admitted after the flood ended")
    assert r.command("CLIENT", "ID") == cid
    r.sock.close()
    assert st.redoubt.worker_pids() == [worker]


def _wait_closed(s, limit, keepalive=None):
    """Seconds until the server closes s (a raw or TLS socket), at most limit; keepalive() is
    called every 0.2 s meanwhile (None when it may stop, e.g. the peer went away)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        ready, _, _ = select.select([s], [], [], 0.2)
        if ready:
            try:
                data = s.recv(4096)
            except (ConnectionResetError, ssl.SSLError, OSError):
                return time.monotonic() - t0
            if not data:
                return time.monotonic() - t0
        elif keepalive is not None:
            try:
                keepalive()
            except OSError:
                return time.monotonic() - t0
    return None


def test_slow_loris_is_dropped_at_the_handshake_timeout(make_stack):
    st = make_stack(workers=1, global_extra={"handshake-timeout": f"{int(HANDSHAKE_TIMEOUT)}s"})
    worker = st.redoubt.worker_pids()[0]
    r = st.resp(timeout=5)
    cid = r.command("CLIENT", "ID")
    offset = st.redoubt.log_size()
    # 1. Connects and says nothing.
    silent = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    # 2. Starts a ClientHello (record header claiming 512 bytes) and trickles a byte at a time.
    trickle = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    trickle.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    try:
        t_silent = _wait_closed(silent, HANDSHAKE_TIMEOUT + 5)
        t_trickle = _wait_closed(trickle, HANDSHAKE_TIMEOUT + 5,
                                 keepalive=lambda: trickle.send(b"\x00"))
    finally:
        silent.close()
        trickle.close()
    for what, t in (("silent", t_silent), ("trickling", t_trickle)):
        assert t is not None, f"the {what} client was never dropped"
        assert t <= HANDSHAKE_TIMEOUT + TIMER_SLACK, f"the {what} client was dropped after {t:.2f}s"
    # (the trickling client started slightly later, but both run against the same clock)
    assert t_silent >= HANDSHAKE_TIMEOUT - 0.2, f"dropped too early ({t_silent:.2f}s)"
    log = st.redoubt.log_since(offset)
    assert len(re.findall(r"handshake with 127\.0\.0\.1:\d+ timed out", log)) >= 2, log
    # Everyone else is fine; a client that does its handshake in time is served.
    assert r.command("CLIENT", "ID") == cid
    outcome, detail, _ = attempt(st.port, st.ctx(), timeout=5)
    assert outcome == "ok", detail
    assert st.redoubt.worker_pids() == [worker]
    r.sock.close()


def test_idle_connection_is_closed_at_the_idle_timeout(make_stack):
    st = make_stack(workers=1, global_extra={"idle-timeout": f"{int(IDLE_TIMEOUT)}s"})
    worker = st.redoubt.worker_pids()[0]
    idle = st.tls(timeout=10)
    busy = st.resp(timeout=5)
    cid = busy.command("CLIENT", "ID")
    idle.sendall(b"PING\r\n")
    assert idle.recv(64) == b"+PONG\r\n"

    def keep_busy():
        assert busy.command("PING") == "PONG"
    t = _wait_closed(idle, IDLE_TIMEOUT + 5, keepalive=keep_busy)
    idle.close()
    assert t is not None, "the idle connection was never closed"
    assert IDLE_TIMEOUT - 0.2 <= t <= IDLE_TIMEOUT + TIMER_SLACK, f"closed after {t:.2f}s"
    # The busy one was never idle for a second: it is still there, on the same session.
    time.sleep(0.3)
    assert busy.command("CLIENT", "ID") == cid
    # Counted in the audit trail with its reason.
    wait_until(lambda: any(rec.get("event") == "connection.closed" and
                           "idle" in str(rec.get("reason", "")) for rec in _audit(st)), 5,
               what="a connection.closed audit record for the idle timeout")
    assert st.redoubt.worker_pids() == [worker]
    busy.sock.close()


def _audit(st):
    import json
    out = []
    with open(os.path.join(st.dir, "audit", "audit.jsonl")) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_per_connection_buffers_are_bounded(make_stack):
    """A client that asks for 64 MiB and reads none of it costs the worker at most its two
    fixed relay buffers: redoubt stops reading from the backend, it never queues."""
    st = make_stack(workers=1)
    worker = st.redoubt.worker_pids()[0]
    value = os.urandom(512) * 2048                    # 1 MiB
    d = st.direct()
    d.set("big", value)
    d.close()
    rss0 = _rss_kib(worker)
    s = st.tls(timeout=30)
    s.sendall(b"GET big\r\n" * 64)
    time.sleep(2)
    rss1 = _rss_kib(worker)
    assert rss1 - rss0 < 4096, f"worker RSS grew by {rss1 - rss0} KiB with a non-reading client"
    # Other clients do not wait behind it.
    outcome, detail, secs = attempt(st.port, st.ctx(), timeout=5)
    assert outcome == "ok" and secs < 2, (outcome, detail, secs)
    # Nothing was lost either: every reply arrives once the client reads.
    want = 64 * (len(b"$1048576\r\n") + len(value) + 2)
    got = 0
    while got < want:
        chunk = s.recv(1 << 16)
        assert chunk, f"EOF after {got} of {want} bytes"
        got += len(chunk)
    assert got == want
    s.close()
    assert st.redoubt.worker_pids() == [worker]


def test_malformed_client_hello_never_crashes_the_worker(make_stack):
    """A ClientHello cut short (a record that holds a truncated handshake message) fails the
    handshake before OpenSSL has a session: the worker refuses it and lives on."""
    st = make_stack(workers=1)
    worker = st.redoubt.worker_pids()[0]
    r = st.resp(timeout=5)
    cid = r.command("CLIENT", "ID")
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
        s.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff")
        assert _wait_closed(s, 5) is not None, "the malformed handshake was never refused"
        s.close()
    time.sleep(0.3)
    assert st.redoubt.worker_pids() == [worker], (
        f"the worker was restarted:\n{st.redoubt.log_tail()[-1500:]}")
    assert r.command("CLIENT", "ID") == cid
    r.sock.close()
