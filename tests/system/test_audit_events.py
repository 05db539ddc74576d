"""
The audit trail as an auditor reads it: one run with successful clients, a refused client
certificate, a plaintext client, a rotation and a worker restart must leave exactly the
expected events, with the expected field values (not just keys), chained and verifiable.
And fail-closed: with the log on a tiny tmpfs that fills up, new connections are refused,
established ones keep working, and service resumes once space is freed, with no record
missing from the chain.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from helpers.procs import run
from helpers.stack import client_cert

AUDIT_WAIT_S = 5


def records(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_records(path, pred, timeout=AUDIT_WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        recs = records(path)
        found = [r for r in recs if pred(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def fingerprint(crt):
    out = run(["openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha256"],
              check=True).stdout
    return out.strip().split("=", 1)[1]


def verify(env, path):
    return run([env.bin, "audit", "verify", path])


def keyd_readable(path):
    shutil.chown(path, group="redoubt-keyd")
    os.chmod(path, 0o640)


def test_events_carry_who_what_when_where_and_outcome(make_stack, env, workdir):
    # The identity's files are our own copies, so a rotation can replace them.
    rot = os.path.join(workdir, "rot")
    os.makedirs(rot)
    os.chmod(rot, 0o755)
    certs = env.certs("p256")
    cert, key = os.path.join(rot, "node.crt"), os.path.join(rot, "node.key")
    shutil.copy(certs.node_crt, cert)
    shutil.copy(certs.node_key, key)
    os.chmod(cert, 0o644)
    keyd_readable(key)
    st = make_stack(tls_mode="verify-ca", identity_extra={"cert": cert, "key": key})
    log = os.path.join(st.dir, "audit", "audit.jsonl")
    app_crt, _ = client_cert(env, st.certs, "app")

    # A successful client doing real work, then leaving.
    r = st.redis_py(client="app")
    assert r.set("audit-key", "v") is True
    r.connection_pool.disconnect()
    # A certificate from another CA: refused in the handshake.
    with pytest.raises(Exception):
        st.redis_py(client="otherca").ping()
    # A plaintext client on the TLS port.
    s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    s.sendall(b"PING\r\n")
    assert s.recv(100).startswith(b"-ERR")
    s.close()
    # A rotation through the control socket, to a new certificate of the same CA.
    new_crt, new_key = certs.issue("audit-rotation", "localhost",
                                   ["DNS:localhost", "IP:127.0.0.1"], server=True)
    shutil.copy(new_key, key)
    keyd_readable(key)
    shutil.copy(new_crt, cert)
    sock = os.path.join(st.dir, "run", "control.sock")
    res = run([env.bin, "rotate", "--socket", sock])
    assert res.returncode == 0, res.stdout + res.stderr
    # A worker restart.
    victim = st.redoubt.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    restarted = wait_records(log, lambda x: x["event"] == "process.restarted")
    assert restarted, "no process.restarted record after a worker was killed"

    recs = records(log)
    events = [x["event"] for x in recs]
    # Every record has the chain fields, in order, and seq has no gap.
    for i, x in enumerate(recs):
        assert list(x)[:4] == ["seq", "time", "event", "outcome"]
        assert x["outcome"] in ("success", "failure")
        assert len(x["prev"]) == 64
        assert x["time"].endswith("Z") and "." in x["time"]     # UTC, sub-second
        if i:
            assert x["seq"] == recs[i - 1]["seq"] + 1

    start = [x for x in recs if x["event"] == "service.start"]
    with open(st.redoubt.conf, "rb") as f:
        conf_sha = hashlib.sha256(f.read()).hexdigest()
    assert start and start[0]["config_sha256"] == conf_sha
    assert "config.loaded" in events

    hs_ok = [x for x in recs if x["event"] == "tls.handshake" and x["outcome"] == "success"
             and x.get("peer_subject", "").find("app-cn.client.test") >= 0]
    assert hs_ok, "no successful handshake record for the app client"

    def closed_of(x):
        return [y for y in recs if y["event"] == "connection.closed"
                and (y.get("worker"), y.get("conn")) == (x["worker"], x["conn"])
                and y["seq"] > x["seq"]][:1]
    # The redis-py connection (readiness probes use the same certificate but send nothing).
    worked = [x for x in hs_ok if any(y["bytes_in"] > 0 for y in closed_of(x))]
    assert worked, "no closed record with bytes for the app client's connection"
    h = worked[0]
    assert h["listener"] == "clients" and h["tls_mode"] == "verify-ca"
    assert h["tls_version"] in ("TLSv1.3", "TLSv1.2") and h["cipher"]
    assert h["peer"].startswith("127.0.0.1:")
    assert h["peer_sha256"] == fingerprint(app_crt).replace(":", "").lower()
    assert "DNS:app.client.test" in h["peer_identity"]
    assert isinstance(h["worker"], int) and h["worker"] >= 0

    # The same connection was accepted first and closed last, with its bytes counted.
    conn = (h["worker"], h["conn"])
    accepted = [x for x in recs if (x.get("worker"), x.get("conn")) == conn
                and x["event"] == "connection.accepted" and x["seq"] < h["seq"]]
    assert accepted and accepted[-1]["peer"] == h["peer"]
    closed = closed_of(h)[0]
    # redis-py closes without close_notify: a FIN, which counts as an orderly close.
    assert closed["closed_by"] == "client" and closed["reason"] == "client closed"
    assert closed["outcome"] == "success"
    assert closed["bytes_in"] > 0 and closed["bytes_out"] > 0 and closed["duration_ms"] >= 0

    refused = [x for x in recs if x["event"] == "tls.handshake" and x["outcome"] == "failure"]
    assert refused and "certificate verification failed" in refused[0]["reason"]
    assert "app-cn.client.test" in refused[0]["reason"]     # who was refused

    plain = [x for x in recs if x["event"] == "connection.closed"
             and x["reason"] == "plaintext client on TLS port"]
    assert plain and plain[0]["outcome"] == "failure" and plain[0]["closed_by"] == "redoubt"

    req = [x for x in recs if x["event"] == "rotation.requested"]
    assert req and req[0]["uid"] == 0 and req[0]["source"] == "control"
    applied = [x for x in recs if x["event"] == "rotation.applied"]
    assert applied and applied[0]["uid"] == 0
    assert applied[0]["old_fingerprint"] == fingerprint(certs.node_crt)
    assert applied[0]["new_fingerprint"] == fingerprint(new_crt)

    exited = [x for x in recs if x["event"] == "process.exited"]
    assert exited and exited[0]["pid"] == victim and exited[0]["process"] == "worker"

    res = verify(env, log)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture
def tiny_tmpfs(workdir):
    path = os.path.join(workdir, "tmpfs")
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", path],
                   check=True, timeout=10)
    subprocess.run(["chown", "redoubt-keyd", path], check=True, timeout=10)
    yield path
    subprocess.run(["umount", "-l", path], timeout=10)


def fill(dirpath):
    """Fills the filesystem with a root-owned file; returns its path."""
    filler = os.path.join(dirpath, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def handshake_ok(st, timeout=2.0):
    try:
        s = st.tls(timeout=timeout)
        s.sendall(b"PING\r\n")
        ok = s.recv(100).startswith(b"+PONG")
        s.close()
        return ok
    except Exception:  # noqa: BLE001
        return False


def test_fail_closed_when_the_audit_log_cannot_be_written(make_stack, env, tiny_tmpfs):
    log = os.path.join(tiny_tmpfs, "audit.jsonl")
    st = make_stack(global_extra={"audit-log": log, "audit-fail-closed": "yes"})
    established = st.redis_py()
    assert established.ping()

    filler = fill(tiny_tmpfs)
    # The first connection after the disk filled makes a record fail; from then on new
    # connections are refused (at most a few slip through while keyd tells the workers).
    results = [handshake_ok(st) for _ in range(20)]
    assert not all(results), "new connections were still accepted with the audit log full"
    assert results[-5:] == [False] * 5, results
    # Established connections keep working.
    assert established.set("still", "working") is True
    assert established.get("still") == b"working"

    os.unlink(filler)
    deadline = time.monotonic() + 15
    while not handshake_ok(st) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert handshake_ok(st), "service did not resume after space was freed"
    established.close()
    st.stop()
    # Nothing lost: the chain verifies, and the recovery is on record.
    res = verify(env, log)
    assert res.returncode == 0, res.stdout + res.stderr
    assert any(x["event"] == "audit.recovered" for x in records(log))
