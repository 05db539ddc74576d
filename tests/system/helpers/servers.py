"""redis-server and `redoubt serve`, started and stopped by pid, with their logs kept in files."""
import os
import pwd
import signal
import subprocess
import tempfile
import time

from . import tlsclient
from .procs import (children_of, pid_alive, proc_cmdline, run, stop_pid, tail, wait_until)

WORKER_USER = "redoubt"
KEYD_USER = "redoubt-keyd"

# Every server started in this session, for attaching logs to failed tests.
REGISTRY = []


def new_workdir(root, prefix="t-"):
    """A world-searchable directory under root with audit/ and run/ owned by the keyd user."""
    d = tempfile.mkdtemp(prefix=prefix, dir=root)
    os.chmod(d, 0o755)
    kd = pwd.getpwnam(KEYD_USER)
    for sub in ("audit", "run"):
        p = os.path.join(d, sub)
        os.mkdir(p)
        os.chown(p, kd.pw_uid, kd.pw_gid)
        os.chmod(p, 0o755)
    return d


class _Logged:
    name = "?"
    log_path = None
    started_at = None
    stopped_at = None

    def log_tail(self, max_bytes=15000):
        return tail(self.log_path, max_bytes)

    def relevant_since(self, t0):
        return self.started_at is not None and (self.stopped_at is None or self.stopped_at >= t0)


class RedisServer(_Logged):
    def __init__(self, dir, extra=()):
        self.dir = dir
        self.sock = os.path.join(dir, "redis.sock")
        self.conf = os.path.join(dir, "redis.conf")
        self.log_path = os.path.join(dir, "redis.log")
        self.name = f"redis-server [{dir}]"
        self.proc = None
        lines = [
            "port 0",
            "bind 127.0.0.1",
            f"unixsocket {self.sock}",
            "unixsocketperm 777",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"dir {dir}",
            f"logfile {self.log_path}",
            "loglevel notice",
            *extra,
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10):
        out = open(os.path.join(self.dir, "redis.stdout"), "wb")
        self.proc = subprocess.Popen(["redis-server", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, process_group=0)
        out.close()
        self.started_at = time.monotonic()
        REGISTRY.append(self)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            return self.direct().ping()
        try:
            wait_until(up, timeout, what="redis-server to answer PING on its unix socket")
        except RuntimeError:
            raise
        return self

    def direct(self, **kw):
        import redis
        kw.setdefault("socket_timeout", 30)
        return redis.Redis(unix_socket_path=self.sock, **kw)

    def info(self, section=None):
        r = self.direct()
        try:
            return r.info(section) if section else r.info()
        finally:
            r.close()

    def connected_clients(self):
        """Clients connected to redis-server, excluding the one asking."""
        return self.info("clients")["connected_clients"] - 1

    def stop(self):
        if self.proc is not None and self.stopped_at is None:
            stop_pid(self.proc, term_timeout=10)
            self.stopped_at = time.monotonic()


class RedoubtDied(Exception):
    pass


class Redoubt(_Logged):
    """`redoubt serve -c CONFIG` in the foreground; stderr captured to DIR/redoubt.stderr."""

    def __init__(self, bin, dir, config_text, port, probe_ctx=None, workers=2, name="redoubt"):
        self.bin = bin
        self.dir = dir
        self.port = port
        self.probe_ctx = probe_ctx
        self.workers = workers
        self.conf = os.path.join(dir, f"{name}.conf")
        self.log_path = os.path.join(dir, f"{name}.stderr")
        self.name = f"{name} stderr [{self.log_path}]"
        self.proc = None
        self.exit_code = None
        self.seen_children = set()
        with open(self.conf, "w") as f:
            f.write(config_text)

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=30):
        err = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.bin, "serve", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=err, stderr=err, process_group=0)
        err.close()
        self.started_at = time.monotonic()
        REGISTRY.append(self)
        self.wait_ready(timeout)
        return self

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RedoubtDied(f"redoubt serve exited with status {self.proc.returncode}; stderr:\n"
                              f"{self.log_tail()}")

    def children(self):
        """{'keyd': [pid...], 'workers': {index: pid}, 'other': [(pid, cmdline)]}"""
        out = {"keyd": [], "workers": {}, "other": []}
        for pid, cmd in children_of(self.proc.pid):
            self.seen_children.add(pid)
            if cmd and os.path.basename(cmd[0]).startswith("python"):
                cmd = cmd[1:]       # an interpreted stand-in, during fixture development
            role = cmd[1] if len(cmd) > 1 else ""
            if role == "keyd":
                out["keyd"].append(pid)
            elif role == "worker" and len(cmd) > 2 and cmd[2].isdigit():
                out["workers"][int(cmd[2])] = pid
            else:
                out["other"].append((pid, cmd))
        return out

    def keyd_pid(self):
        k = self.children()["keyd"]
        return k[0] if len(k) == 1 else None

    def worker_pids(self):
        return sorted(self.children()["workers"].values())

    def probe(self, timeout=2.0):
        """One handshake with the probe context; True when it completed."""
        s = tlsclient.tls_connect(self.port, self.probe_ctx, timeout=timeout)
        s.close()
        return True

    def wait_ready(self, timeout=30, consecutive=4):
        """Until the process has its keyd and workers and the port completes handshakes."""
        deadline = time.monotonic() + timeout
        last = None
        good = 0
        while True:
            self.check_alive()
            ch = self.children()
            layout_ok = len(ch["keyd"]) == 1 and len(ch["workers"]) == self.workers
            if layout_ok and self.probe_ctx is not None:
                try:
                    self.probe()
                    good += 1
                except Exception as exc:  # noqa: BLE001
                    last = exc
                    good = 0
            elif layout_ok:
                good = consecutive
            if good >= consecutive:
                return
            if time.monotonic() > deadline:
                self.check_alive()
                raise TimeoutError(
                    f"redoubt not ready after {timeout}s (children {ch}, last probe error "
                    f"{last!r}); stderr:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=10):
        """SIGCONT the children (a test may have stopped one), SIGTERM serve, SIGKILL after
        timeout; then make sure no child we saw is left.  Returns serve's exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.children()
        for pid in list(self.seen_children):
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.exit_code = stop_pid(self.proc, term_timeout=timeout)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_alive(p) for p in self.seen_children):
            time.sleep(0.05)
        for pid in self.seen_children:
            cmd = proc_cmdline(pid) or []
            if pid_alive(pid) and ("keyd" in cmd[1:3] or "worker" in cmd[1:3]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.stopped_at = time.monotonic()
        return self.exit_code


def check_config(bin, conf, timeout=30, env=None):
    return run([bin, "check-config", "-c", conf], timeout=timeout, env=env)
