"""The setups of the side-by-side benchmark: how each server is configured, started, probed,
measured (/proc) and stopped. Python 3 standard library only.

Every setup gets its own fresh plaintext redis-server as backend (or is one), pinned with its
proxy to the server CPU. A setup is described by the pids of its roots; its "server side" is
those processes and all their descendants (redoubt's keyd and workers, hitch's worker).
"""

import os
import signal
import socket
import ssl
import string
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.join(HERE, "conf")

# The TLS policy every server gets: TLS 1.2+, ECDHE + AEAD only, AES-128-GCM preferred (the
# cheapest AEAD with AES-NI). The clients also ask for TLS_AES_128_GCM_SHA256 only, so every
# setup negotiates the same suite whatever its own preference order is.
CIPHERS12 = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
             "ECDHE-ECDSA-CHACHA20-POLY1305")
SUITES13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
CLIENT_SUITE = "TLS_AES_128_GCM_SHA256"

START_TIMEOUT_S = 10.0      # a server that is not answering by then is reported as failed
STOP_TIMEOUT_S = 5.0        # SIGTERM, then SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_CONNS = 11_000          # connection limit configured in each server (set by bench.py)


class SetupError(Exception):
    pass


class Env:
    """Shared state of one run: the temporary directory, the certificates, the processes."""

    def __init__(self, tmp, server_cpu, log):
        self.tmp = tmp
        self.server_cpu = server_cpu      # "0", or None when pinning is unavailable
        self.log = log
        self.procs = []                   # every process we started, for cleanup by pid
        self.ca = os.path.join(tmp, "certs", "ca.crt")
        self.cert = os.path.join(tmp, "certs", "node.crt")
        self.key = os.path.join(tmp, "certs", "node.key")
        self.pem = os.path.join(tmp, "certs", "node.pem")

    def pinned(self, argv):
        return (["taskset", "-c", self.server_cpu] if self.server_cpu else []) + argv

    def spawn(self, name, argv, cwd=None):
        logpath = os.path.join(self.tmp, "%s.log" % name)
        logf = open(logpath, "ab")
        # Own session: a Ctrl-C on the terminal reaches the harness only, which then stops
        # the servers in order.
        p = subprocess.Popen(self.pinned(argv), stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=cwd or self.tmp,
                             start_new_session=True)
        logf.close()
        proc = Proc(name, p, logpath)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []


