"""The sandbox of every process, proven from the outside (issue 4; SECURITY.md has the tables).

* /proc/PID/status of the supervisor, keyd and each worker while they run: seccomp filter mode,
  NO_NEW_PRIVS, capabilities, users, groups, umask.
* With a test build (make TEST_HOOKS=1; REDOUBT_BIN in `make test`), a realtime signal makes a
  worker or keyd attempt a forbidden syscall (common/test_hooks.h).  Each attempt must kill
  exactly that process; the supervisor must name the syscall, restart it, and tell keyd (an
  audit record); clients on the other workers must not notice.  Landlock's port and path
  fences answer EACCES instead, and the process lives on.
* keyd's memory: closed to the workers' user and to keyd's own user (ptrace, /proc/PID/mem,
  process_vm_readv, gcore), and a crash dumps no core.
* The release binary (REDOUBT_RELEASE_BIN) carries no trace of the hooks.
* Users: a missing user is named; the supervisor keeps only four capabilities.
"""
import ctypes
import errno
import json
import os
import platform
import pwd
import re
import signal
import subprocess
import sys
import tempfile

import pytest

from helpers.procs import free_port, pid_alive, run, wait_until
from helpers.servers import KEYD_USER, WORKER_USER
from helpers.stack import build_config
from helpers.tlsclient import attempt

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Capability numbers (linux/capability.h) the supervisor keeps.
CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 5, 6, 7, 8
SUPERVISOR_CAPS = (1 << CAP_KILL) | (1 << CAP_SETGID) | (1 << CAP_SETUID) | (1 << CAP_SETPCAP)

# Test hooks (common/test_hooks.h): SIGRTMIN + n.
HOOK_OPENAT_KEY, HOOK_EXECVE, HOOK_SOCKET_PACKET, HOOK_CONNECT_PORT1 = 1, 2, 3, 4
HOOK_SOCKET_UDP, HOOK_SOCKET_TCP, HOOK_OPEN_PASSWD = 5, 6, 7
# x86_64 numbers, to check keyd's audit record (other machines check the name only).
X86_64_NR = {"openat": 257, "execve": 59, "socket": 41}
# What the release binary must not contain (symbols and strings of the hooks and debug modes).
HOOK_MARKERS = (b"test_hook", b"test hook %d", b"TEST BUILD", b"TRAP MODE", b"LOG MODE",
                b"sbx_trap_handler", b"REDOUBT_TEST_HOOKS", b"REDOUBT_SANDBOX_")


# --- helpers ------------------------------------------------------------------------------------

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def hooks_build(path):
    with open(path, "rb") as f:
        return b"test_hooks_arm" in f.read()


@pytest.fixture(scope="module")
def hooks(env):
    if not hooks_build(env.bin):
        pytest.skip("REDOUBT_BIN is a release build; the sandbox self-tests need "
                    "make TEST_HOOKS=1 (make test uses build-hooks/redoubt)")


def landlock_abi():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION), x86_64 number
    v = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint(1))
    return v if v > 0 and platform.machine() == "x86_64" else 0


def _server_inode(port, client_port):
    """Inode of redoubt's accepted socket whose peer is 127.0.0.1:client_port."""
    want_local, want_rem = f"0100007F:{port:04X}", f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            if p[1] == want_local and p[2] == want_rem:
                return p[9]
    return None


def worker_of(st, sock):
    """(index, pid) of the worker that holds the server side of a client socket."""
    inode = wait_until(lambda: _server_inode(st.port, sock.getsockname()[1]), 5,
                       what="the server side of a client connection in /proc/net/tcp")
    target = f"socket:[{inode}]"
    for idx, pid in st.redoubt.children()["workers"].items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return idx, pid
            except OSError:
                pass
    raise AssertionError(f"no worker holds the connection from port {sock.getsockname()[1]}")


