"""Revocation: `crl = FILE` on an identity, a listener or a connector; checked on inbound
client certificates and on the peers connectors dial; reloaded with rotation (issue 5).

A revoked client is refused with a TLS alert and a log line that says "certificate revoked";
clients already connected, and clients that are not revoked, keep working.
"""
import json
import os
import ssl

import pytest
import redis

from helpers.procs import free_port, wait_until
from helpers.tlsclient import attempt
from rotation_helpers import StackPool, ca_crl, ca_revoke, install_file, works

CLIENT_SANS = ["DNS:revoked-client.test"]


@pytest.fixture
def rot(env):
    pool = StackPool(env)
    yield pool
    pool.close()


def new_client(env, tag, ca=None):
    """A client certificate of its own (so revoking it touches no other test)."""
    ca = ca or env.certs("p256").ca
    name = f"client-{tag}-{os.getpid()}-{os.urandom(3).hex()}"
    return ca.issue(os.path.join(ca.dir, "issued"), name, f"{name}.test",
                    [f"DNS:{name}.test"], server=False, client=True)


def accepted(st, client):
    outcome, detail, _ = attempt(st.port, st.ctx(client), timeout=5)
    assert outcome == "ok", f"client should be accepted: {outcome} {detail!r}"


def refused_as_revoked(st, client):
    offset = st.redoubt.log_size()
    outcome, detail, _ = attempt(st.port, st.ctx(client), timeout=5)
    assert outcome == "refused", f"revoked client accepted: {outcome} {detail!r}"
    assert isinstance(detail, ssl.SSLError) and "revoked" in str(detail).lower(), detail
    wait_until(lambda: "certificate revoked" in st.redoubt.log_since(offset), 5,
               what="a worker log line saying the certificate is revoked")


def revocation_flow(st, crl_path, ca):
    good = new_client(st.env, "good", ca)
    bad = new_client(st.env, "bad", ca)
    accepted(st, bad)
    held = st.resp(good)
    works(held, "held")

    ca_revoke(ca, bad[0])
    ca_crl(ca, crl_path)
    accepted(st, bad)                 # not before the CRL is reloaded
    gen = st.active_generation()
    st.rotate_ok()
    assert st.active_generation() != gen, "a new CRL is a new generation"

    refused_as_revoked(st, bad)
    works(held, "held-after")         # already connected: untouched
    accepted(st, good)
    works(st.resp(good), "good-new")
    handshakes = st.audit_events("tls.handshake")
    assert any("certificate revoked" in (r.get("reason") or "") for r in handshakes), \
        "no audit record gives the revocation as the reason"


def test_identity_crl_refuses_revoked_client(env, rot):
    certs = env.certs("p256")
    probe = new_client(env, "probe")
    tlsdir = os.path.join(env.root, f"crl-id-{os.getpid()}-{os.urandom(3).hex()}")
    os.makedirs(tlsdir)
    os.chmod(tlsdir, 0o755)
    crl = ca_crl(certs.ca, os.path.join(tlsdir, "ca.crl"))
    st = rot(workers=2, tls_mode="verify-ca", identity_extra={"crl": crl}, probe_client=probe)
    revocation_flow(st, crl, certs.ca)


def test_listener_crl_override(env, rot):
    certs = env.certs("p256")
    probe = new_client(env, "probe")
    tlsdir = os.path.join(env.root, f"crl-l-{os.getpid()}-{os.urandom(3).hex()}")
    os.makedirs(tlsdir)
    os.chmod(tlsdir, 0o755)
    crl = ca_crl(certs.ca, os.path.join(tlsdir, "listener.crl"))
    st = rot(workers=2, tls_mode="verify-ca", listener_extra={"crl": crl}, probe_client=probe)
    revocation_flow(st, crl, certs.ca)


