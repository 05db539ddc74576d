#!/usr/bin/python3
"""Side-by-side benchmark of redoubt against plaintext redis-server, native Redis TLS, HAProxy,
hitch and stunnel (issue 10). Started by bench/run.sh, which installs packages, creates users
and raises limits; see bench/README.md for what is measured and how.

Environment: BENCH_QUICK=1 (about 2 minutes), BENCH_SCALE (request-count multiplier),
BENCH_SETUPS (comma list of setup names), BENCH_MEM_SETUPS, BENCH_REPS (rounds; the
request counts are divided among them), BENCH_BUDGET_S, BENCH_KEEP=1,
BENCH_DOCS=0/1, BENCH_OUT (results directory).
"""

import datetime
import json
import resource
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
import signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import setups as S          # noqa: E402
import report               # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "loadgen.py")
PYTHON = "/usr/bin/python3"

SETTLE_S = 0.2          # after a run, let the server finish closing before reading its CPU
RUN_TIMEOUT_S = 120     # hard bound on any single client run
MIN_RUN_TIMEOUT_S = 30  # ... never shorter than this (the slowest healthy run takes ~8 s)
CLIENTS = 50            # redis-benchmark -c

# Workloads in run order (k0 must read a small value: it runs before the 1 KiB/100 KiB sets).
# base_n is the request count at BENCH_SCALE=1, chosen so one run takes a few seconds on the
# slowest setup of the reference machine (2 cores, client-bound).
WORKLOADS = [
    # id,         kind,        params,                                   base_n
    ("p1-set",    "rb", dict(test="set", P=1, d=3),                     100_000),
    ("p1-get",    "rb", dict(test="get", P=1, d=3),                     100_000),
    ("p16-set",   "rb", dict(test="set", P=16, d=3),                  1_200_000),
    ("p16-get",   "rb", dict(test="get", P=16, d=3),                  1_200_000),
    ("k0-get",    "rb", dict(test="get", P=1, d=3, k=0),                  2_000),
    ("d1k-set",   "rb", dict(test="set", P=1, d=1024),                  50_000),
    ("d1k-get",   "rb", dict(test="get", P=1, d=1024),                  50_000),
    ("d100k-set", "rb", dict(test="set", P=1, d=102400),                 5_000),
    ("d100k-get", "rb", dict(test="get", P=1, d=102400),                 5_000),
    ("hs-full",   "lg", dict(resume=False),                              2_000),
    ("hs-resume", "lg", dict(resume=True),                               2_000),
]
LOADGEN_THREADS = 8
MEM_STEPS = (1_000, 10_000)
MEM_SETTLE_S = 1.0
# Idle means steady state: redis-server 7.0 gives every new client 16 KiB of reply buffer and
# a query buffer, and its clientsCron shrinks or frees them over the next ~10 s of idleness
# (measured: 9.5 KiB/client at once, 8.7 after 3 s, 5.8 after 6 s, 1.9 after 12 s: it resizes
# in 5 s periods).  So the connections stay idle MEM_IDLE_MIN_S, then RSS is sampled every
# second until one second changes it by less than MEM_STABLE_FRACTION of what the
# connections added, twice in a row, or MEM_STABLE_MAX_S passed; both the figure at
# MEM_SETTLE_S and the settled one are kept.  The same rule for every setup.
MEM_IDLE_MIN_S = 12.0
MEM_STABLE_FRACTION = 0.01
MEM_STABLE_MAX_S = 20.0
MEM_WARMUP_CONNS = 20
# Deadline of the idle-connection client: generous (a healthy setup opens 10,000 in ~15 s
# here) but short enough that a server that stops accepting cannot eat the time budget.
MEM_HOLD_BASE_S = 20
MEM_HOLD_PER_CONN_S = 0.005
FD_RESERVE = 400        # descriptors a proxy needs besides its two per connection