def clients_on_workers(st, want=2, tries=40):
    """Open TLS clients until at least one sits on `want` different workers (or tries run out).
    Returns [(resp, client_id, worker_index)]."""
    out = []
    for _ in range(tries):
        r = st.resp(timeout=5)
        cid = r.command("CLIENT", "ID")
        out.append((r, cid, worker_of(st, r.sock)[0]))
        if len({w for _, _, w in out}) >= want and len(out) >= 4:
            break
    return out


def audit_records(st):
    path = os.path.join(st.dir, "audit", "audit.jsonl")
    recs = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return recs


def as_user(user, argv, timeout=60):
    """Run argv as user (no supplementary groups), capture output."""
    pw = pwd.getpwnam(user)
    return run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                *argv], timeout=timeout)


# --- /proc/PID/status ---------------------------------------------------------------------------

def test_every_process_is_sandboxed(make_stack):
    st = make_stack(workers=2)
    ch = st.redoubt.children()
    assert len(ch["keyd"]) == 1 and len(ch["workers"]) == 2, ch
    procs = [("supervisor", st.redoubt.pid, "root"), ("keyd", ch["keyd"][0], KEYD_USER)]
    procs += [(f"worker {i}", pid, WORKER_USER) for i, pid in ch["workers"].items()]
    for role, pid, user in procs:
        s = proc_status(pid)
        pw = pwd.getpwnam(user)
        assert s["Seccomp"] == "2", f"{role}: Seccomp {s['Seccomp']} (2 = filter mode)"
        assert s["NoNewPrivs"] == "1", f"{role}: NoNewPrivs {s['NoNewPrivs']}"
        assert s["Uid"].split() == [str(pw.pw_uid)] * 4, f"{role}: Uid {s['Uid']}"
        assert s["Gid"].split() == [str(pw.pw_gid)] * 4, f"{role}: Gid {s['Gid']}"
        assert int(s["CapInh"], 16) == 0 and int(s["CapAmb"], 16) == 0, f"{role}: {s}"
        if role == "supervisor":
            # It restarts children: setresuid/setresgid/setgroups, the children's bounding
            # set, signals to other users.  Nothing else, and no way back to more.
            for k in ("CapEff", "CapPrm", "CapBnd"):
                assert int(s[k], 16) == SUPERVISOR_CAPS, f"supervisor {k} {s[k]}"
            assert int(s["Seccomp_filters"]) >= 1
            continue
        for k in ("CapEff", "CapPrm", "CapBnd"):
            assert int(s[k], 16) == 0, f"{role}: {k} {s[k]} (must be empty)"
        assert s["Groups"] == "", f"{role}: supplementary groups {s['Groups']!r}"
        assert s["Umask"] == "0077", f"{role}: umask {s['Umask']}"
        # The supervisor's deny-list (inherited) and the process's own allow-list.
        assert int(s["Seccomp_filters"]) >= 2, f"{role}: Seccomp_filters {s['Seccomp_filters']}"
    # Workers: their file system is empty (no key file open, no way to open one).
    for pid in ch["workers"].values():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            assert int(fd) <= 2 or not target.startswith("/"), (
                f"worker {pid} holds a file: fd {fd} -> {target}")


# --- forbidden syscalls: kill, name, restart, audit, neighbours unaffected ----------------------

KILL_CASES = [
    pytest.param(HOOK_OPENAT_KEY, "openat", id="openat-key-file"),
    pytest.param(HOOK_EXECVE, "execve", id="execve"),
    pytest.param(HOOK_SOCKET_PACKET, "socket", id="socket-AF_PACKET"),
    pytest.param(HOOK_SOCKET_UDP, "socket", id="socket-AF_INET-DGRAM"),
]


