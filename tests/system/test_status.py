"""`redoubt status [--json]`, the expiry warning, and keyd's control socket itself: who may use
it, and what it does with requests it does not like (issue 5)."""
import datetime
import grp
import json
import os
import socket
import stat

import pytest

from helpers import certs as certs_mod
from helpers.procs import run, wait_until
from rotation_helpers import StackPool, cert_fingerprint, cert_serial, now_utc, works

ADMIN_GROUP = "redoubt-t-admin"      # made for these tests, like conftest makes its users
OUTSIDER = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def rot(env):
    pool = StackPool(env)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def admin_gid():
    try:
        return grp.getgrnam(ADMIN_GROUP).gr_gid
    except KeyError:
        res = run(["groupadd", "--system", ADMIN_GROUP], timeout=30)
        assert res.returncode == 0 or "already exists" in res.stderr, res.stderr
        return grp.getgrnam(ADMIN_GROUP).gr_gid


def gen_conns(ident, which):
    g = ident[which]
    return None if g is None else g["connections"]


def test_status_shows_generations_connections_and_tickets(rot):
    st = rot(workers=2)
    old_crt = st.crt + ".gen0"
    with open(st.crt, "rb") as f, open(old_crt, "wb") as g:
        g.write(f.read())
    before = [st.resp() for _ in range(3)]
    for i, r in enumerate(before):
        works(r, f"b{i}")
    serial = st.install_new("status")
    res = run([st.env.bin, "rotate", "-c", st.redoubt.conf], timeout=90)   # socket from config
    assert res.returncode == 0, res.stderr
    after = [st.resp() for _ in range(2)]
    for i, r in enumerate(after):
        works(r, f"a{i}")

    wait_until(lambda: (gen_conns(st.identity(), "active"), gen_conns(st.identity(),
               "previous")) == (2, 3), 10, what="status to count 2 new and 3 old connections")
    s = st.status()
    ident = s["identities"][0]
    act, prev = ident["active"], ident["previous"]
    assert ident["name"] == "node"
    assert act["serial"].lstrip("0") == serial
    assert act["fingerprint"] == cert_fingerprint(st.crt)
    assert prev["serial"].lstrip("0") == cert_serial(old_crt)
    assert prev["fingerprint"] == cert_fingerprint(old_crt)
    end = certs_mod._openssl("x509", "-in", st.crt, "-noout", "-enddate").strip().split("=", 1)[1]
    want = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").strftime("%Y-%m-%dT%H:%M:%SZ")
    assert act["not_after"] == want
    assert 28 <= act["days_left"] <= 30
    assert act["generation"] != prev["generation"]
    # Per worker: every connection is somewhere, on the generation it was made with.
    reported = [w for w in s["workers"] if w["reported"]]
    assert len(reported) == 2
    assert sum(w["connections"] for w in reported) == 5
    per_gen = {}
    for w in reported:
        for g in w["generations"]:
            per_gen[g["generation"]] = per_gen.get(g["generation"], 0) + g["connections"]
    assert per_gen == {act["generation"]: 2, prev["generation"]: 3}
    assert s["tickets"]["keys"] == 1 and s["tickets"]["current_age_s"] >= 0
    assert s["last_rotation"]["outcome"] == "applied"

    text = st.control("status")
    assert text.returncode == 0, text.stderr
    for needle in ("identity node", "active", "previous", serial, prev["serial"],
                   act["fingerprint"], "worker 0", "worker 1", "session tickets", "days left"):
        assert needle in text.stdout, f"{needle!r} missing from:\n{text.stdout}"


def test_expiry_warning(rot):
    """A certificate within expiry-warning-days (default 30) is logged and flagged."""
    st = rot(workers=1)
    soon = st.issue("soon", not_after=now_utc() + datetime.timedelta(days=10, hours=1))
    st.install(*soon)
    offset = st.redoubt.log_size()
    st.rotate_ok()
    wait_until(lambda: "expires in 10 days" in st.redoubt.log_since(offset), 5,
               what="the expiry warning in the log")
    assert st.identity()["expiring"] is True
    assert "EXPIRES SOON" in st.control("status").stdout

    quiet = rot(workers=1, global_extra={"expiry-warning-days": "5"}, initial=soon)
    assert quiet.identity()["expiring"] is False
    assert "expires in" not in open(quiet.redoubt.log_path).read()