class Proc:
    def __init__(self, name, popen, logpath):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.logpath = logpath

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.popen.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Our process did not stop: kill it and whatever it forked (by pid, from /proc).
            for pid in [self.pid] + descendants(self.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.popen.wait(STOP_TIMEOUT_S)

    def log_tail(self, n=15):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""


# --- /proc: the process tree, its CPU time and its memory ---------------------------------

def _stat_fields(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read().decode("ascii", "replace")
    # comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree(roots):
    pids = []
    for r in roots:
        if os.path.exists("/proc/%d" % r):
            pids.append(r)
            pids.extend(descendants(r))
    return sorted(set(pids))


def process_cpu_clock(pid):
    """Linux's CPU-time clock of a whole process (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED),
    what clock_getcpuclockid(3) returns): nanosecond sum of the run time of all its threads,
    including threads that have exited (stunnel's per-connection threads)."""
    return ((~pid) << 3) | 2


def cpu_seconds(roots):
    """CPU time (user + system) of every process of the tree, in seconds: the precise
    per-process clock above, plus cutime + cstime from /proc/PID/stat for children the
    process has reaped (e.g. a restarted worker). /proc/PID/stat's utime + stime would do
    too, but only in 10 ms ticks: too coarse for a few-second run divided by 600 handshakes.
    """
    total = 0.0
    for pid in tree(roots):
        try:
            f = _stat_fields(pid)
            total += (int(f[13]) + int(f[14])) / CLK_TCK
            try:
                total += time.clock_gettime(process_cpu_clock(pid))
            except OSError:
                # No such clock: fall back to utime + stime (fields 14 and 15 of proc(5)).
                total += (int(f[11]) + int(f[12])) / CLK_TCK
        except OSError:
            continue
    return total


def memory_kib(roots):
    """Sum of VmRSS (and of Pss, which splits shared pages fairly) over the tree, in KiB."""
    rss = pss = 0
    pids = tree(roots)
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_kib": rss, "pss_kib": pss, "processes": len(pids)}


# --- a minimal RESP client, for probes and INFO ---------------------------------------------

def _connect(endpoint, ca, timeout=5.0):
    kind = endpoint[0]
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(endpoint[1])
        return s
    s = socket.create_connection(("127.0.0.1", endpoint[1]), timeout=timeout)
    if kind == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        try:
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        except BaseException:
            s.close()
            raise
    return s


def redis_command(endpoint, ca, *args, timeout=5.0):
    """Send one command, return the reply's payload (simple, bulk or error string)."""
    req = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
    s = _connect(endpoint, ca, timeout)
    try:
        s.sendall(req)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if buf[:1] in (b"+", b"-", b":") and buf.endswith(b"\r\n"):
                return buf[1:-2].decode()
            if buf[:1] == b"$" and b"\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n")
                n = int(head[1:])
                if n < 0:
                    return None
                if len(rest) >= n + 2:
                    return rest[:n].decode()
        raise SetupError("no complete reply to %s from %s" % (args[0], endpoint))
    finally:
        s.close()


def redis_info(endpoint, ca):
    """INFO stats + commandstats as a flat dict of numbers (cmdstat_get -> calls)."""
    text = redis_command(endpoint, ca, "INFO", "stats", "commandstats")
    out = {}
    for line in text.splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            fields = dict(kv.split("=") for kv in v.split(","))
            out[k] = int(fields.get("calls", 0))
            out[k + "_failed"] = (int(fields.get("failed_calls", 0))
                                  + int(fields.get("rejected_calls", 0)))
        else:
            try:
                out[k] = float(v) if "." in v else int(v)
            except ValueError:
                pass
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(endpoint, ca, proc_list, timeout=START_TIMEOUT_S):
    """PING through the endpoint until +PONG, a process dies, or the timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in proc_list:
            if not p.alive():
                raise SetupError("%s exited with status %s during start-up:\n%s"
                                 % (p.name, p.popen.returncode, p.log_tail()))
        try:
            if redis_command(endpoint, ca, "PING", timeout=2.0) == "PONG":
                return
        except (OSError, ssl.SSLError, SetupError, ValueError) as e:
            last = e
        time.sleep(0.1)
    tails = "\n".join("%s log:\n%s" % (p.name, p.log_tail(8)) for p in proc_list
                      if p.log_tail(8))
    raise SetupError("not answering PING on %s within %.0f s (last error: %s)%s"
                     % (endpoint, timeout, last, "\n" + tails if tails else ""))


def render(template, dest, **values):
    with open(os.path.join(CONF, template)) as f:
        text = string.Template(f.read()).substitute(values)
    with open(dest, "w") as f:
        f.write(text)
    return dest


# --- the setups -------------------------------------------------------------------------------

class Setup:
    """One server-side configuration. After start(): self.port (where clients connect),
    self.roots (pids whose trees are the server side), self.backend_ep (where INFO is read)."""

    family = None           # plaintext, native, haproxy, hitch, stunnel, redoubt
    variant = "-"           # tcp / unix: how the proxy reaches redis-server
    tls = True

    def __init__(self, env):
        self.env = env
        self.procs = []
        self.port = None
        self.roots = []
        self.backend_ep = None
        self.dir = None

    @property
    def name(self):
        return self.family if self.variant == "-" else "%s-%s" % (self.family, self.variant)

    def client_ep(self):
        return ("tls" if self.tls else "tcp", self.port)

    def _dir(self):
        self.dir = os.path.join(self.env.tmp, self.name)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        return self.dir

    def _start_backend(self):
        d = self._dir()
        port = free_port()
        sock = os.path.join(d, "redis.sock")
        conf = render("redis.conf.in", os.path.join(d, "redis.conf"), port=port,
                      unixsocket=sock, logfile=os.path.join(d, "redis.log"), dir=d)
        p = self.env.spawn(self.name + "-redis", ["redis-server", conf])
        self.procs.append(p)
        self.backend_ep = ("tcp", port)
        wait_ready(self.backend_ep, self.env.ca, [p])
        return port, sock

    def backend_address(self, port, sock):
        raise NotImplementedError

    def start(self):
        raise NotImplementedError

    def _finish_start(self, timeout=START_TIMEOUT_S):
        self.roots = [p.pid for p in self.procs]
        wait_ready(self.client_ep(), self.env.ca, self.procs, timeout)

    def alive(self):
        return all(p.alive() for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()

    def describe(self):
        return ""


class Plaintext(Setup):
    family = "plaintext"
    tls = False

    def start(self):
        self.port, _ = self._start_backend()
        self._finish_start()

    def describe(self):
        return "redis-server, no TLS: the physical limit"


class Native(Setup):
    family = "native"

    def start(self):
        d = self._dir()
        self.port = free_port()
        e = self.env
        conf = render("redis-tls.conf.in", os.path.join(d, "redis.conf"), port=self.port,
                      cert=e.cert, key=e.key, ca=e.ca, ciphers=CIPHERS12,
                      ciphersuites=SUITES13, logfile=os.path.join(d, "redis.log"), dir=d)
        self.procs.append(e.spawn(self.name + "-redis", ["redis-server", conf]))
        self.backend_ep = ("tls", self.port)
        self._finish_start()

    def describe(self):
        return "redis-server with its own TLS (tls-port)"


class Haproxy(Setup):
    family = "haproxy"

    def __init__(self, env, variant):
        super().__init__(env)
        self.variant = variant

    def start(self):
        bport, sock = self._start_backend()
        self.port = free_port()
        backend = sock if self.variant == "unix" else "127.0.0.1:%d" % bport
        cfg = render("haproxy.cfg.in", os.path.join(self.dir, "haproxy.cfg"), port=self.port,
                     backend=backend, pem=self.env.pem, ciphers=CIPHERS12,
                     ciphersuites=SUITES13, dir=self.dir, maxconn=MAX_CONNS)
        self.procs.append(self.env.spawn(self.name, ["haproxy", "-db", "-f", cfg]))
        self._finish_start()

    def describe(self):
        return "HAProxy, nbthread 1, mode tcp, ssl crt; backend over %s" % self.variant


class Stunnel(Setup):
    family = "stunnel"

    def __init__(self, env, variant):
        super().__init__(env)
        self.variant = variant

    def start(self):
        bport, sock = self._start_backend()
        self.port = free_port()
        backend = sock if self.variant == "unix" else "127.0.0.1:%d" % bport
        cfg = render("stunnel.conf.in", os.path.join(self.dir, "stunnel.conf"), port=self.port,
                     backend=backend, cert=self.env.cert, key=self.env.key,
                     ciphers=CIPHERS12, ciphersuites=SUITES13, dir=self.dir)
        self.procs.append(self.env.spawn(self.name, ["stunnel4", cfg]))
        self._finish_start()

    def describe(self):
        return "stunnel4 (thread per connection); backend over %s" % self.variant


class Hitch(Setup):
    family = "hitch"

    def __init__(self, env, variant):
        super().__init__(env)
        self.variant = variant

    def start(self):
        bport, sock = self._start_backend()
        self.port = free_port()
        backend = sock if self.variant == "unix" else "[127.0.0.1]:%d" % bport
        os.makedirs(os.path.join(self.dir, "hitch-ocsp"), exist_ok=True)
        cfg = render("hitch.conf.in", os.path.join(self.dir, "hitch.conf"), port=self.port,
                     backend=backend, pem=self.env.pem, ciphers=CIPHERS12,
                     ciphersuites=SUITES13, dir=self.dir)
        self.procs.append(self.env.spawn(self.name, ["hitch", "--config=" + cfg]))
        self._finish_start()

    def describe(self):
        return "hitch --workers 1; backend over %s" % self.variant


class Redoubt(Setup):
    family = "redoubt"
    binary = None           # set by the harness from the command line

    def __init__(self, env, variant):
        super().__init__(env)
        self.variant = variant

    def start(self):
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise SetupError("redoubt binary %r not found or not executable" % self.binary)
        bport, sock = self._start_backend()
        self.port = free_port()
        backend = "unix:" + sock if self.variant == "unix" else "127.0.0.1:%d" % bport
        auditdir = os.path.join(self.dir, "audit")
        os.makedirs(auditdir, exist_ok=True)
        subprocess.run(["chown", "redoubt-keyd:", auditdir], check=True)
        os.chmod(auditdir, 0o750)
        cfg = render("redoubt.conf.in", os.path.join(self.dir, "redoubt.conf"), port=self.port,
                     backend=backend, cert=self.env.cert, key=self.env.key, dir=self.dir,
                     auditdir=auditdir)
        self.procs.append(self.env.spawn(self.name, [self.binary, "serve", "-c", cfg]))
        self._finish_start()
        self.audit_log = os.path.join(auditdir, "audit.jsonl")

    def describe(self):
        return "redoubt, workers = 1, keyd signing, audit on; backend over %s" % self.variant


def all_setups(env):
    """In run order. redoubt early so that a time-budget cut never drops it."""
    return [
        Plaintext(env),
        Redoubt(env, "unix"), Redoubt(env, "tcp"),
        Haproxy(env, "tcp"), Haproxy(env, "unix"),
        Native(env),
        Hitch(env, "tcp"), Hitch(env, "unix"),
        Stunnel(env, "tcp"), Stunnel(env, "unix"),
    ]