@pytest.mark.parametrize("hook,syscall", KILL_CASES)
def test_forbidden_syscall_kills_only_that_worker(hooks, make_stack, hook, syscall):
    st = make_stack(workers=2)
    clients = clients_on_workers(st)
    # The victim: a worker other than the first client's, so that at least that client is on
    # a worker that must not notice anything.
    first_worker = clients[0][2]
    victim = next(i for i in st.redoubt.children()["workers"] if i != first_worker)
    victim_pid = st.redoubt.children()["workers"][victim]
    bystanders = [(r, cid) for r, cid, w in clients if w != victim]
    assert bystanders
    offset = st.redoubt.log_size()

    os.kill(victim_pid, signal.SIGRTMIN + hook)
    wait_until(lambda: not pid_alive(victim_pid), 5, what=f"worker {victim} to be killed")
    line_re = re.compile(rf"supervisor: worker {victim} \(pid {victim_pid}\) was killed by its "
                         rf"seccomp sandbox: {syscall}; restarting")
    wait_until(lambda: line_re.search(st.redoubt.log_since(offset)), 5,
               what=f"the supervisor naming '{syscall}'")
    log = st.redoubt.log_since(offset)
    # The syscall never returned: the hook's own report must not be there.
    assert f"test hook {hook}: result" not in log, log
    # Restarted under the same index.
    new_pid = wait_until(lambda: (st.redoubt.children()["workers"].get(victim) or 0)
                         not in (0, victim_pid) and st.redoubt.children()["workers"][victim],
                         10, what=f"worker {victim} to be restarted")
    assert proc_status(new_pid)["Seccomp"] == "2"
    # Clients on the other workers: same backend session, still working.
    for r, cid in bystanders:
        assert r.command("CLIENT", "ID") == cid
        assert r.command("SET", f"after-kill-{cid}", "v") == "OK"
        assert r.command("GET", f"after-kill-{cid}") == b"v"
    # The victim's own clients lost their connection with it (it did serve them).
    for r, _, w in clients:
        if w == victim:
            with pytest.raises((EOFError, OSError)):
                r.command("PING")
    # New clients are served.
    for _ in range(6):
        outcome, detail, _ = attempt(st.port, st.ctx(), timeout=5)
        assert outcome == "ok", detail
    # keyd turned the supervisor's report into an audit record with the syscall.
    def violation():
        for rec in audit_records(st):
            if rec.get("event") == "sandbox.violation" and rec.get("pid") == victim_pid:
                return rec
        return None
    rec = wait_until(violation, 5, what="a sandbox.violation audit record")
    assert rec.get("worker_index") == victim, rec
    if platform.machine() == "x86_64":
        assert rec.get("syscall") == X86_64_NR[syscall], rec
    for r, _, _ in clients:
        r.sock.close()
    st.redoubt.check_alive()


def test_landlock_fences_tcp_ports(hooks, make_stack):
    """A worker may connect only to the configured backend/peer ports: another port is
    refused by Landlock with EACCES (not a kill: connect itself is allowed)."""
    if landlock_abi() < 4:
        pytest.skip("Landlock network rules need ABI 4 (Linux 6.7)")
    st = make_stack(workers=1)
    pid = st.redoubt.worker_pids()[0]
    offset = st.redoubt.log_size()
    os.kill(pid, signal.SIGRTMIN + HOOK_CONNECT_PORT1)
    wait_until(lambda: f"test hook {HOOK_CONNECT_PORT1}: result" in st.redoubt.log_since(offset),
               5, what="the worker's report of its connect attempt")
    assert (f"test hook {HOOK_CONNECT_PORT1}: result -1 errno {errno.EACCES}"
            in st.redoubt.log_since(offset)), st.redoubt.log_since(offset)
    assert pid_alive(pid) and st.redoubt.worker_pids() == [pid]
    outcome, detail, _ = attempt(st.port, st.ctx(), timeout=5)
    assert outcome == "ok", detail


