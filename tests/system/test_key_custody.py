"""Key custody: the workers never hold the private key; keyd does.

As root, read every readable mapping of each worker (/proc/PID/maps + /proc/PID/mem) and look
for the key's secret bytes (EC private scalar; RSA d, p, q — big- and little-endian), the key
file's PEM text and its DER.  The same scan over keyd must find the secret, which proves the
scan can fail.  Workers must also not have the key file open or mapped.
"""
import os

import pytest

from helpers import memscan
from helpers.certs import key_secrets
from helpers.tlsclient import attempt

KEY_TYPES = ["p256", "rsa2048"]


def _fmt(found):
    return {k: [hex(a) + (f" {p}" if p else "") for a, p in v[:4]] for k, v in found.items()}


@pytest.fixture(scope="module", params=KEY_TYPES)
def custody_stack(request, env):
    from helpers.stack import Stack
    st = Stack(env, key_type=request.param, workers=2)
    st.start()
    # Make every worker sign: several full handshakes, both TLS versions, and some traffic.
    for i in range(12):
        kw = {"max_version": "TLSv1.2"} if i % 2 else {}
        outcome, detail, _ = attempt(st.port, st.ctx(**kw), timeout=5)
        assert outcome == "ok", detail
    r = st.redis_py()
    assert r.set("custody", "x") and r.get("custody") == b"x"
    r.close()
    yield st
    st.stop()


def test_workers_do_not_hold_the_key(custody_stack):
    st = custody_stack
    secrets, _ = key_secrets(st.certs.node_key)
    workers = st.redoubt.worker_pids()
    assert len(workers) == 2
    for pid in workers:
        res = memscan.scan(pid, secrets)
        assert res.bytes_read > 1 << 20, f"worker {pid}: implausibly little memory read"
        assert not res.unreadable, (
            f"worker {pid}: could not read mappings {res.unreadable[:5]} — the proof would be "
            f"incomplete")
        assert not res.found, (f"worker {pid} holds private key material "
                               f"({res.summary()}): {_fmt(res.found)}")


def test_workers_have_no_key_file_open_or_mapped(custody_stack):
    st = custody_stack
    key_paths = {os.path.realpath(st.certs.node_key), os.path.realpath(st.certs.ca_key)}
    for pid in st.redoubt.worker_pids():
        opened = {os.path.realpath(p) if p.startswith("/") else p for p in memscan.open_files(pid)}
        assert not (opened & key_paths), f"worker {pid} has a key file open: {opened & key_paths}"
        mapped = {os.path.realpath(p) for p in memscan.mapped_files(pid)}
        assert not (mapped & key_paths), f"worker {pid} has a key file mapped"


def test_keyd_holds_the_key(custody_stack):
    """The control: the same scan over keyd finds every private component."""
    st = custody_stack
    secrets, comps = key_secrets(st.certs.node_key)
    keyd = st.redoubt.keyd_pid()
    assert keyd is not None
    res = memscan.scan(keyd, {k: v for k, v in secrets.items() if k.split("-")[0] in
                              ("ec", "rsa")})
    for comp in comps:          # ec-priv, or rsa-d / rsa-p / rsa-q
        assert f"{comp}-be" in res.found or f"{comp}-le" in res.found, (
            f"keyd {keyd}: {comp} not found in {res.summary()} — the scan cannot see the key, "
            f"so the worker scan proves nothing; found {_fmt(res.found)}")


def test_supervisor_does_not_hold_the_key(custody_stack):
    """DESIGN §1: the supervisor holds no key (beyond the issue's list, same method)."""
    st = custody_stack
    secrets, _ = key_secrets(st.certs.node_key)
    res = memscan.scan(st.redoubt.pid, secrets)
    assert not res.found, f"supervisor holds key material: {_fmt(res.found)}"
