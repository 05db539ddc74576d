"""Certificate rotation in keyd: `redoubt rotate`, SIGHUP, --revoke-previous, bad inputs that
must be refused, and auto-reload (issue 5).

keyd keeps at most two generations per identity: a rotation makes the new one active and keeps
the one it replaced (its connections go on); the rotation after that drops it and ends its
connections.  Workers are never restarted for any of this.
"""
import datetime
import os
import signal
import tempfile
import time

import pytest

from helpers import certs as certs_mod
from helpers.procs import wait_until
from rotation_helpers import (Load, StackPool, cert_serial, closed_by_server, install_file,
                              now_utc, works, write_file)

ROTATION_GAP = 1.5       # seconds of load between rotations (longer than a load connection)


@pytest.fixture
def rot(env):
    pool = StackPool(env)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def rot_module(env):
    pool = StackPool(env)
    yield pool
    pool.close()


def test_three_rotations_under_load(rot):
    st = rot(workers=2)
    pids = st.redoubt.worker_pids()
    keyd = st.redoubt.keyd_pid()
    first_serial = st.served_serial()
    load = Load(st, clients=4).start()
    batches = []            # connections opened before each rotation, with their generation
    try:
        for n in range(1, 4):
            time.sleep(ROTATION_GAP)
            before = [st.resp() for _ in range(3)]
            for i, r in enumerate(before):
                works(r, f"before{n}-{i}")
            gen_before = st.active_generation()
            batches.append((gen_before, before))
            serial = st.install_new(f"rot{n}")
            res = st.rotate_ok()
            assert "now active" in res.stdout, res.stdout

            # New connections present the new certificate.
            assert st.served_serial() == serial
            ident = st.identity()
            assert ident["active"]["serial"].lstrip("0") == serial
            assert ident["previous"]["generation"] == gen_before
            # The connections opened just before this rotation keep working ...
            for i, r in enumerate(before):
                works(r, f"after{n}-{i}")
            # ... while those two generations back are gone.
            if n >= 2:
                gen_old, old = batches[n - 2]
                assert gen_old not in (ident["active"]["generation"],
                                       ident["previous"]["generation"])
                for r in old:
                    assert closed_by_server(r), (
                        f"a connection of generation {gen_old} survived rotation {n}")
            assert st.redoubt.worker_pids() == pids, "a worker was restarted"
            assert st.redoubt.keyd_pid() == keyd, "keyd was restarted"
        time.sleep(ROTATION_GAP)
    finally:
        ok, failures = load.stop()
    assert failures == [], f"{len(failures)} failed commands under load: {failures[:5]}"
    assert ok > 100, f"the load did too little work ({ok} commands)"
    # The first generation's connections are gone; the last batch still works.
    for r in batches[0][1]:
        assert closed_by_server(r, timeout=1)
    for i, r in enumerate(batches[2][1]):
        works(r, f"end-{i}")
    assert st.served_serial() != first_serial
    assert len(st.audit_events("rotation.applied")) >= 3


def test_sighup_rotates(rot):
    st = rot(workers=1)
    gen = st.active_generation()
    serial = st.install_new("hup")
    os.kill(st.redoubt.pid, signal.SIGHUP)          # serve forwards it to keyd
    wait_until(lambda: st.served_serial() == serial, 10, what="SIGHUP to rotate")
    ident = st.identity()
    assert ident["previous"]["generation"] == gen
    recs = st.audit_events("rotation.requested")
    assert any(r.get("source") == "SIGHUP" and r.get("uid") == 0 for r in recs), recs


def test_revoke_previous_ends_old_connections(rot):
    st = rot(workers=2)
    old = [st.resp() for _ in range(3)]
    for i, r in enumerate(old):
        works(r, f"old-{i}")
    old_gen = st.active_generation()
    serial = st.install_new("revoke")
    res = st.rotate_ok("--revoke-previous")
    assert f"generation {old_gen} revoked" in res.stdout, res.stdout
    for r in old:
        assert closed_by_server(r), "a connection of the revoked generation is still open"
    fresh = st.resp()
    works(fresh, "fresh")
    assert st.served_serial() == serial
    ident = st.identity()
    assert ident["previous"] is None
    applied = st.audit_events("rotation.applied")
    assert any(r.get("revoked_generation") == old_gen for r in applied), applied


def test_unchanged_files_keep_the_generation(rot):
    st = rot(workers=1)
    r = st.resp()
    gen = st.active_generation()
    res = st.rotate_ok()
    assert "unchanged" in res.stdout
    assert st.active_generation() == gen
    assert st.identity()["previous"] is None
    works(r, "still")


# --- bad inputs: refused with their reason, the running generation keeps serving -----------------

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def guarded(env, rot_module):
    """A stack whose key is encrypted (key-passphrase-file), and one connection held open
    through every bad attempt."""
    tmp = RotStackFiles(env)
    st = rot_module(workers=2, identity_extra={"key-passphrase-file": tmp.passfile},
                    initial=tmp.encrypted_pair(env))
    held = st.resp()
    works(held, "held")
    return st, held, tmp