def test_keyd_may_not_open_a_socket(hooks, make_stack):
    st = make_stack(workers=2)
    r = st.resp(timeout=5)
    cid = r.command("CLIENT", "ID")
    keyd = st.redoubt.keyd_pid()
    offset = st.redoubt.log_size()
    os.kill(keyd, signal.SIGRTMIN + HOOK_SOCKET_TCP)
    wait_until(lambda: not pid_alive(keyd), 5, what="keyd to be killed")
    wait_until(lambda: re.search(rf"supervisor: keyd 0 \(pid {keyd}\) was killed by its seccomp "
                                 rf"sandbox: socket; restarting", st.redoubt.log_since(offset)),
               5, what="the supervisor naming 'socket'")
    wait_until(lambda: st.redoubt.keyd_pid() not in (None, keyd), 10, what="keyd to restart")
    wait_until(lambda: attempt(st.port, st.ctx(), timeout=3)[0] == "ok", 15, interval=0.1,
               what="handshakes with the restarted keyd")
    assert r.command("CLIENT", "ID") == cid     # sessions never needed keyd
    r.sock.close()


def test_keyd_files_are_fenced(hooks, make_stack):
    """keyd reads its key (allowed directory) but not /etc/passwd (Landlock: EACCES)."""
    if landlock_abi() < 1:
        pytest.skip("no Landlock in this kernel")
    st = make_stack(workers=1)
    keyd = st.redoubt.keyd_pid()
    for hook, ok in ((HOOK_OPENAT_KEY, True), (HOOK_OPEN_PASSWD, False)):
        offset = st.redoubt.log_size()
        os.kill(keyd, signal.SIGRTMIN + hook)
        m = wait_until(lambda: re.search(rf"test hook {hook}: result (-?\d+) errno (\d+)",
                                         st.redoubt.log_since(offset)), 5,
                       what=f"keyd's report of hook {hook}")
        result, err = int(m.group(1)), int(m.group(2))
        if ok:
            assert result >= 0, f"keyd could not open its own key file: errno {err}"
        else:
            assert result == -1 and err == errno.EACCES, (result, err)
    assert st.redoubt.keyd_pid() == keyd and pid_alive(keyd)


# --- keyd's memory ------------------------------------------------------------------------------

PROBE = r"""
import ctypes, json, os, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
out = {}
try:
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.read(1)
    out["mem"] = "readable"
except OSError as e:
    out["mem"] = e.errno
r = libc.ptrace(16, pid, None, None)   # PTRACE_ATTACH
out["ptrace"] = 0 if r == 0 else ctypes.get_errno()
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(16)
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
addr = int(open(f"/proc/{os.getpid()}/maps").readline().split("-")[0], 16)
remote = iovec(addr, 16)
r = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
out["process_vm_readv"] = 0 if r >= 0 else ctypes.get_errno()
print(json.dumps(out))
"""


def test_keyd_memory_is_closed_to_other_users(stack):
    st = stack
    keyd = st.redoubt.keyd_pid()
    assert proc_status(keyd)["Seccomp"] == "2"
    for user in (WORKER_USER, KEYD_USER):
        res = as_user(user, [sys.executable, "-c", PROBE, str(keyd)])
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert got["mem"] in (errno.EACCES, errno.EPERM), f"{user}: /proc/{keyd}/mem {got}"
        assert got["ptrace"] == errno.EPERM, f"{user}: ptrace {got}"
        assert got["process_vm_readv"] == errno.EPERM, f"{user}: process_vm_readv {got}"
    assert pid_alive(keyd)


def test_gcore_of_keyd_produces_nothing(stack):
    st = stack
    keyd = st.redoubt.keyd_pid()
    out = tempfile.mkdtemp(prefix="gcore-", dir=st.dir)
    os.chmod(out, 0o777)
    for user in (WORKER_USER, KEYD_USER):
        prefix = os.path.join(out, f"core-{user}")
        res = as_user(user, ["gcore", "-o", prefix, str(keyd)], timeout=120)
        made = [f for f in os.listdir(out) if f.startswith(f"core-{user}")]
        assert res.returncode != 0 and not made, (
            f"gcore as {user} wrote {made}: {res.stdout[-500:]} {res.stderr[-500:]}")
    assert pid_alive(keyd) and proc_status(keyd)["State"][0] in "SR", proc_status(keyd)["State"]
    outcome, detail, _ = attempt(st.port, st.ctx(), timeout=5)
    assert outcome == "ok", detail


