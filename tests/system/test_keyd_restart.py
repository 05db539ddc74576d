"""keyd going away (SIGKILL) or freezing (SIGSTOP) during a run.

Established TLS sessions need no signature, so they keep working; new handshakes need keyd and
must fail fast (never hang) while it is gone, and work again once it is back.
"""
import os
import signal
import time


from helpers.procs import pid_alive, wait_until
from helpers.tlsclient import attempt

KEYD_TIMEOUT = 1.0          # keyd-timeout in the stacks below
FAIL_MARGIN = 1.5           # seconds allowed beyond keyd-timeout for a failed handshake
BACK_WITHIN = 8.0           # seconds after keyd is back (restart delay ~200 ms) to work again


def _established(st):
    """A session through redoubt and its backend client id (to prove it is the same one later)."""
    r = st.resp(timeout=5)
    assert r.command("SET", "before", "1") == "OK"
    return r, r.command("CLIENT", "ID")


def _still_works(r, cid, tag):
    assert r.command("CLIENT", "ID") == cid, "the established session was replaced"
    assert r.command("SET", f"during:{tag}", tag) == "OK"
    assert r.command("GET", f"during:{tag}") == tag.encode()


def test_kill_keyd(make_stack):
    st = make_stack(keyd_timeout="1s")
    r, cid = _established(st)
    old = st.redoubt.keyd_pid()
    assert old is not None
    ctx = st.ctx()
    os.kill(old, signal.SIGKILL)
    t_kill = time.monotonic()
    log = []
    back_ok = False
    while time.monotonic() - t_kill < 15:
        outcome, detail, secs = attempt(st.port, ctx, timeout=KEYD_TIMEOUT + 5)
        log.append((round(time.monotonic() - t_kill, 3), outcome, round(secs, 3), repr(detail)))
        assert outcome != "hang", f"a handshake hung while keyd was down: {log}"
        assert secs < KEYD_TIMEOUT + FAIL_MARGIN, f"a handshake took {secs:.2f}s: {log}"
        _still_works(r, cid, str(len(log)))
        new = st.redoubt.keyd_pid()
        if outcome == "ok" and new not in (None, old):
            back_ok = True
            break
        time.sleep(0.05)
    assert back_ok, f"handshakes did not work again after keyd was killed: {log}"
    # The supervisor waits ~200 ms before restarting keyd: the first attempts fall in that gap
    # and must have failed (fast, checked above) rather than succeeded without a keyd.
    assert log[0][1] == "refused", f"a handshake succeeded with keyd dead: {log}"
    assert time.monotonic() - t_kill < BACK_WITHIN, f"took too long to recover: {log}"
    assert not pid_alive(old)
    # Every worker is served by the new keyd: several handshakes in a row succeed.
    for _ in range(6):
        outcome, detail, _ = attempt(st.port, ctx, timeout=5)
        assert outcome == "ok", detail
    _still_works(r, cid, "after")
    r.sock.close()
    st.redoubt.check_alive()


def test_kill_keyd_twice(make_stack):
    """A second crash is handled like the first (the supervisor keeps restarting keyd)."""
    st = make_stack(keyd_timeout="1s")
    r, cid = _established(st)
    for round_ in range(2):
        old = st.redoubt.keyd_pid()
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: st.redoubt.keyd_pid() not in (None, old), 10,
                   what=f"the supervisor to restart keyd (round {round_})")
        wait_until(lambda: attempt(st.port, st.ctx(), timeout=KEYD_TIMEOUT + 3)[0] == "ok", 10,
                   interval=0.1, what="handshakes to work with the restarted keyd")
        _still_works(r, cid, f"r{round_}")
    r.sock.close()


def test_sigstop_keyd(make_stack):
    st = make_stack(keyd_timeout="1s")
    r, cid = _established(st)
    keyd = st.redoubt.keyd_pid()
    ctx = st.ctx()
    os.kill(keyd, signal.SIGSTOP)
    try:
        results = []
        for i in range(3):
            outcome, detail, secs = attempt(st.port, ctx, timeout=KEYD_TIMEOUT + 5)
            results.append((outcome, round(secs, 3), repr(detail)))
            assert outcome == "refused", f"handshake with keyd stopped: {results}"
            assert secs < KEYD_TIMEOUT + FAIL_MARGIN, f"failure took {secs:.2f}s: {results}"
            _still_works(r, cid, f"stopped{i}")
    finally:
        os.kill(keyd, signal.SIGCONT)
    t_cont = time.monotonic()
    wait_until(lambda: attempt(st.port, ctx, timeout=KEYD_TIMEOUT + 3)[0] == "ok", BACK_WITHIN,
               interval=0.1, what="handshakes to work after SIGCONT of keyd")
    for _ in range(6):
        outcome, detail, _ = attempt(st.port, ctx, timeout=5)
        assert outcome == "ok", detail
    _still_works(r, cid, "after")
    assert time.monotonic() - t_cont < BACK_WITHIN
    r.sock.close()
    st.redoubt.check_alive()


def test_parallel_handshakes_while_keyd_stopped_do_not_block_sessions(make_stack):
    """Handshakes waiting for a frozen keyd must not stall traffic on established sessions
    (the worker's event loop keeps serving them)."""
    import threading
    st = make_stack(keyd_timeout="1s", workers=1)
    r, cid = _established(st)
    keyd = st.redoubt.keyd_pid()
    os.kill(keyd, signal.SIGSTOP)
    outcomes = []
    try:
        threads = [threading.Thread(target=lambda: outcomes.append(
            attempt(st.port, st.ctx(), timeout=KEYD_TIMEOUT + 5)), daemon=True)
            for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)         # the handshakes are now waiting for keyd
        t0 = time.monotonic()
        for i in range(20):
            _still_works(r, cid, f"p{i}")
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"20 round trips took {elapsed:.2f}s while handshakes waited"
        for t in threads:
            t.join(KEYD_TIMEOUT + FAIL_MARGIN + 2)
        assert all(not t.is_alive() for t in threads), "a handshake hung"
        assert [o[0] for o in outcomes] == ["refused"] * 4, outcomes
    finally:
        os.kill(keyd, signal.SIGCONT)
    wait_until(lambda: attempt(st.port, st.ctx(), timeout=KEYD_TIMEOUT + 3)[0] == "ok",
               BACK_WITHIN, interval=0.1, what="handshakes to work after SIGCONT of keyd")
    r.sock.close()