class RotStackFiles:
    """Files for the passphrase stack, made before the stack exists."""

    def __init__(self, env):
        self.dir = tempfile.mkdtemp(prefix="pass-", dir=env.root)
        os.chmod(self.dir, 0o755)
        self.passfile = os.path.join(self.dir, "pass")
        with open(self.passfile, "w") as f:
            f.write(PASSPHRASE + "\n")
        certs_mod.keyd_readable(self.passfile)

    def encrypted_pair(self, env):
        certs = env.certs("p256")
        crt, key = certs.ca.issue(os.path.join(self.dir, "issued"), f"pass0-{os.getpid()}",
                                  "localhost", ["DNS:localhost", "IP:127.0.0.1"], server=True)
        enc = certs_mod.encrypt_key(key, key + ".enc", PASSPHRASE)
        return crt, enc


def _bad_mismatch(st, tmp):
    crt, _ = st.issue("mm-a")
    _, key = st.issue("mm-b")
    st.install(crt, key)
    return "does not match certificate"


def _bad_expired(st, tmp):
    t = now_utc()
    st.install(*st.issue("expired", not_before=t - datetime.timedelta(days=10),
                         not_after=t - datetime.timedelta(days=1)))
    return "has expired"


def _bad_not_yet_valid(st, tmp):
    t = now_utc()
    st.install(*st.issue("future", not_before=t + datetime.timedelta(days=2),
                         not_after=t + datetime.timedelta(days=30)))
    return "is not yet valid"


def _bad_other_ca(st, tmp):
    st.install(*st.issue("otherca", ca=st.env.other_ca()))
    return "does not verify against CA file"


def _bad_unreadable_key(st, tmp):
    crt, key = st.issue("unreadable")
    st.install(crt, key)
    os.chmod(st.key, 0o000)
    return "cannot open: Permission denied"


def _bad_truncated_pem(st, tmp):
    crt, key = st.issue("truncated")
    with open(crt, "rb") as f:
        data = f.read()
    st.install(key=key)
    write_file(st.crt, data[:len(data) // 2])
    return "does not parse (truncated or corrupt PEM"


def _bad_wrong_passphrase(st, tmp):
    crt, key = st.issue("wrongpass")
    enc = certs_mod.encrypt_key(key, key + ".enc", "not the passphrase")
    st.install(crt, enc)
    return "wrong passphrase"


BAD = {
    "mismatched key and certificate": _bad_mismatch,
    "expired certificate": _bad_expired,
    "not-yet-valid certificate": _bad_not_yet_valid,
    "certificate from another CA": _bad_other_ca,
    "unreadable key file": _bad_unreadable_key,
    "truncated PEM": _bad_truncated_pem,
    "wrong passphrase": _bad_wrong_passphrase,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused(guarded, case):
    st, held, tmp = guarded
    good_crt = open(st.crt, "rb").read()
    good_key = open(st.key, "rb").read()
    serial = st.served_serial()
    gen = st.active_generation()
    refused_before = len(st.audit_events("rotation.refused"))
    try:
        reason = BAD[case](st, tmp)
        res = st.rotate()
        assert res.returncode != 0, f"{case}: redoubt rotate succeeded: {res.stdout}"
        assert reason in res.stderr, f"{case}: reason not given: {res.stderr!r}"
        assert "refused" in res.stderr
    finally:
        write_file(st.crt, good_crt)
        write_file(st.key, good_key, key=True)
    # Nothing changed: same generation, same certificate, the held connection never noticed.
    assert st.active_generation() == gen
    assert st.served_serial() == serial
    works(held, case.replace(" ", "-"))
    works(st.resp(), "new-" + case.replace(" ", "-"))
    refused = st.audit_events("rotation.refused")
    assert len(refused) == refused_before + 1 and reason in refused[-1]["reason"], refused[-1:]
    assert refused[-1].get("uid") == 0


def test_good_files_rotate_after_bad_ones(guarded):
    st, held, tmp = guarded
    crt, key = st.issue("good-after")
    st.install(crt, certs_mod.encrypt_key(key, key + ".enc", PASSPHRASE))
    st.rotate_ok()
    assert st.served_serial() == cert_serial(crt)
    works(held, "after-good-rotation")


# --- auto-reload ---------------------------------------------------------------------------------

def test_auto_reload_complete_pair(rot):
    st = rot(workers=1, global_extra={"auto-reload": "yes"})
    assert st.status()["auto_reload"]["mode"] == "inotify"
    r = st.resp()
    serial = st.install_new("auto")
    wait_until(lambda: st.served_serial() == serial, 15, what="auto-reload to rotate")
    works(r, "auto")
    recs = st.audit_events("rotation.requested")
    assert any(x.get("source") == "auto-reload" for x in recs)


def test_auto_reload_never_loads_half_a_pair(rot):
    st = rot(workers=1, global_extra={"auto-reload": "yes"})
    old = st.served_serial()
    gen = st.active_generation()
    r = st.resp()
    crt, key = st.issue("half")
    offset = st.redoubt.log_size()
    install_file(crt, st.crt)                     # the certificate only: the key is still old
    wait_until(lambda: "does not match certificate" in st.redoubt.log_since(offset), 15,
               what="auto-reload to notice and refuse the half-written pair")
    time.sleep(1.0)
    assert st.active_generation() == gen
    assert st.served_serial() == old
    works(r, "half")
    last = st.status()["last_rotation"]
    assert last["source"] == "auto-reload" and last["outcome"] == "refused", last
    assert "does not match" in last["reason"]
    install_file(key, st.key, key=True)           # now the pair is complete
    wait_until(lambda: st.served_serial() == cert_serial(crt), 15,
               what="auto-reload to load the completed pair")
    works(r, "completed")
    assert st.identity()["previous"]["generation"] == gen
