"""redoubt as two unprivileged services (`serve --role keyd` as redoubt-keyd, `serve --role
workers` as redoubt), the layout of the Debian package's systemd units: started here the way
systemd starts them (own user, no capabilities, the control socket passed by socket
activation), they must serve, re-wire worker channels after any process of either half dies,
and let nobody but the other half onto the link between them.
"""
import grp
import json
import os
import pwd
import signal
import socket
import subprocess
import time

import pytest

from helpers import tlsclient
from helpers.procs import children_of, free_port, pid_alive, proc_uid, run, stop_pid, wait_until
from helpers.servers import REGISTRY, RedisServer, new_workdir
from helpers.stack import build_config

WORKERS = 2


def _setpriv(user):
    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _caps(pid):
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (ln.split(":", 1) for ln in f if ":" in ln)
                if k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")}


class Half:
    """One `serve --role ROLE` process, started under its user like a systemd unit."""

    def __init__(self, bin, dir, conf, role, user, control=None):
        self.bin, self.dir, self.conf, self.role, self.user = bin, dir, conf, role, user
        self.control = control          # a listening socket to pass as LISTEN_FDS (keyd)
        self.log_path = os.path.join(dir, f"{role}.stderr")
        self.name = f"{role} half stderr [{self.log_path}]"
        self.proc = None

    def start(self):
        cmd = _setpriv(self.user) + [self.bin, "serve", "--role", self.role, "-c", self.conf]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        fds, pre = (), None
        if self.control is not None:
            # systemd's socket activation: the socket at fd 3, LISTEN_PID = the exec'd pid
            # (exec keeps the shell's pid through setpriv into redoubt).
            fd = self.control.fileno()
            fds, pre = (3,), (lambda: os.dup2(fd, 3))
            cmd = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=control exec "$@"',
                   "sh"] + cmd
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=env, pass_fds=fds, preexec_fn=pre,
                                         process_group=0)
        REGISTRY.append(self)
        return self

    def children(self):
        return [pid for pid, _ in children_of(self.proc.pid)]

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, max_bytes=15000):
        return self.log()[-max_bytes:]

    def relevant_since(self, t0):
        return True

    def stop(self):
        kids = self.children() if self.proc.poll() is None else []
        code = stop_pid(self.proc)
        for pid in kids:
            wait_until(lambda p=pid: not pid_alive(p), 10, what=f"child {pid} of {self.role}")
        return code


class Split:
    def __init__(self, env, workers=WORKERS):
        self.env = env
        self.certs = env.certs("p256")
        self.dir = new_workdir(env.root, prefix="split-")
        wrun = os.path.join(self.dir, "wrun")
        os.mkdir(wrun)
        u = pwd.getpwnam("redoubt")
        os.chown(wrun, u.pw_uid, u.pw_gid)
        self.link = os.path.join(wrun, "link.sock")
        self.control_path = os.path.join(self.dir, "run", "control.sock")
        self.redis = RedisServer(self.dir)
        self.port = free_port()
        conf = build_config(self.dir, self.certs, f"unix:{self.redis.sock}", self.port,
                            workers=workers, global_extra={"link-socket": self.link})
        self.conf = os.path.join(self.dir, "redoubt.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        os.chmod(self.conf, 0o644)
        self.workers = workers
        self.keyd = self.workers_half = None
        self.control = None

    def _control_socket(self):
        """What redoubt-control.socket makes: root:redoubt-admin 0660, listening."""
        if os.path.exists(self.control_path):
            os.unlink(self.control_path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.control_path)
        try:
            gid = grp.getgrnam("redoubt-admin").gr_gid
        except KeyError:
            gid = 0
        os.chown(self.control_path, 0, gid)
        os.chmod(self.control_path, 0o660)
        s.listen(16)
        s.set_inheritable(True)
        return s

    def start_keyd(self):
        self.control = self._control_socket()
        self.keyd = Half(self.env.bin, self.dir, self.conf, "keyd", "redoubt-keyd",
                         control=self.control).start()
        return self.keyd

    def start_workers(self):
        self.workers_half = Half(self.env.bin, self.dir, self.conf, "workers", "redoubt").start()
        return self.workers_half

    def start(self):
        self.redis.start()
        self.start_keyd()
        self.start_workers()
        self.wait_serving()
        return self

    def ctx(self):
        return tlsclient.client_context(self.certs.ca_crt, None, None)

    def handshake_ok(self):
        try:
            tlsclient.tls_connect(self.port, self.ctx(), timeout=2).close()
            return True
        except OSError:
            return False

    def wait_serving(self, timeout=30):
        def ready():
            for h in (self.keyd, self.workers_half):
                if h.proc.poll() is not None:
                    raise AssertionError(f"{h.role} half exited {h.proc.returncode}:\n{h.log()}")
            return (len(self.workers_half.children()) == self.workers and
                    len(self.keyd.children()) == 1 and
                    all(self.handshake_ok() for _ in range(2 * self.workers)))
        wait_until(ready, timeout, what="split service serving")

    def stop(self):
        for h in (self.workers_half, self.keyd):
            if h is not None and h.proc is not None and h.proc.poll() is None:
                h.stop()
        if self.control is not None:
            self.control.close()
        self.redis.stop()


@pytest.fixture
def split(env):
    sp = Split(env)
    try:
        yield sp.start()
    finally:
        sp.stop()


def _resp(sp):
    return tlsclient.Resp(tlsclient.tls_connect(sp.port, sp.ctx(), timeout=5))


def test_serves_with_no_privilege_anywhere(split):
    r = _resp(split)
    assert r.command("SET", "split", "yes") == "OK"
    assert r.command("GET", "split") == b"yes"
    keyd_uid = pwd.getpwnam("redoubt-keyd").pw_uid
    worker_uid = pwd.getpwnam("redoubt").pw_uid
    procs = {"keyd supervisor": (split.keyd.proc.pid, keyd_uid)}
    # The halves' own pids are the setpriv'd redoubt (exec keeps the pid).
    procs["workers supervisor"] = (split.workers_half.proc.pid, worker_uid)
    for pid in split.keyd.children():
        procs[f"keyd {pid}"] = (pid, keyd_uid)
    for pid in split.workers_half.children():
        procs[f"worker {pid}"] = (pid, worker_uid)
    for what, (pid, uid) in procs.items():
        assert proc_uid(pid) == uid, what
        st = _caps(pid)
        assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == "0000000000000000", (what, st)
        assert st["NoNewPrivs"] == "1", what
    # Nothing runs as root: the supervisors are no longer privileged processes.
    assert all(proc_uid(pid) != 0 for pid, _ in procs.values())
    # The control socket is systemd's (root-owned, passed as fd 3), not one keyd's user made.
    st = os.stat(split.control_path)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o660)
    assert "linked with the workers' supervisor" in split.keyd.log()
    assert "linked with the keyd's supervisor" in split.workers_half.log()