def test_control_socket_permissions(rot, admin_gid):
    st = rot(workers=1, global_extra={"admin-group": ADMIN_GROUP})
    info = os.stat(st.sock)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (0, admin_gid)

    # Not root, not in the group: the file mode keeps the caller out ...
    res = st.control("status", user=OUTSIDER)
    assert res.returncode != 0 and "Permission denied" in res.stderr, res.stderr
    # ... and keyd refuses it too when the file mode would let it in.
    os.chmod(st.sock, 0o666)
    try:
        res = st.control("rotate", user=OUTSIDER)
        assert res.returncode != 0
        assert "permission denied" in res.stderr and "admin-group" in res.stderr, res.stderr
        # With user separation, not even keyd's own user.
        res = st.control("status", user=["--reuid=redoubt-keyd", "--regid=redoubt-keyd",
                                          "--clear-groups"])
        assert res.returncode != 0 and "permission denied" in res.stderr, res.stderr
    finally:
        os.chmod(st.sock, 0o660)
    refused = st.audit_events("rotation.refused")
    assert any(r.get("uid") == 65534 for r in refused), refused

    # Members of admin-group, by supplementary group (SO_PEERGROUPS) or primary group.
    member = ["--reuid=nobody", "--regid=nogroup", f"--groups={admin_gid}"]
    res = st.control("status", "--json", user=member)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["identities"][0]["name"] == "node"
    primary = ["--reuid=nobody", f"--regid={admin_gid}", "--clear-groups"]
    res = st.control("rotate", user=primary)
    assert res.returncode == 0, res.stderr
    requested = st.audit_events("rotation.requested")
    assert any(r.get("uid") == 65534 and r.get("source") == "control" for r in requested)


def raw_request(path, payload, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        s.sendall(payload)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                if not data:
                    raise
                break               # keyd closed with some of our bytes unread
            if not chunk:
                break
            data += chunk
        return json.loads(data)
    finally:
        s.close()


@pytest.mark.parametrize("payload,error", [
    (b"not json\n", "not a JSON object"),
    (b'{"cmd": 7}\n', "not a JSON object"),
    (b'{"cmd": "format-disk"}\n', "unknown command"),
    (b'{"cmd": "status", "revoke_previous": true}\n', "unknown or misplaced key"),
    (b'{"cmd": "rotate", "extra": 1}\n', "unknown or misplaced key"),
    (b'{"cmd": "rotate", "cmd": "status"}\n', "not a JSON object"),
    (b"{" + b" " * 5000, "longer than CONTROL_REQUEST_MAX"),
])
def test_control_refuses_bad_requests(rot, payload, error):
    st = rot(workers=1)
    keyd = st.redoubt.keyd_pid()
    gen = st.active_generation()
    answer = raw_request(st.sock, payload)
    assert answer["ok"] is False and error in answer["error"], answer
    assert st.redoubt.keyd_pid() == keyd
    assert st.active_generation() == gen
    assert raw_request(st.sock, b'{"cmd":"status"}\n')["ok"] is True


def test_cli_errors(env, tmp_path):
    res = run([env.bin, "status", "--socket", str(tmp_path / "none.sock")], timeout=30)
    assert res.returncode == 1 and "cannot connect" in res.stderr, res.stderr
    res = run([env.bin, "rotate", "--bogus"], timeout=30)
    assert res.returncode == 64
    res = run([env.bin, "rotate", "--tickets", "--revoke-previous", "--socket", "x"], timeout=30)
    assert res.returncode == 64
    res = run([env.bin, "status", "--revoke-previous", "--socket", "x"], timeout=30)
    assert res.returncode == 64