def STUNNEL_CLIENTS(nofile):
    """stunnel admits at most RLIMIT_NOFILE * 125 / 256 clients (its "Clients allowed")."""
    return nofile * 125 // 256 - 16


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def env_flag(name, default=False):
    v = os.environ.get(name)
    return default if v is None or v == "" else v not in ("0", "no", "false")


def client_argv(cpu, argv):
    return (["taskset", "-c", cpu] if cpu else []) + argv


class Runner:
    def __init__(self, env, client_cpu, scale, budget_s, client_env):
        self.env = env
        self.client_cpu = client_cpu
        self.scale = scale
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.client_env = client_env
        self.clients = []       # client processes we started (for cleanup by pid)

    def over_budget(self):
        return time.monotonic() - self.t0 > self.budget_s

    def run_timeout(self):
        """RUN_TIMEOUT_S, shortened near the end of the budget so that one hung server
        cannot push the whole run far past it."""
        left = self.budget_s - (time.monotonic() - self.t0)
        return int(min(RUN_TIMEOUT_S, max(MIN_RUN_TIMEOUT_S, left + MIN_RUN_TIMEOUT_S)))

    def n_for(self, base):
        # Rounded up to hundreds: readable counts in the report.
        return max(100, -(-int(base * self.scale) // 100) * 100)

    # -- measurement frame ---------------------------------------------------------------

    def _snap(self, setup):
        return S.redis_info(setup.backend_ep, self.env.ca), S.cpu_seconds(setup.roots)

    def _spawn_client(self, argv, stdin=None):
        p = subprocess.Popen(client_argv(self.client_cpu, argv), stdin=stdin,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=self.client_env, start_new_session=True)
        self.clients.append(p)
        return p

    def _wait_client(self, p, timeout):
        """Wait with a bound; returns (rc or None on timeout, output, client cpu seconds)."""
        out = b""
        deadline = time.monotonic() + timeout
        fd = p.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill(p)
                return None, out.decode("utf-8", "replace"), None
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        self.clients.remove(p)
        return p.returncode, out.decode("utf-8", "replace"), ru.ru_utime + ru.ru_stime

    def _kill(self, p):
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        if p in self.clients:
            self.clients.remove(p)

    def kill_clients(self):
        for p in list(self.clients):
            self._kill(p)

    # -- redis-benchmark -----------------------------------------------------------------

    def run_rb(self, setup, wid, params, n):
        argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(setup.port), "-c", str(CLIENTS),
                "-n", str(n), "-P", str(params["P"]), "-d", str(params["d"]),
                "-t", params["test"], "--csv"]
        if params.get("k") == 0:
            argv += ["-k", "0"]
        if setup.tls:
            argv += ["--tls", "--cacert", self.env.ca, "--tls-ciphersuites", S.CLIENT_SUITE]
        info0, cpu0 = self._snap(setup)
        t = time.monotonic()
        p = self._spawn_client(argv)
        timeout = self.run_timeout()
        rc, out, ccpu = self._wait_client(p, timeout)
        wall = time.monotonic() - t
        time.sleep(SETTLE_S)
        cpu1 = S.cpu_seconds(setup.roots)
        info1 = S.redis_info(setup.backend_ep, self.env.ca)
        res = {"kind": "redis-benchmark", "requested": n, "argv": " ".join(argv),
               "wall_s": round(wall, 3), "client_cpu_s": ccpu, "server_cpu_s": cpu1 - cpu0}
        cmd = "cmdstat_" + params["test"]
        calls = info1.get(cmd, 0) - info0.get(cmd, 0)
        res["backend_calls"] = calls
        res["backend_connections"] = (info1.get("total_connections_received", 0)
                                      - info0.get("total_connections_received", 0))
        res["error_replies"] = (info1.get("total_error_replies", 0)
                                - info0.get("total_error_replies", 0))
        problems = []
        if rc is None:
            problems.append("timed out after %d s" % timeout)
            res["timed_out"] = True
        elif rc != 0:
            problems.append("exit status %d" % rc)
        errs = [ln for ln in out.splitlines() if "rror" in ln]
        if errs:
            problems.append("; ".join(errs[:3]))
        row = None
        lines = [ln for ln in out.splitlines() if ln.startswith('"')]
        if len(lines) >= 2:
            head = [h.strip('"') for h in lines[0].split(",")]
            vals = [v.strip('"') for v in lines[-1].split(",")]
            row = dict(zip(head, vals))
        if row is None:
            problems.append("no CSV result in output: %r" % out[-300:])
        else:
            res["ops_per_s"] = float(row["rps"])
            res["p50_ms"] = float(row["p50_latency_ms"])
            res["p99_ms"] = float(row["p99_latency_ms"])
            res["avg_ms"] = float(row["avg_latency_ms"])
        if calls < n:
            problems.append("backend executed %d of %d %s" % (calls, n, params["test"].upper()))
        if res["error_replies"]:
            problems.append("%d error replies" % res["error_replies"])
        res["ops"] = calls
        res["failed"] = max(0, n - calls) + res["error_replies"]
        res["ok"] = not problems
        res["problems"] = problems
        if calls > 0:
            res["cpu_us_per_op"] = res["server_cpu_s"] / calls * 1e6
        if params.get("k") == 0 and calls:
            res["connections_per_request"] = round(res["backend_connections"] / calls, 3)
        return res

    # -- loadgen handshake ---------------------------------------------------------------

    def run_lg(self, setup, wid, params, n):
        argv = [PYTHON, LOADGEN, "handshake", "--port", str(setup.port), "--cafile",
                self.env.ca, "--count", str(n), "--threads", str(LOADGEN_THREADS),
                "--duration", str(self.run_timeout() - 15)]
        if params["resume"]:
            argv.append("--resume")
        p = self._spawn_client(argv, stdin=subprocess.PIPE)
        line = read_line(p, 30)
        if line != "READY":
            self._kill(p)
            return {"ok": False, "problems": ["loadgen did not get ready: %r" % line],
                    "failed": n}
        info0, cpu0 = self._snap(setup)
        t = time.monotonic()
        p.stdin.write(b"GO\n")
        p.stdin.close()
        rc, out, ccpu = self._wait_client(p, self.run_timeout())
        wall = time.monotonic() - t
        time.sleep(SETTLE_S)
        cpu1 = S.cpu_seconds(setup.roots)
        info1 = S.redis_info(setup.backend_ep, self.env.ca)
        res = {"kind": "loadgen", "requested": n, "wall_s": round(wall, 3),
               "server_cpu_s": cpu1 - cpu0}
        problems = []
        try:
            lg = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            lg = None
            problems.append("loadgen output unreadable (rc %s): %r" % (rc, out[-300:]))
            res["timed_out"] = rc is None
        if lg:
            res.update({k: lg[k] for k in ("ok", "errors", "reused", "ops_per_s", "p50_ms",
                                           "p99_ms", "client_cpu_s", "version", "cipher")})
            res["ops"] = res.pop("ok")
            if lg["errors"]:
                problems.append("%d failed connections (last: %s)" % (lg["errors"],
                                                                      lg["last_error"]))
            if lg["timed_out"]:
                problems.append("deadline reached before %d connections" % n)
                res["timed_out"] = True
            if params["resume"] and lg["reused"] < lg["ok"] * 0.99:
                problems.append("only %d of %d connections resumed their session"
                                % (lg["reused"], lg["ok"]))
            if lg["ok"]:
                res["cpu_us_per_op"] = res["server_cpu_s"] / lg["ok"] * 1e6
        pings = info1.get("cmdstat_ping", 0) - info0.get("cmdstat_ping", 0)
        res["backend_calls"] = pings
        if lg and pings < lg["ok"]:
            problems.append("backend saw %d PINGs for %d connections" % (pings, lg["ok"]))
        res["failed"] = (n - lg["ok"]) if lg else n
        res["ok"] = not problems
        res["problems"] = problems
        return res

    # -- idle-connection memory ----------------------------------------------------------

    def run_memory(self, setup, steps):
        # A few connections first, so that one-time initialisation (OpenSSL, pools) is not
        # counted against the idle connections.
        warm = self._spawn_client([PYTHON, LOADGEN, "handshake", "--port", str(setup.port),
                                   "--cafile", self.env.ca, "--count",
                                   str(MEM_WARMUP_CONNS), "--threads", "2", "--duration", "30"],
                                  stdin=subprocess.PIPE)
        if read_line(warm, 30) == "READY":
            warm.stdin.write(b"GO\n")
            warm.stdin.close()
        self._wait_client(warm, 60)
        time.sleep(MEM_SETTLE_S)
        argv = [PYTHON, LOADGEN, "hold", "--port", str(setup.port), "--cafile", self.env.ca,
                "--steps", ",".join(str(s) for s in steps), "--threads", str(LOADGEN_THREADS),
                "--duration", str(int(MEM_HOLD_BASE_S + max(steps) * MEM_HOLD_PER_CONN_S))]
        p = self._spawn_client(argv, stdin=subprocess.PIPE)
        res = {"steps": [], "problems": []}
        line = read_line(p, 30)
        if line != "READY":
            self._kill(p)
            res["problems"].append("loadgen did not get ready: %r" % line)
            res["ok"] = False
            return res
        base = S.memory_kib(setup.roots)
        res["idle"] = base
        p.stdin.write(b"GO\n")
        p.stdin.flush()
        for target in steps:
            line = read_line(p, MEM_HOLD_BASE_S + max(steps) * MEM_HOLD_PER_CONN_S + 15)
            if not line or not line.startswith("HOLD"):
                res["problems"].append("no HOLD line for %d: %r" % (target, line))
                break
            held = int(line.split()[2])
            time.sleep(MEM_SETTLE_S)
            first = S.memory_kib(setup.roots)
            m, waited = self._memory_settled(setup, base, first)
            step = {"connections": held, "target": target, "rss_kib": m["rss_kib"],
                    "pss_kib": m["pss_kib"], "processes": m["processes"],
                    "rss_kib_first": first["rss_kib"], "settle_s": round(waited, 1)}
            if held:
                step["rss_per_conn_kib"] = (m["rss_kib"] - base["rss_kib"]) / held
                step["pss_per_conn_kib"] = (m["pss_kib"] - base["pss_kib"]) / held
                step["rss_per_conn_kib_first"] = (first["rss_kib"] - base["rss_kib"]) / held
            if held < target:
                res["problems"].append("only %d of %d connections opened" % (held, target))
            res["steps"].append(step)
            log("  %-14s %6d idle connections: RSS %7d KiB (%+.1f KiB/conn; %+.1f at first, "
                "settled in %.0f s)" % (setup.name, held, m["rss_kib"],
                                        step.get("rss_per_conn_kib", 0),
                                        step.get("rss_per_conn_kib_first", 0), waited))
            try:
                p.stdin.write(b"next\n")
                p.stdin.flush()
            except BrokenPipeError:
                break
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        rc, out, _ = self._wait_client(p, 60)
        try:
            tail = json.loads(out.strip().splitlines()[-1])
            if tail.get("errors"):
                res["problems"].append("%d failed connections (last: %s)"
                                       % (tail["errors"], tail["last_error"]))
        except (ValueError, IndexError):
            res["problems"].append("loadgen hold output unreadable (rc %s)" % rc)
        res["ok"] = not res["problems"]
        return res

    def _memory_settled(self, setup, base, first):
        """RSS once the setup's processes stop giving memory back (see MEM_STABLE_*)."""
        t0 = time.monotonic()
        time.sleep(MEM_IDLE_MIN_S - MEM_SETTLE_S)
        prev, calm = S.memory_kib(setup.roots), 0
        while time.monotonic() - t0 < MEM_STABLE_MAX_S and calm < 2:
            time.sleep(1.0)
            cur = S.memory_kib(setup.roots)
            calm = calm + 1 if _stable(prev, cur, base) else 0
            prev = cur
        return prev, MEM_SETTLE_S + time.monotonic() - t0


def _stable(prev, cur, base):
    added = max(cur["rss_kib"] - base["rss_kib"], 1)
    return abs(cur["rss_kib"] - prev["rss_kib"]) <= MEM_STABLE_FRACTION * added


def read_line(p, timeout):
    """One line from a client's stdout, bounded in time (byte at a time: no buffering)."""
    fd = p.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
        if not r:
            continue
        c = os.read(fd, 1)
        if not c:
            break
        if c == b"\n":
            return buf.decode("utf-8", "replace").strip()
        buf += c
    return buf.decode("utf-8", "replace").strip() or None


def tls_params(env, setup, client_cpu):
    """What the benchmark clients negotiate with this setup (one openssl s_client)."""
    try:
        out = subprocess.run(
            client_argv(client_cpu, ["openssl", "s_client", "-connect",
                                     "127.0.0.1:%d" % setup.port, "-CAfile", env.ca,
                                     "-ciphersuites", S.CLIENT_SUITE, "-brief"]),
            input=b"", capture_output=True, timeout=10).stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return {}
    keys = {"Protocol version": "protocol", "Ciphersuite": "cipher",
            "Server Temp Key": "group", "Signature type": "signature",
            "Verification": "verification"}
    res = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in keys:
            res[keys[k.strip()]] = v.strip()
    return res


def versions(redoubt):
    def first(argv):
        try:
            r = subprocess.run(argv, capture_output=True, timeout=10)
            text = (r.stdout + r.stderr).decode("utf-8", "replace").splitlines()
            return next((ln.strip() for ln in text if ln.strip()
                         and "inetd" not in ln), "")
        except (OSError, subprocess.TimeoutExpired):
            return "not available"
    v = {
        "redis-server": first(["redis-server", "--version"]),
        "redis-benchmark": first(["redis-benchmark", "--version"]),
        "haproxy": first(["haproxy", "-v"]),
        "hitch": first(["hitch", "--version"]),
        "stunnel": first(["stunnel4", "-version"]),
        "openssl": first(["openssl", "version"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    if redoubt and os.access(redoubt, os.X_OK):
        v["redoubt"] = first([redoubt, "version"])
    return v


def source_info():
    """Which redoubt source the binary was built from (read-only git queries)."""
    def git(*args):
        try:
            r = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True,
                               timeout=10)
            return r.stdout.decode().strip() if r.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "uncommitted_changes": bool(status)}


def host_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpu_model": model, "cpus": os.cpu_count(), "loadavg_start": load,
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def make_certs(env):
    """One P-256 CA and one P-256 server certificate (SAN localhost, 127.0.0.1) for all."""
    d = os.path.dirname(env.ca)
    os.makedirs(d)
    os.chmod(d, 0o755)

    def ossl(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "365",
         "-subj", "/CN=redoubt bench CA", "-out", "ca.crt",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", "node.key")
    ossl("req", "-new", "-key", "node.key", "-subj", "/CN=localhost", "-out", "node.csr")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "365", "-sha256", "-extfile", "ext.cnf", "-out", "node.crt")
    with open(env.pem, "w") as out:
        for part in ("node.crt", "node.key"):
            with open(os.path.join(d, part)) as f:
                out.write(f.read())
    os.chmod(env.pem, 0o600)
    # keyd reads the key as redoubt-keyd; everyone else reads it as root.
    os.chmod(env.key, 0o640)
    try:
        shutil.chown(env.key, group="redoubt-keyd")
    except (LookupError, OSError):
        pass
    # Clients (Python ssl via OPENSSL_CONF) offer only the shared TLS 1.3 suite.
    with open(os.path.join(env.tmp, "client-openssl.cnf"), "w") as f:
        f.write("openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n"
                "[ssl_sect]\nsystem_default = system_default_sect\n"
                "[system_default_sect]\nCiphersuites = %s\n" % S.CLIENT_SUITE)


def main():
    redoubt = sys.argv[1] if len(sys.argv) > 1 else ""
    quick = env_flag("BENCH_QUICK")
    scale = float(os.environ.get("BENCH_SCALE") or (0.2 if quick else 1.0))
    budget = float(os.environ.get("BENCH_BUDGET_S") or (150 if quick else 540))
    write_docs = env_flag("BENCH_DOCS", default=not quick)
    only = [s for s in os.environ.get("BENCH_SETUPS", "").split(",") if s]
    # A proxy holds two descriptors per connection (client + backend). Where RLIMIT_NOFILE
    # cannot be raised far enough (a container without CAP_SYS_RESOURCE), the top step is
    # lowered to what fits, and the report says so.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fd_cap = max(MEM_STEPS[0],
                 min((nofile - FD_RESERVE) // 2, STUNNEL_CLIENTS(nofile)) // 100 * 100)
    mem_steps = tuple(sorted({min(s, fd_cap) for s in MEM_STEPS}))
    if quick:
        mem_steps = mem_steps[:1]
    if fd_cap < MEM_STEPS[-1]:
        log("RLIMIT_NOFILE is %d: idle-connection memory measured at %d instead of %d"
            % (nofile, fd_cap, MEM_STEPS[-1]))
    S.MAX_CONNS = min(max(mem_steps) + 500, (nofile - 100) // 2)
    mem_default = "native,haproxy-tcp,hitch-tcp,stunnel-tcp,redoubt-tcp,redoubt-unix"
    mem_setups = [s for s in (os.environ.get("BENCH_MEM_SETUPS") or mem_default).split(",")
                  if s]
    outdir = os.environ.get("BENCH_OUT") or os.path.join(HERE, "results")

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (os.cpu_count() or 1) >= 2:
        server_cpu, client_cpu = "0", "1"
    else:
        server_cpu = client_cpu = None
        log("WARNING: fewer than 2 CPUs: no pinning, figures are not comparable")
    tmp = tempfile.mkdtemp(prefix="redoubt-bench.")
    os.chmod(tmp, 0o755)        # reachable by hitch's and redoubt's users (UNIX sockets)
    env = S.Env(tmp, server_cpu, log)
    S.Redoubt.binary = os.path.abspath(redoubt) if redoubt else None
    client_env = dict(os.environ, OPENSSL_CONF=os.path.join(tmp, "client-openssl.cnf"))
    reps = max(1, int(os.environ.get("BENCH_REPS") or (1 if quick else 3)))
    runner = Runner(env, client_cpu, scale / reps, budget, client_env)

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if quick else "full",
        "scale": scale,
        "repetitions": reps,
        "budget_s": budget,
        "pinning": {"server_cpu": server_cpu, "client_cpu": client_cpu,
                    "affinity_cpus": ncpu},
        "host": host_info(),
        "versions": versions(redoubt),
        "source": source_info(),
        "client": {"redis-benchmark": "-c %d, --tls-ciphersuites %s" % (CLIENTS, S.CLIENT_SUITE),
                   "loadgen_threads": LOADGEN_THREADS},
        "workloads": [{"id": w[0], "kind": w[1], "params": w[2],
                       "requests": runner.n_for(w[3]) * reps,
                       "requests_per_repetition": runner.n_for(w[3])} for w in WORKLOADS],
        "memory_steps": list(mem_steps),
        "memory_steps_requested": list(MEM_STEPS),
        "rlimit_nofile": nofile,
        "setups": {},
    }
    interrupted = None
    running = []
    try:
        make_certs(env)
        # 1. Start every setup; all stay up (idle) for the whole run, so that each round of
        #    measurements visits every setup within seconds and the noise of a shared
        #    machine spreads over all of them instead of hitting one.
        for setup in S.all_setups(env):
            if only and setup.name not in only:
                continue
            entry = {"family": setup.family, "variant": setup.variant,
                     "description": setup.describe(), "workloads": {}}
            results["setups"][setup.name] = entry
            log("%s: starting (%s)" % (setup.name, setup.describe()))
            try:
                setup.start()
            except (S.SetupError, OSError, subprocess.CalledProcessError) as e:
                setup.stop()
                entry["status"] = "skipped"
                entry["reason"] = str(e)
                log("%s: SKIPPED: %s" % (setup.name, str(e).splitlines()[0]))
                for ln in str(e).splitlines()[1:]:
                    print("    " + ln)
                continue
            entry["status"] = "ok"
            if setup.tls:
                entry["tls"] = tls_params(env, setup, client_cpu)
                log("  negotiated: %s" % ", ".join("%s=%s" % kv for kv in entry["tls"].items()))
            running.append(setup)

        # 2. Memory per idle connection, on fresh processes (no traffic yet but probes).
        for setup in running:
            if setup.tls and setup.name in mem_setups and not runner.over_budget():
                results["setups"][setup.name]["memory"] = runner.run_memory(setup, mem_steps)

        # 3. Rounds: every workload on every setup, `reps` times. A round cut short by the
        #    time budget leaves the earlier rounds' figures intact.
        raw = {}
        for rep in range(reps):
            if runner.over_budget():
                log("time budget (%d s) used up after %d round(s)" % (budget, rep))
                break
            log("round %d of %d" % (rep + 1, reps))
            for wid, kind, params, base in WORKLOADS:
                for setup in running:
                    entry = results["setups"][setup.name]
                    if kind == "lg" and not setup.tls:
                        continue
                    n = runner.n_for(base)
                    if runner.over_budget():
                        res = {"ok": False, "skipped": True, "failed": 0,
                               "problems": ["time budget used up"]}
                    elif not setup.alive():
                        res = {"ok": False, "failed": n, "problems": ["server process died"]}
                        entry["status"] = "died"
                    elif entry.get("hung"):
                        res = {"ok": False, "skipped": True, "failed": 0, "problems": [
                            "not run: an earlier run on this setup timed out (%s)"
                            % entry["hung"]]}
                    else:
                        try:
                            fn = runner.run_rb if kind == "rb" else runner.run_lg
                            res = fn(setup, wid, params, n)
                        except (S.SetupError, OSError) as e:
                            res = {"ok": False, "problems": ["%s" % e], "failed": n}
                    if res.get("timed_out") and not entry.get("hung"):
                        entry["hung"] = wid
                        log("%s: %s timed out; its remaining runs are skipped"
                            % (setup.name, wid))
                    raw.setdefault((setup.name, wid), []).append(res)
                    log("  %-14s %-9s %9s ops/s  p50 %6s ms  p99 %6s ms  %8s us/op%s" % (
                        setup.name, wid, fmt(res.get("ops_per_s"), 0),
                        fmt(res.get("p50_ms"), 3), fmt(res.get("p99_ms"), 3),
                        fmt(res.get("cpu_us_per_op"), 2),
                        "" if res.get("ok") else "  FAILED: " + "; ".join(res["problems"])))
        for (name, wid), runs in raw.items():
            results["setups"][name]["workloads"][wid] = runs
        for setup in running:
            aggregate(results["setups"][setup.name])
    except KeyboardInterrupt as e:
        interrupted = str(e) or "interrupted"
        log("interrupted: stopping everything we started")
    finally:
        runner.kill_clients()
        for setup in running:
            setup.stop()
        env.stop_all()
    results["duration_s"] = round(time.monotonic() - runner.t0, 1)
    with open("/proc/loadavg") as f:
        results["host"]["loadavg_end"] = f.read().split()[:3]
    if interrupted:
        results["interrupted"] = interrupted
        for entry in results["setups"].values():
            for wid, w in list(entry["workloads"].items()):
                if isinstance(w, list):
                    entry["workloads"][wid] = {"ok": False, "problems": ["interrupted"],
                                               "runs": w}

    report.analyse(results)
    os.makedirs(outdir, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ") + ("-quick" if quick else "")
    jpath = os.path.join(outdir, stamp + ".json")
    with open(jpath, "w") as f:
        json.dump(results, f, separators=(",", ":"))     # compact: read it with jq
    log("results: %s" % os.path.relpath(jpath, ROOT))
    docs = os.path.join(ROOT, "docs", "benchmarks.md") if write_docs else None
    report.render(results, jpath, docs, print_summary=True)
    if env_flag("BENCH_KEEP"):
        log("temporary files kept in %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log("total run time %.0f s" % results["duration_s"])
    return 130 if interrupted else 0


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def aggregate(entry):
    """Replaces each workload's list of repetitions by one record: medians of the figures,
    sums of counts, the spread of CPU/op, and the repetitions themselves under "runs".

    redis-benchmark opens its 50 connections inside the measured window; on the keep-alive
    workloads their set-up (TLS handshakes) is subtracted using this setup's own measured
    CPU per new connection (hs-full), so that CPU/op is the steady-state figure. The raw
    figure is kept as cpu_us_per_op_raw."""
    ws = entry["workloads"]
    hs = [r for r in ws.get("hs-full", []) if r.get("ok") and r.get("cpu_us_per_op")]
    conn_cost_us = median([r["cpu_us_per_op"] for r in hs]) if hs else None
    for wid, runs in list(ws.items()):
        done = [r for r in runs if not r.get("skipped")]
        good = [r for r in done if r.get("ok")]
        agg = {"runs": runs, "repetitions": len(done), "ok": bool(done) and len(good) == len(done),
               "failed": sum(r.get("failed", 0) or 0 for r in done),
               "problems": sorted({p for r in runs for p in r.get("problems", [])})}
        if not done:
            agg["skipped"] = True
        use = good or done
        for k in ("ops_per_s", "p50_ms", "p99_ms", "avg_ms", "connections_per_request"):
            agg[k] = median([r.get(k) for r in use])
        agg["ops"] = sum(r.get("ops", 0) or 0 for r in use)
        agg["server_cpu_s"] = sum(r.get("server_cpu_s", 0) or 0 for r in use)
        agg["client_cpu_s"] = sum(r.get("client_cpu_s", 0) or 0 for r in use)
        if wid.startswith("hs-"):
            agg["reused"] = sum(r.get("reused", 0) or 0 for r in use)
        per_op = []
        raw = []
        for r in use:
            if not r.get("ops"):
                continue
            raw.append(r["server_cpu_s"] / r["ops"] * 1e6)
            cpu = r["server_cpu_s"]
            if (r.get("kind") == "redis-benchmark" and not wid.startswith("k0")
                    and conn_cost_us and r.get("backend_connections")):
                conns = max(0, r["backend_connections"] - 1)   # minus the INFO after it
                r["connection_setup_cpu_s"] = conns * conn_cost_us / 1e6
                cpu = max(0.0, cpu - r["connection_setup_cpu_s"])
            r["cpu_us_per_op"] = cpu / r["ops"] * 1e6
            per_op.append(r["cpu_us_per_op"])
        agg["cpu_us_per_op"] = median(per_op)
        agg["cpu_us_per_op_raw"] = median(raw)
        agg["cpu_us_per_op_min"] = min(per_op) if per_op else None
        agg["cpu_us_per_op_max"] = max(per_op) if per_op else None
        ws[wid] = agg


def fmt(v, digits):
    return "-" if v is None else ("%.*f" % (digits, v))


if __name__ == "__main__":
    sys.exit(main())