def test_worker_restart_is_rewired_by_keyds_side(split):
    r = _resp(split)
    assert r.command("SET", "k", "1") == "OK"
    victim = split.workers_half.children()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in split.workers_half.children() and
               len(split.workers_half.children()) == split.workers, 15, what="worker back")
    # Every handshake works again: the new worker got a keyd channel across the link.
    wait_until(lambda: all(split.handshake_ok() for _ in range(6)), 15, what="handshakes")
    # keyd audited the exit and the restart it heard about over the link.
    audit = os.path.join(split.dir, "audit", "audit.jsonl")

    def audited():
        with open(audit) as f:
            ev = [json.loads(ln) for ln in f if ln.strip()]
        return [e for e in ev if e.get("event", "").startswith("process.") and
                e.get("pid") == victim]
    wait_until(lambda: len(audited()) >= 1, 10, what="exit audited")


def test_keyd_restart_rewires_every_worker(split):
    r = _resp(split)
    assert r.command("SET", "k", "before") == "OK"
    old = split.keyd.children()
    assert len(old) == 1
    os.kill(old[0], signal.SIGKILL)
    wait_until(lambda: len(split.keyd.children()) == 1 and split.keyd.children() != old, 15,
               what="keyd back")
    wait_until(lambda: all(split.handshake_ok() for _ in range(2 * split.workers)), 15,
               what="handshakes through every worker")
    # The established session never needed keyd.
    assert r.command("GET", "k") == b"before"


def test_keyd_service_restart(split):
    """systemctl restart redoubt-keyd: the workers' half stays, links again, serves again."""
    r = _resp(split)
    assert r.command("SET", "k", "v") == "OK"
    workers_before = sorted(split.workers_half.children())
    split.keyd.stop()
    split.control.close()
    assert not split.handshake_ok()
    assert r.command("GET", "k") == b"v"       # established sessions need no keyd
    split.start_keyd()
    wait_until(lambda: all(split.handshake_ok() for _ in range(2 * split.workers)), 20,
               what="handshakes after keyd's service came back")
    assert sorted(split.workers_half.children()) == workers_before


def _link_attempt(path, user):
    """Connect to the link socket as user; True if the peer kept the connection open."""
    code = ("import socket,sys,time\n"
            "s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n"
            f"s.connect({path!r})\n"
            "s.settimeout(3)\n"
            "try:\n"
            "    d=s.recv(4096)\n"
            "    sys.exit(3 if d == b'' else 0)\n"
            "except socket.timeout:\n"
            "    sys.exit(0)\n")
    res = run(_setpriv(user) + ["/usr/bin/python3", "-c", code], timeout=20)
    return res.returncode == 0