def test_listener_ca_override_reloads_with_rotation(env, rot):
    """The listener's own CA bundle replaces the identity's, and rotation reloads it."""
    certs = env.certs("p256")
    other = env.other_ca()
    tlsdir = os.path.join(env.root, f"ca-l-{os.getpid()}-{os.urandom(3).hex()}")
    os.makedirs(tlsdir)
    os.chmod(tlsdir, 0o755)
    bundle = os.path.join(tlsdir, "clients-ca.crt")
    install_file(other.crt, bundle)
    foreign = new_client(env, "foreign", other)
    st = rot(workers=2, tls_mode="verify-ca", listener_extra={"ca": bundle},
             probe_client=foreign)
    local = new_client(env, "local")
    accepted(st, foreign)
    outcome, _, _ = attempt(st.port, st.ctx(local), timeout=5)
    assert outcome == "refused", "a client of the identity's CA passed the listener's own CA"

    held = st.resp(foreign)
    install_file(certs.ca_crt, bundle)
    st.rotate_ok()
    accepted(st, local)
    outcome, _, _ = attempt(st.port, st.ctx(foreign), timeout=5)
    assert outcome == "refused", "the replaced CA bundle is still trusted"
    works(held, "held")


def test_bad_crl_is_refused(env, rot):
    """A CRL that its CA did not sign is refused before it replaces anything."""
    certs = env.certs("p256")
    probe = new_client(env, "probe")
    tlsdir = os.path.join(env.root, f"crl-bad-{os.getpid()}-{os.urandom(3).hex()}")
    os.makedirs(tlsdir)
    os.chmod(tlsdir, 0o755)
    crl = ca_crl(certs.ca, os.path.join(tlsdir, "listener.crl"))
    st = rot(workers=1, tls_mode="verify-ca", listener_extra={"crl": crl}, probe_client=probe)
    gen = st.active_generation()
    ca_crl(env.other_ca(), crl)
    res = st.rotate()
    assert res.returncode != 0
    assert "is not issued by a certificate of ca" in res.stderr, res.stderr
    assert st.active_generation() == gen
    accepted(st, probe)


def test_connector_refuses_revoked_peer(env, rot):
    """A connector dials a peer whose certificate its CRL revokes: refused after rotation."""
    certs = env.certs("p256")
    tlsdir = os.path.join(env.root, f"crl-k-{os.getpid()}-{os.urandom(3).hex()}")
    os.makedirs(tlsdir)
    os.chmod(tlsdir, 0o755)
    crl = ca_crl(certs.ca, os.path.join(tlsdir, "peer.crl"))
    cport = free_port()
    # The connector dials this stack's own listener: the listener's certificate is the peer's.
    st = rot(workers=1, extra_config=lambda s: (
        f"\n[connector out]\nlisten = 127.0.0.1:{cport}\nconnect = 127.0.0.1:{s.port}\n"
        f"identity = node\ntls-mode = verify-ca\ncrl = {crl}\n"))

    def via_connector():
        return redis.Redis(host="127.0.0.1", port=cport, socket_timeout=5,
                           socket_connect_timeout=5, single_connection_client=True)

    held = via_connector()
    assert held.set("through", "connector")
    assert held.get("through") == b"connector"

    ca_revoke(certs.ca, st.crt)
    ca_crl(certs.ca, crl)
    offset = st.redoubt.log_size()
    st.rotate_ok()
    fresh = via_connector()
    with pytest.raises(redis.exceptions.ConnectionError):
        fresh.ping()
    fresh.close()
    wait_until(lambda: "certificate revoked" in st.redoubt.log_since(offset), 5,
               what="the connector to log that the peer's certificate is revoked")
    assert held.get("through") == b"connector", "the connection made before was cut"
    held.close()
    # The connector's audit records name the peer it dialled, not only the local client.
    with open(os.path.join(st.dir, "audit", "audit.jsonl")) as f:
        recs = [json.loads(ln) for ln in f if ln.strip()]
    out = [r for r in recs if r.get("event") == "tls.handshake" and r.get("connector") == "out"]
    dialled = f"127.0.0.1:{st.port}"
    assert any(r["outcome"] == "success" and r.get("dialled") == dialled for r in out), out
    assert any(r["outcome"] == "failure" and r.get("dialled") == dialled and
               r.get("direction") == "outbound" for r in out), out
