"""Session tickets: keyd makes the ticket keys, every worker has them, and keyd rotates them
(`ticket-key-lifetime`, or `redoubt rotate --tickets`), keeping the previous key for decryption
only (issue 5).

A ticket resumes on any worker; after one rotation it still resumes (the previous key decrypts
it); after two it does not (its key is gone) and the client gets a full handshake instead.
Sessions are bound to the certificate generation: a certificate rotation starts new sessions.
"""
import os
import signal
import ssl

import pytest

from helpers.procs import wait_until
from helpers.tlsclient import Resp
from rotation_helpers import StackPool

SCHEDULE_WAIT = 80           # seconds: ticket-key-lifetime 1m plus margin
VERSIONS = {"TLSv1.3": ssl.TLSVersion.TLSv1_3, "TLSv1.2": ssl.TLSVersion.TLSv1_2}


@pytest.fixture
def rot(env):
    pool = StackPool(env)
    yield pool
    pool.close()


def new_session(st, ctx):
    """A connection that completed a round trip (so a TLS 1.3 ticket arrived) and its session."""
    s = st.tls(ctx=ctx)
    r = Resp(s)
    assert r.command("PING") == "PONG"
    assert s.session is not None and s.session.has_ticket, "the server issued no ticket"
    return s, s.session


def reconnect(st, ctx, session):
    """(resumed?, open socket) for a connection offering session; it must work either way."""
    s = st.tls(ctx=ctx, session=session)
    assert Resp(s).command("PING") == "PONG"
    return s.session_reused, s


def resumes(st, ctx, session):
    reused, s = reconnect(st, ctx, session)
    s.close()
    return reused


def worker_with_connections(st):
    """Index of the one worker that holds our one open connection (closed probes may take
    a moment to leave the count)."""
    def busy():
        b = [(w["index"], w.get("connections", 0)) for w in st.status()["workers"]
             if w.get("connections", 0) > 0]
        return b if len(b) == 1 and b[0][1] == 1 else None
    return wait_until(busy, 10, what="exactly one worker with one connection")[0][0]


@pytest.mark.parametrize("version", list(VERSIONS))
def test_ticket_resumes_on_another_worker(rot, version):
    st = rot(workers=2)
    ctx = st.ctx()
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    first, session = new_session(st, ctx)
    issuer = worker_with_connections(st)
    pid = st.redoubt.children()["workers"][issuer]
    # With the issuing worker stopped, only the other one can accept the next connection.
    os.kill(pid, signal.SIGSTOP)
    try:
        reused, s = reconnect(st, ctx, session)
        assert reused, "the ticket from one worker did not resume on the other"
        busy = {w["index"]: w.get("connections") for w in st.status()["workers"]
                if w.get("reported")}
        assert busy.get(1 - issuer) == 1, (
            f"the resumed connection is not on the other worker: {busy}")
        s.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    first.close()


def test_previous_ticket_key_decrypts_until_the_next_rotation(rot):
    st = rot(workers=2)
    ctx = st.ctx()
    s, session = new_session(st, ctx)
    s.close()
    assert resumes(st, ctx, session)
    assert st.status()["tickets"]["keys"] == 1

    res = st.rotate_ok("--tickets")
    assert "ticket keys rotated" in res.stdout
    tk = st.status()["tickets"]
    assert tk["keys"] == 2 and tk["previous_age_s"] is not None
    assert resumes(st, ctx, session), "refused after one ticket-key rotation"

    st.rotate_ok("--tickets")
    assert not resumes(st, ctx, session), "resumed with a ticket whose key has expired"
    # A session made now resumes again.
    s, fresh = new_session(st, ctx)
    s.close()
    assert resumes(st, ctx, fresh)
    recs = st.audit_events("tickets.rotated")
    assert sum(1 for r in recs if r.get("source") == "control") == 2, recs


def test_certificate_rotation_starts_new_sessions(rot):
    """Documented choice: a session resumes only within its certificate generation (so a
    client revoked by a new CRL cannot resume a session it made before)."""
    st = rot(workers=1)
    ctx = st.ctx()
    s, session = new_session(st, ctx)
    s.close()
    assert resumes(st, ctx, session)
    st.install_new("sess")
    st.rotate_ok()
    assert not resumes(st, ctx, session)
    s, fresh = new_session(st, ctx)
    s.close()
    assert resumes(st, ctx, fresh)


def test_ticket_keys_rotate_on_schedule(rot):
    st = rot(workers=2, global_extra={"ticket-key-lifetime": "1m"})
    ctx = st.ctx()
    s, session = new_session(st, ctx)
    s.close()
    tk = st.status()["tickets"]
    assert tk["lifetime_s"] == 60 and tk["keys"] == 1 and tk["next_rotation_s"] <= 60
    wait_until(lambda: st.status()["tickets"]["keys"] == 2, SCHEDULE_WAIT, interval=1,
               what="the scheduled ticket-key rotation")
    assert resumes(st, ctx, session), "a ticket of the previous key was refused"
    recs = st.audit_events("tickets.rotated")
    assert any(r.get("source") == "scheduled" for r in recs), recs