def _core_pattern():
    with open("/proc/sys/kernel/core_pattern") as f:
        return f.read().strip()


def test_keyd_crash_dumps_no_core(make_stack):
    """keyd dies of SIGSEGV: the kernel writes no core (not dumpable, RLIMIT_CORE 0), which
    the exit status says (WCOREDUMP); the supervisor restarts it."""
    st = make_stack(workers=1)
    keyd = st.redoubt.keyd_pid()
    cwd = os.readlink(f"/proc/{keyd}/cwd")
    with open(f"/proc/{keyd}/limits") as f:
        core = next(line for line in f if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    before = set(os.listdir(cwd))
    offset = st.redoubt.log_size()
    os.kill(keyd, signal.SIGSEGV)
    line = wait_until(lambda: re.search(rf"keyd 0 \(pid {keyd}\) was killed by signal "
                                        rf"{int(signal.SIGSEGV)} .*", st.redoubt.log_since(offset)),
                      10, what="the supervisor's report of keyd's crash").group(0)
    assert "dumped core" not in line, line
    assert not [f for f in set(os.listdir(cwd)) - before if f.startswith("core")]
    wait_until(lambda: attempt(st.port, st.ctx(), timeout=3)[0] == "ok", 15, interval=0.1,
               what="handshakes with the restarted keyd")


def test_core_dump_detection_works(env, workdir):
    """The control for the test above: a dumpable process of the keyd user, in a writable
    directory with RLIMIT_CORE unlimited, does dump core and WCOREDUMP says so."""
    if _core_pattern() != "core":
        pytest.skip(f"core_pattern is {_core_pattern()!r}; the control needs plain 'core'")
    d = tempfile.mkdtemp(prefix="corectl-", dir=workdir)
    os.chmod(d, 0o777)
    pw = pwd.getpwnam(KEYD_USER)
    p = subprocess.Popen(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                          "--clear-groups", "sh", "-c",
                          f"ulimit -c unlimited; cd {d}; exec sleep 30"])
    try:
        wait_until(lambda: open(f"/proc/{p.pid}/comm").read().strip() == "sleep", 5,
                   what="the control process")
        os.kill(p.pid, signal.SIGSEGV)
        _, status = os.waitpid(p.pid, 0)
        p.returncode = -signal.SIGSEGV
    finally:
        if p.returncode is None:
            p.kill()
            p.wait(timeout=10)
    assert os.WIFSIGNALED(status) and os.WCOREDUMP(status), hex(status)
    assert any(f.startswith("core") for f in os.listdir(d))


# --- the release binary -------------------------------------------------------------------------

def _release_bin():
    return os.environ.get("REDOUBT_RELEASE_BIN") or os.path.join(REPO, "build", "redoubt")


def test_release_binary_has_no_test_hooks(env):
    rel = _release_bin()
    if not os.path.isfile(rel):
        pytest.skip(f"no release binary at {rel} (make test sets REDOUBT_RELEASE_BIN)")
    with open(rel, "rb") as f:
        data = f.read()
    found = [m.decode() for m in HOOK_MARKERS if m in data]
    assert not found, f"{rel} contains test-build code: {found}"
    syms = run(["nm", "--defined-only", rel]).stdout + run(["nm", "-D", rel]).stdout
    assert "test_hook" not in syms
    assert "sbx_allow_memory" in syms or "stripped" in run(["file", rel]).stdout, (
        "nm sees no symbols at all, so the check above proves nothing")
    # The control: the hooks build does contain them (when REDOUBT_BIN is one).
    if hooks_build(env.bin):
        with open(env.bin, "rb") as f:
            assert b"test_hooks_arm" in f.read()