def test_link_admits_only_keyd_user(split):
    before = split.workers_half.log()
    # The workers' own user (what a compromised worker would be) and an unrelated user.
    for user in ("redoubt", "nobody"):
        assert not _link_attempt(split.link, user), f"{user} was kept on the link"
    log = split.workers_half.log()[len(before):]
    assert log.count("refused a connection") >= 2, log
    # The real link is untouched: handshakes still work through every worker.
    assert all(split.handshake_ok() for _ in range(2 * split.workers))


def test_keyd_side_refuses_a_listener_of_the_wrong_user(env):
    """Whoever binds link-socket first must be the workers' user, or keyd's side stays away."""
    sp = Split(env)
    fake = None
    try:
        sp.redis.start()
        # A listener made by another user (nobody) at the link path.
        code = ("import socket,os,time\n"
                "s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n"
                f"s.bind({sp.link!r}); os.chmod({sp.link!r},0o666); s.listen(8)\n"
                "time.sleep(60)\n")
        os.chmod(os.path.dirname(sp.link), 0o777)
        fake = subprocess.Popen(_setpriv("nobody") + ["/usr/bin/python3", "-c", code],
                                stdin=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(sp.link), 10, what="fake listener")
        sp.start_keyd()
        wait_until(lambda: "refused the listener" in sp.keyd.log(), 15,
                   what="keyd's side refusing the listener")
        assert "linked with" not in sp.keyd.log()
    finally:
        if fake is not None:
            stop_pid(fake)
        sp.stop()


def test_rotate_and_status_in_split_mode(split):
    res = run([split.env.bin, "status", "--json", "-c", split.conf], timeout=30)
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st, res.stdout
    res = run([split.env.bin, "rotate", "-c", split.conf], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(split.handshake_ok() for _ in range(2 * split.workers))


def test_workers_half_says_when_keyd_never_links(env):
    sp = Split(env)
    try:
        sp.redis.start()
        sp.start_workers()
        wait_until(lambda: len(sp.workers_half.children()) == sp.workers, 15, what="workers")
        # Without keyd, a handshake fails (fast), it does not hang or succeed.
        t0 = time.monotonic()
        assert not sp.handshake_ok()
        assert time.monotonic() - t0 < 5
        wait_until(lambda: "has not connected to link-socket" in sp.workers_half.log(), 20,
                   what="the warning")
        sp.start_keyd()
        sp.wait_serving()
    finally:
        sp.stop()


def test_bad_role_is_a_usage_error(env):
    res = run([env.bin, "serve", "--role", "both", "-c", "/nonexistent"], timeout=10)
    assert res.returncode == 64
    assert "--role must be all, keyd or workers" in res.stderr
    res = run([env.bin, "check-config", "--role", "both", "-c", "/nonexistent"], timeout=10)
    assert res.returncode == 64
    assert "--role must be all, keyd or workers" in res.stderr


def test_check_config_per_half(env):
    """Each unit checks what its half uses: keyd's user the keys (no addresses: its unit has
    no network), the workers' user the addresses (it cannot read the keys)."""
    sp = Split(env)
    with open(sp.conf) as f:
        text = f.read()
    # An address no interface here has: only the workers' half can notice.
    bad_addr = text.replace(f"listen = 127.0.0.1:{sp.port}", "listen = 192.0.2.1:6379")
    conf2 = os.path.join(sp.dir, "bad-addr.conf")
    with open(conf2, "w") as f:
        f.write(bad_addr)
    os.chmod(conf2, 0o644)

    def check(user, conf, role):
        return run(_setpriv(user) + [env.bin, "check-config", "--role", role, "-c", conf],
                   timeout=30)

    res = check("redoubt-keyd", sp.conf, "keyd")
    assert res.returncode == 0, res.stdout + res.stderr
    res = check("redoubt-keyd", conf2, "keyd")
    assert res.returncode == 0, res.stdout + res.stderr
    res = check("redoubt", conf2, "workers")
    assert res.returncode == 78 and "cannot listen on 192.0.2.1:6379" in res.stderr, res.stderr
    # The workers' user cannot read the key: a full check fails, its own half's passes.
    res = check("redoubt", sp.conf, "all")
    assert res.returncode == 78, res.stdout + res.stderr
    res = check("redoubt", sp.conf, "workers")
    assert res.returncode == 0, res.stdout + res.stderr


def test_control_socket_elsewhere_is_named(env):
    """A socket unit whose path is not control-socket still works, and keyd says how to
    reach it (redoubt rotate would otherwise look at control-socket)."""
    sp = Split(env)
    try:
        sp.control_path = os.path.join(sp.dir, "run", "elsewhere.sock")
        sp.start()
        assert f"but systemd passed {sp.control_path}" in sp.keyd.log()
        res = run([env.bin, "status", "--socket", sp.control_path], timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        sp.stop()