# --- users ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["user", "keyd-user"])
def test_missing_user_is_named(env, workdir, key):
    name = f"redoubt-nosuch-{key.split('-')[0]}"
    conf = os.path.join(workdir, "missing-user.conf")
    with open(conf, "w") as f:
        f.write(build_config(workdir, env.certs(), "unix:/nonexistent/redis.sock",
                             free_port(), global_extra={key: name}))
    res = run([env.bin, "serve", "-c", conf], timeout=30)
    assert res.returncode == 78, (res.returncode, res.stderr)
    assert f"{key} '{name}' does not exist" in res.stderr, res.stderr
    assert "useradd" in res.stderr, res.stderr


def test_started_as_a_non_root_user(env, hooks):
    """No root: serve says so, every process runs as that user with no capabilities, and the
    sandboxes are the same (a kill is still reported, named when /dev/kmsg is readable)."""
    from helpers.procs import children_of, stop_pid
    from helpers.servers import RedisServer, new_workdir
    from helpers.tlsclient import client_context
    pw = pwd.getpwnam(WORKER_USER)
    d = new_workdir(env.root, prefix="nonroot-")
    redis = RedisServer(d).start()
    certs = env.certs()
    tls = os.path.join(d, "tls")
    os.mkdir(tls)
    for src in (certs.node_crt, certs.node_key, certs.ca_crt):
        dst = os.path.join(tls, os.path.basename(src))
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            fo.write(fi.read())
        os.chmod(dst, 0o600)
    for p in (d, tls, os.path.join(d, "audit"), os.path.join(d, "run")) + tuple(
            os.path.join(tls, f) for f in os.listdir(tls)):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    port = free_port()
    text = build_config(d, certs, f"unix:{redis.sock}", port, workers=1,
                        identity_extra={"cert": os.path.join(tls, os.path.basename(certs.node_crt)),
                                        "key": os.path.join(tls, os.path.basename(certs.node_key)),
                                        "ca": os.path.join(tls, os.path.basename(certs.ca_crt))})
    conf = os.path.join(d, "nonroot.conf")
    with open(conf, "w") as f:
        f.write(text)
    log_path = os.path.join(d, "nonroot.stderr")
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                                 "--clear-groups", env.bin, "serve", "-c", conf],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                process_group=0)

    def log():
        with open(log_path) as f:
            return f.read()

    def layout():
        assert proc.poll() is None, log()
        kids = {cmd[1]: pid for pid, cmd in children_of(proc.pid) if len(cmd) > 1}
        return kids if set(kids) == {"keyd", "worker"} else None
    try:
        kids = wait_until(layout, 30, what="keyd and the worker of a non-root serve")
        ctx = client_context(certs.ca_crt)
        wait_until(lambda: attempt(port, ctx, timeout=3)[0] == "ok", 30,
                   what="a PING through a non-root redoubt")
        assert "not started as root" in log(), log()
        for role, pid in [("supervisor", proc.pid)] + sorted(kids.items()):
            s = proc_status(pid)
            assert s["Uid"].split() == [str(pw.pw_uid)] * 4, (role, s["Uid"])
            assert s["Seccomp"] == "2" and s["NoNewPrivs"] == "1", (role, s)
            assert int(s["CapEff"], 16) == 0 and int(s["CapPrm"], 16) == 0, (role, s)
        worker = kids["worker"]
        offset = len(log())
        os.kill(worker, signal.SIGRTMIN + HOOK_EXECVE)
        wait_until(lambda: re.search(rf"worker 0 \(pid {worker}\) was killed by its seccomp "
                                     rf"sandbox(: execve|.*record of the syscall was not "
                                     rf"available)", log()[offset:]), 5,
                   what="the supervisor's report of the kill")
        wait_until(lambda: (layout() or {}).get("worker") not in (None, worker), 10,
                   what="the worker to be restarted")
    finally:
        stop_pid(proc, term_timeout=10)
        redis.stop()
