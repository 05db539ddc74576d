#!/usr/bin/python3
"""`make test-package`: build the Debian package, check it, install it, run it, remove it.

Steps (each reported; every failure is collected and the exit status is 1 if there was one):
  1. build with packaging/build-deb.sh (dpkg-buildpackage -us -uc -b, debhelper 13)
  2. lintian on the .changes: no error, no warning; every override has a written reason
  3. blhc on the build log: every compile and link line has the hardening flags
  4. systemd-analyze security --offline=true: every .service in the built package, and each
     shipped drop-in example applied to the unit its first line names ("# Drop-in for UNIT:"),
     scores <= REDOUBT_SECURITY_MAX (default 1.5, the issue's bar)
  5. apt-get install ./redoubt_*.deb; users, groups, directories, modes, files, conffiles
  6. a real configuration (dev certificates in /etc/redoubt/tls, redis-server on a unix socket),
     then the two services started the way systemd would start them, keyd's first:
     redoubt-control.socket's socket (owner, group, mode from the unit) made and passed to
     redoubt-keyd.service's ExecStart as fd 3 (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES), which
     must send READY=1 on NOTIFY_SOCKET (Type=notify, from the main process); then
     redoubt.service with its RuntimeDirectory= made for its user.  Each ExecCondition,
     ExecStartPre and ExecStart runs with a clean environment, the unit's User/Group, limits
     and umask, its capability bounding set and NoNewPrivileges, private mount (ProtectSystem=
     strict + ReadWritePaths/RuntimeDirectory, PrivateTmp, ProtectHome, PrivateDevices,
     ProtectProc/ProcSubset), network, IPC and UTS namespaces as the unit asks, and its system
     call filter (tests/package/seccomp_exec.c).  redis-cli --tls through it; every process's
     user, capabilities and NoNewPrivs; the audit log, rotated by the packaged logrotate file
     and reopened on SIGUSR1 to keyd's service; ExecReload ("+": as root, no sandbox);
     SIGTERM to the workers' service, then keyd's: exit 0, no process left
  7. reinstall keeps the edited conffile
  8. dpkg -r, then dpkg -P: the differences to the state before the test are listed, and only
     the documented ones may remain (users and groups, keys in /etc/redoubt/tls, the audit
     trail); then the test removes what it made and checks the system is as before.

Run as root on Debian 12.  The test refuses to start when redoubt is installed or when
/etc/redoubt or /var/log/redoubt exist (a real installation: it never touches one).
Environment: REDOUBT_SECURITY_MAX (1.5), REDOUBT_PKGTEST_NOBUILD=1 (use build/deb as it is),
REDOUBT_PKGTEST_KEEP=1 (keep the work directory).
"""
import errno
import glob
import grp
import gzip
import hashlib
import os
import pwd
import resource
import re
import shlex
import shutil
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PKG = "redoubt"
DEB_DIR = os.path.join(TOP, "build", "deb")
SECURITY_MAX = float(os.environ.get("REDOUBT_SECURITY_MAX", "1.5"))
USERS = ("redoubt", "redoubt-keyd")
GROUPS = ("redoubt", "redoubt-keyd", "redoubt-admin")
UNIT_DIR = "/lib/systemd/system"
WORKERS_UNIT = "redoubt.service"          # the workers' half; enabled, pulls in keyd's
KEYD_UNIT = "redoubt-keyd.service"        # keyd's half, Type=notify, socket-activated
CONTROL_UNIT = "redoubt-control.socket"   # keyd's control socket
UNITS = (WORKERS_UNIT, KEYD_UNIT, CONTROL_UNIT)
CONF = "/etc/redoubt/redoubt.conf"
TLS_DIR = "/etc/redoubt/tls"
LOG_DIR = "/var/log/redoubt"
RUN_DIR = "/run/redoubt"
READY_TIMEOUT_S = 30      # ExecStart to READY=1 / an accepting listener (keyd may load slowly)
PKGTEST_WORKERS = 2       # workers in the test configuration
TOOLS = {                 # command -> Debian package, installed when missing
    "lintian": "lintian", "blhc": "blhc", "systemd-analyze": "systemd",
    "redis-server": "redis-server", "redis-cli": "redis-tools", "logrotate": "logrotate",
    "setpriv": "util-linux", "unshare": "util-linux", "prlimit": "util-linux",
    "dh": "debhelper", "cc": "gcc",
}

FAILURES = []
NOTES = []


def step(title):
    print(f"\n== {title}", flush=True)


def ok(msg):
    print(f"   ok: {msg}", flush=True)


def fail(msg):
    print(f"   FAIL: {msg}", flush=True)
    FAILURES.append(msg)


def note(msg):
    if msg not in NOTES:
        print(f"   note: {msg}", flush=True)
        NOTES.append(msg)


def have_cap(bit):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def check(cond, msg, detail=""):
    if cond:
        ok(msg)
    else:
        fail(msg + (f": {detail}" if detail else ""))
    return cond


def run(cmd, check_rc=False, timeout=600, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    res = subprocess.run(cmd, timeout=timeout, **kw)
    if check_rc and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(shlex.quote, cmd))} exited {res.returncode}:\n"
                           f"{res.stdout}{res.stderr}")
    return res


# ---------- the unit file, read the way systemd reads it (enough of it) ----------

def parse_unit(path, dropins=()):
    """{section: {key: [values]}}; an empty assignment resets the list, as in systemd."""
    out = {}
    for p in (path,) + tuple(dropins):
        section = None
        with open(p) as f:
            lines = f.read().replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = out.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if value == "":
                section[key] = []
            else:
                section.setdefault(key, []).append(value)
    return out


def unit_argv(value):
    """An Exec*= line: (prefixes, argv).  systemd's quoting is close enough to POSIX shell's
    for the lines we ship (double quotes, '\\\\' for a backslash, no specifiers)."""
    prefix = ""
    while value and value[0] in "-@:+!":
        prefix += value[0]
        value = value[1:]
    return prefix, shlex.split(value)


_GROUP_CACHE = {}


def syscall_group(name):
    if name in _GROUP_CACHE:
        return _GROUP_CACHE[name]
    res = run(["systemd-analyze", "syscall-filter", name], check_rc=True)
    calls = set()
    for line in res.stdout.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        calls |= syscall_group(line) if line.startswith("@") else {line}
    _GROUP_CACHE[name] = calls
    return calls


def syscall_allow_list(values):
    """SystemCallFilter= lines in order: the first decides allow-list mode, then + and ~."""
    allowed, first = set(), True
    for v in values:
        deny = v.startswith("~")
        items = v.lstrip("~").split()
        if first:
            if deny:
                raise RuntimeError("the test only emulates allow-list SystemCallFilter=")
            allowed |= syscall_group("@default")
            first = False
        for item in items:
            calls = syscall_group(item) if item.startswith("@") else {item}
            if deny:
                allowed -= calls
            else:
                allowed |= calls
    return allowed


def size_bytes(v):
    m = re.fullmatch(r"(\d+)([KMGT]?)", v)
    if not m:
        return v
    return str(int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30,
                                  "T": 1 << 40}[m.group(2)])


class UnitExec:
    """Builds the command line that runs an Exec*= line of a unit as systemd would."""

    # systemd's environment for a User= service (exec_context's USER, LOGNAME, HOME, SHELL).
    BASE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8"]
    # ExecStart with socket activation: "LISTEN_PID=" + this is replaced by the pid that
    # execs the service's binary (every program in argv() execs in place, keeping it).
    PID_MARK = "@PID@"

    def __init__(self, name, unit, work, helper):
        self.name = name
        self.svc = unit["Service"]
        self.work = work
        self.helper = helper
        stem = name.replace(".", "-")
        self.allow_file = os.path.join(work, f"{stem}.syscalls.allow")
        with open(self.allow_file, "w") as f:
            f.write("\n".join(sorted(syscall_allow_list(self.svc.get("SystemCallFilter", [])))))
            f.write("\n")
        self.ns_script = os.path.join(work, f"{stem}.namespace.sh")
        self._write_ns_script()
        user = self.svc.get("User", ["root"])[-1]
        self.pw = pwd.getpwnam(user)
        group = self.svc.get("Group", [None])[-1]
        self.gid = grp.getgrnam(group).gr_gid if group else self.pw.pw_gid
        # User=: systemd calls initgroups(); SupplementaryGroups= come on top.
        gids = set(os.getgrouplist(self.pw.pw_name, self.gid)) if user != "root" else set()
        gids |= {grp.getgrnam(g).gr_gid for v in self.svc.get("SupplementaryGroups", [])
                 for g in v.split()}
        self.groups = sorted(gids)

    def runtime_dirs(self):
        """RuntimeDirectory=: (path, mode); systemd makes them for User=/Group=."""
        mode = int(self.svc.get("RuntimeDirectoryMode", ["0755"])[-1], 8)
        return [("/run/" + d, mode) for v in self.svc.get("RuntimeDirectory", [])
                for d in v.split()]

    def make_runtime_dirs(self):
        """What systemd does before the first process of the unit; returns what it made."""
        made = []
        for path, mode in self.runtime_dirs():
            parts = path.strip("/").split("/")
            for i in range(2, len(parts)):       # parents: root's, 0755, as systemd makes them
                parent = "/" + "/".join(parts[:i])
                if not os.path.isdir(parent):
                    os.mkdir(parent, 0o755)
                    made.append(parent)
            if not os.path.isdir(path):
                os.mkdir(path)
                made.append(path)
            os.chown(path, self.pw.pw_uid, self.gid)
            os.chmod(path, mode)
        return made

    def remove_runtime_dirs(self):
        """What systemd does when the unit stops (no RuntimeDirectoryPreserve=)."""
        for path, _ in self.runtime_dirs():
            shutil.rmtree(path, ignore_errors=True)

    def unshare_opts(self):
        opts = ["--mount"]
        if self._yes("PrivateNetwork"):
            opts.append("--net")
        if self._yes("PrivateIPC"):
            opts.append("--ipc")
        if self._yes("ProtectHostname"):
            opts.append("--uts")
        return opts

    def _write_ns_script(self):
        rw = []
        for v in self.svc.get("ReadWritePaths", []):
            rw += [p.lstrip("-") for p in v.split()]
        rw += ["/run/" + d for v in self.svc.get("RuntimeDirectory", []) for d in v.split()]
        lines = ["#!/bin/sh", f"# Generated by tests/package/test_package.py: {self.name}'s "
                 "file system view, in a private mount namespace.", "set -e",
                 "mount --make-rprivate /"]
        # ReadWritePaths=, RuntimeDirectory=: own mounts, so they stay writable below.
        for p in rw:
            lines.append(f"mount --bind {shlex.quote(p)} {shlex.quote(p)}")
        if self._yes("PrivateTmp"):
            for p in ("/tmp", "/var/tmp"):
                lines.append(f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {p}")
        if self._yes("ProtectHome"):
            for p in ("/home", "/root", "/run/user"):
                lines.append(f"[ ! -d {p} ] || mount -t tmpfs -o mode=000,ro tmpfs {p}")
        if self._yes("PrivateDevices"):
            d = os.path.join(self.work, "dev")
            lines += [f"mkdir -p {d}", f"mount -t tmpfs -o mode=755,nosuid tmpfs {d}"]
            for n in ("null", "zero", "full", "random", "urandom", "tty"):
                lines += [f"touch {d}/{n}", f"mount --bind /dev/{n} {d}/{n}"]
            lines += [f"mkdir {d}/pts {d}/shm", f"mount --bind /dev/pts {d}/pts",
                      f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {d}/shm",
                      f"ln -s pts/ptmx {d}/ptmx", f"ln -s /proc/self/fd {d}/fd",
                      f"ln -s /proc/self/fd/0 {d}/stdin", f"ln -s /proc/self/fd/1 {d}/stdout",
                      f"ln -s /proc/self/fd/2 {d}/stderr",
                      f"ln -s /run/systemd/journal/dev-log {d}/log",
                      f"mount --move {d} /dev"]
        proc_opts = []
        if self.svc.get("ProtectProc", [""])[-1] == "invisible":
            proc_opts.append("hidepid=invisible")
        if self.svc.get("ProcSubset", [""])[-1] == "pid":
            proc_opts.append("subset=pid")
        if proc_opts:
            lines.append("mount -t proc -o nosuid,nodev,noexec," + ",".join(proc_opts) +
                         " proc /proc")
        if self._yes("ProtectKernelTunables") or self._yes("ProtectControlGroups"):
            lines.append("mount -o remount,bind,ro /sys")
        if self.svc.get("ProtectSystem", [""])[-1] == "strict":
            # The root file system (it holds /usr, /etc, /var, /run and this checkout here).
            lines.append("mount -o remount,bind,ro /")
        lines.append('exec "$@"')
        with open(self.ns_script, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.ns_script, 0o755)

    def _yes(self, key):
        return self.svc.get(key, ["no"])[-1] in ("yes", "true", "1", "on", "strict", "full")

    def _limits(self):
        svc = self.svc
        limits = []
        for key, opt, res in (("LimitNOFILE", "--nofile", resource.RLIMIT_NOFILE),
                              ("LimitMEMLOCK", "--memlock", resource.RLIMIT_MEMLOCK),
                              ("LimitCORE", "--core", resource.RLIMIT_CORE)):
            if key in svc and svc[key]:
                v = int(size_bytes(svc[key][-1]))
                hard = resource.getrlimit(res)[1]
                if hard != resource.RLIM_INFINITY and v > hard and not have_cap(24):
                    # systemd (PID 1) could raise it; this test, without CAP_SYS_RESOURCE,
                    # cannot: run with the highest limit it may set, and say so.
                    note(f"{key}={svc[key][-1]} emulated as {hard} (no CAP_SYS_RESOURCE here)")
                    v = hard
                limits.append(f"{opt}={v}:{v}")
        return limits

    def _env(self, extra_env):
        env = list(self.BASE_ENV)
        if self.pw.pw_name != "root":
            env += [f"USER={self.pw.pw_name}", f"LOGNAME={self.pw.pw_name}",
                    f"HOME={self.pw.pw_dir}", f"SHELL={self.pw.pw_shell}"]
        for v in self.svc.get("Environment", []):
            env += shlex.split(v)
        return env + list(extra_env)

    def argv(self, exec_value, extra_env=()):
        prefix, cmd = unit_argv(exec_value)
        svc = self.svc
        umask = svc.get("UMask", ["0022"])[-1]
        head = ["sh", "-c", f'umask {umask} && exec "$@"', "umask",
                "prlimit"] + self._limits() + ["--", "env", "-i"] + self._env(extra_env)
        if "+" in prefix:
            # "+": full privileges: as root, without User=, capability, namespace or system
            # call restrictions (systemd.service(5), "Command lines").
            argv = head + cmd
        else:
            caps = []
            for v in svc.get("CapabilityBoundingSet", []):
                caps += [c.lower().replace("cap_", "") for c in v.split()]
            bounding = "-all" + "".join(f",+{c}" for c in caps)
            if any(v.split() for v in svc.get("AmbientCapabilities", [])):
                raise RuntimeError("the test does not emulate AmbientCapabilities=")
            priv = ["setpriv"]
            if self.pw.pw_name != "root":
                priv += [f"--reuid={self.pw.pw_uid}", f"--regid={self.gid}"]
            priv += [f"--groups={','.join(map(str, self.groups))}" if self.groups
                     else "--clear-groups",
                     f"--bounding-set={bounding}", "--inh-caps=-all", "--ambient-caps=-all"]
            if self._yes("NoNewPrivileges"):
                priv.append("--no-new-privs")
            err = svc.get("SystemCallErrorNumber", ["EPERM"])[-1]
            errnum = getattr(errno, err) if not err.isdigit() else int(err)
            afs = []
            for v in svc.get("RestrictAddressFamilies", []):
                afs += [str(int(getattr(socket, a))) for a in v.split()]
            mdwe = "1" if self._yes("MemoryDenyWriteExecute") else "0"
            argv = (["unshare"] + self.unshare_opts() + ["--propagation", "private",
                                                         self.ns_script] +
                    head + priv + ["--", self.helper, self.allow_file, str(errnum),
                                   ",".join(afs) or "0", mdwe] + cmd)
        if any(e == "LISTEN_PID=" + self.PID_MARK for e in extra_env):
            # systemd sets LISTEN_PID to the pid of the process it execs; everything above
            # execs in place, so that is this shell's pid.
            argv = ["sh", "-c", 'p=$$; for a do shift; [ "$a" != "LISTEN_PID=@PID@" ] || '
                    'a="LISTEN_PID=$p"; set -- "$@" "$a"; done; exec "$@"', "sh"] + argv
        return argv


# ---------- system state snapshots ----------

def deb_paths(deb):
    res = run(["dpkg-deb", "-c", deb], check_rc=True)
    paths = []
    for line in res.stdout.splitlines():
        p = line.split(None, 5)[5].split(" -> ")[0]
        p = p[1:] if p.startswith("./") else p
        if p.endswith("/") or p == "/":
            continue
        paths.append(p if p.startswith("/") else "/" + p)
    return paths


def snapshot(extra_paths):
    """Lines describing everything the package may touch; sorted, comparable."""
    lines = []
    for u in USERS:
        try:
            e = pwd.getpwnam(u)
            lines.append(f"passwd {u} uid={e.pw_uid} gid={e.pw_gid} home={e.pw_dir} "
                         f"shell={e.pw_shell}")
        except KeyError:
            pass
    for g in GROUPS:
        try:
            e = grp.getgrnam(g)
            lines.append(f"group {g} gid={e.gr_gid} members={','.join(sorted(e.gr_mem))}")
        except KeyError:
            pass
    roots = ["/etc/redoubt", LOG_DIR, RUN_DIR] + [f"/etc/systemd/system/{u}.d" for u in UNITS]
    roots += ["/usr/share/doc/redoubt",
              "/etc/systemd/system/multi-user.target.wants/redoubt.service"]
    roots += glob.glob("/var/lib/systemd/deb-systemd-helper-enabled/**/*redoubt*", recursive=True)
    roots += glob.glob("/var/lib/systemd/deb-systemd-helper-masked/*redoubt*")
    roots += glob.glob("/var/lib/dpkg/info/redoubt.*")
    for r in sorted(set(roots + list(extra_paths))):
        if not os.path.lexists(r):
            continue
        walk = [r]
        if os.path.isdir(r) and not os.path.islink(r):
            walk = [r] + sorted(os.path.join(d, n) for d, ds, fs in os.walk(r)
                                for n in ds + fs)
        for p in walk:
            st = os.lstat(p)
            kind = stat.filemode(st.st_mode)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()[:16]
            lines.append(f"path {p} {kind} {owner(st)} {digest}")
    res = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PKG])
    lines.append(f"dpkg {PKG} {res.stdout.strip() or 'not-known'}")
    res = run(["dpkg-statoverride", "--list"])
    lines += [f"statoverride {line}" for line in res.stdout.splitlines() if "redoubt" in line]
    return sorted(lines)


def owner(st):
    try:
        u = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        u = str(st.st_uid)
    try:
        g = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        g = str(st.st_gid)
    return f"{u}:{g}"


def diff(before, after):
    b, a = set(before), set(after)
    return sorted("- " + x for x in b - a) + sorted("+ " + x for x in a - b)


def mode_of(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), owner(st)


# ---------- the test ----------

class PackageTest:
    def __init__(self):
        self.work = None
        self.deb = None
        self.changes = None
        self.before = None
        self.pkg_paths = []
        self.procs = []                 # (name, Popen) we started
        self.made_files = []            # files this test made outside its work directory
        self.timings = []
        self.scores = []                # (unit [+ drop-in], exposure)
        self.logs = {}                  # unit -> its ExecStart's output
        self.unit_execs = {}            # unit -> UnitExec
        self.runtime_made = []          # directories made as systemd would (RuntimeDirectory=)
        self.control_sock = None        # the emulated redoubt-control.socket
        self.control_path = None

    # -- helpers --
    def timed(self, name, fn):
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.timings.append((name, time.monotonic() - t0))

    def ensure_tools(self):
        missing = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
        if not os.path.exists("/usr/include/seccomp.h"):
            missing.append("libseccomp-dev")
        if missing:
            print(f"   installing {' '.join(missing)}", flush=True)
            run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq",
                 "--no-install-recommends"] + missing, check_rc=True,
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))

    # -- 1. build --
    def build(self):
        step("build (packaging/build-deb.sh: dpkg-buildpackage -us -uc -b)")
        if os.environ.get("REDOUBT_PKGTEST_NOBUILD") != "1":
            res = run([os.path.join(TOP, "packaging", "build-deb.sh")], timeout=1800)
            print(res.stdout + res.stderr, end="")
            if res.returncode != 0:
                fail("the package did not build")
                return False
        debs = sorted(glob.glob(os.path.join(DEB_DIR, f"{PKG}_*.deb")))
        changes = sorted(glob.glob(os.path.join(DEB_DIR, f"{PKG}_*.changes")))
        if not check(len(debs) == 1 and len(changes) == 1, "one redoubt .deb and .changes",
                     f"{debs} {changes}"):
            return False
        self.deb, self.changes = debs[0], changes[0]
        self.pkg_paths = deb_paths(self.deb)
        return True

    # -- 2. lintian --
    def lintian(self):
        step("lintian (no error, no warning; overrides need a reason)")
        res = run(["lintian", "--fail-on", "error,warning", "--show-overrides",
                   "--tag-display-limit", "0", self.changes], timeout=900)
        out = (res.stdout + res.stderr).strip()
        print("\n".join("   " + line for line in out.splitlines()) or "   (no tags)")
        bad = [line for line in out.splitlines() if re.match(r"^[EW]: ", line)]
        check(not bad and res.returncode == 0, "lintian: no errors and no warnings",
              f"{len(bad)} tag(s), exit {res.returncode}")
        for f in glob.glob(os.path.join(TOP, "packaging", "debian", "*lintian-overrides")):
            prev = ""
            for line in open(f):
                line = line.strip()
                if line and not line.startswith("#") and not prev.startswith("#"):
                    fail(f"{os.path.basename(f)}: override without a reason: {line}")
                prev = line

    # -- 3. blhc --
    def blhc(self):
        step("blhc (hardening flags on every compile and link line)")
        log = os.path.join(DEB_DIR, "build.log")
        res = run(["blhc", "--all", log])
        out = (res.stdout + res.stderr).strip()
        if out:
            print("\n".join("   " + line for line in out.splitlines()[:40]))
        check(res.returncode == 0, "blhc: no missing hardening flags", f"exit {res.returncode}")

    # -- 4. systemd-analyze security --
    def security(self):
        step(f"systemd-analyze security --offline=true (every unit <= {SECURITY_MAX})")
        # What the package ships, as dpkg would unpack it.
        tree = os.path.join(self.work, "deb-tree")
        run(["dpkg-deb", "-x", self.deb, tree], check_rc=True)
        unit_dir = os.path.join(tree, UNIT_DIR.lstrip("/"))
        shipped = sorted(os.listdir(unit_dir))
        check(sorted(UNITS) == shipped, f"the package ships {', '.join(sorted(UNITS))}",
              str(shipped))
        services = [u for u in shipped if u.endswith(".service")]
        others = [u for u in shipped if not u.endswith(".service")]
        if others:
            print(f"   ({', '.join(others)}: systemd-analyze security scores services only)")
        cases = [(u, None) for u in services]
        ex_dir = os.path.join(tree, "usr/share/doc", PKG, "examples", "systemd")
        for dropin in sorted(glob.glob(os.path.join(ex_dir, "*.conf*"))):
            opener = gzip.open if dropin.endswith(".gz") else open
            with opener(dropin, "rt") as f:
                first = f.readline()
            m = re.match(r"# Drop-in for ([\w@.-]+\.service):", first)
            if not check(m and m.group(1) in services,
                         f"{os.path.basename(dropin)} names a shipped service on its first line",
                         first.strip()):
                continue
            cases.append((m.group(1), dropin))
        for name, dropin in cases:
            root = tempfile.mkdtemp(prefix="sa-root.", dir=self.work)
            os.makedirs(os.path.join(root, UNIT_DIR.lstrip("/")))
            for u in shipped:       # the whole set: keyd's Sockets= and Wants= resolve
                shutil.copy(os.path.join(unit_dir, u), os.path.join(root, UNIT_DIR.lstrip("/")))
            label = name
            if dropin:
                d = os.path.join(root, "etc/systemd/system", name + ".d")
                os.makedirs(d)
                base = os.path.basename(dropin)
                if base.endswith(".gz"):
                    base = base[:-3]
                    with gzip.open(dropin, "rb") as src, open(os.path.join(d, base), "wb") as dst:
                        dst.write(src.read())
                else:
                    shutil.copy(dropin, d)
                label += f" + {base}"
            res = run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                       "--no-pager", name])
            m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
            if not m:
                fail(f"{label}: no score from systemd-analyze: {res.stdout}{res.stderr}")
                continue
            score = float(m.group(1))
            exposed = [line for line in res.stdout.splitlines() if line.startswith("✗")]
            print(f"   {label}: {score}")
            for line in exposed:
                print("      " + re.sub(r"\s{2,}", "  ", line))
            self.scores.append((label, score))
            check(score <= SECURITY_MAX, f"{label} scores {score} <= {SECURITY_MAX}",
                  f"{score} > {SECURITY_MAX}")

    # -- 5. install --
    def install(self):
        step("apt-get install ./" + os.path.basename(self.deb))
        res = run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y",
                   "--no-install-recommends", "./" + os.path.basename(self.deb)],
                  cwd=DEB_DIR, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        print("\n".join("   " + x for x in (res.stdout + res.stderr).splitlines()[-8:]))
        return check(res.returncode == 0, "installed", f"exit {res.returncode}")

    def check_installed(self):
        step("users, groups, directories, modes, files")
        for u in USERS:
            try:
                e = pwd.getpwnam(u)
                check(e.pw_uid < 1000, f"user {u} is a system user (uid {e.pw_uid})")
                check(e.pw_shell in ("/usr/sbin/nologin", "/bin/false"),
                      f"user {u} cannot log in ({e.pw_shell})")
            except KeyError:
                fail(f"user {u} missing")
        for g in GROUPS:
            try:
                check(grp.getgrnam(g).gr_gid < 1000, f"group {g} is a system group")
            except KeyError:
                fail(f"group {g} missing")
        keyd_group = grp.getgrgid(pwd.getpwnam("redoubt-keyd").pw_gid).gr_name
        expect = {
            "/etc/redoubt": (0o755, "root:root"),
            TLS_DIR: (0o750, f"root:{keyd_group}"),
            LOG_DIR: (0o2750, "redoubt-keyd:adm"),
            RUN_DIR: (0o755, "root:root"),
            CONF: (0o644, "root:root"),
            "/usr/bin/redoubt": (0o755, "root:root"),
            **{os.path.join(UNIT_DIR, u): (0o644, "root:root") for u in UNITS},
            "/etc/logrotate.d/redoubt": (0o644, "root:root"),
            "/usr/lib/tmpfiles.d/redoubt.conf": (0o644, "root:root"),
            "/usr/share/man/man8/redoubt.8.gz": (0o644, "root:root"),
            "/usr/share/man/man5/redoubt.conf.5.gz": (0o644, "root:root"),
            "/usr/share/doc/redoubt/README.Debian": (0o644, "root:root"),
            "/usr/share/doc/redoubt/copyright": (0o644, "root:root"),
            "/usr/share/doc/redoubt/examples/systemd/tpm.conf": (0o644, "root:root"),
            "/usr/share/doc/redoubt/examples/systemd/ip-allow.conf": (0o644, "root:root"),
            "/usr/share/doc/redoubt/examples/systemd/low-port.conf": (0o644, "root:root"),
        }
        for path, (mode, own) in expect.items():
            if not os.path.exists(path) and os.path.exists(path + ".gz"):
                path += ".gz"
            if not os.path.exists(path):
                fail(f"{path} missing")
                continue
            m, o = mode_of(path)
            check((m, o) == (mode, own), f"{path} {oct(mode)} {own}", f"is {oct(m)} {o}")
        res = run(["dpkg-query", "-W", "-f=${Conffiles}", PKG])
        conffiles = sorted(line.split()[0] for line in res.stdout.splitlines() if line.strip())
        check(conffiles == sorted([CONF, "/etc/logrotate.d/redoubt"]),
              "conffiles: redoubt.conf and the logrotate file", str(conffiles))
        res = run(["redoubt", "version"])
        version = run(["dpkg-query", "-W", "-f=${Version}", PKG]).stdout.strip()
        check(res.returncode == 0 and version.split("-")[0] in res.stdout,
              f"redoubt version reports {version}", res.stdout + res.stderr)
        res = run(["redoubt", "check-config", "-c", CONF])
        check(res.returncode == 0, "the packaged example passes check-config",
              res.stdout + res.stderr)
        res = run(["logrotate", "-d", "/etc/logrotate.d/redoubt"])
        check(res.returncode == 0 and "error" not in res.stderr.lower(),
              "logrotate -d accepts /etc/logrotate.d/redoubt", res.stderr[-500:])
        res = run(["systemd-analyze", "verify"] + [os.path.join(UNIT_DIR, u) for u in UNITS])
        check(res.returncode == 0 and not res.stderr.strip(),
              f"systemd-analyze verify {' '.join(UNITS)}: clean", res.stderr)
        # The three units agree on each other's names (a rename must touch all of them).
        keyd = parse_unit(os.path.join(UNIT_DIR, KEYD_UNIT))
        sock = parse_unit(os.path.join(UNIT_DIR, CONTROL_UNIT))
        workers = parse_unit(os.path.join(UNIT_DIR, WORKERS_UNIT))
        check(sock["Socket"].get("Service") == [KEYD_UNIT] and
              CONTROL_UNIT in " ".join(keyd["Service"].get("Sockets", [])),
              f"{CONTROL_UNIT} activates {KEYD_UNIT}, which names it in Sockets=")
        check(KEYD_UNIT in " ".join(workers["Unit"].get("Wants", [])) and
              WORKERS_UNIT in " ".join(keyd["Unit"].get("PartOf", [])) and
              "Install" not in keyd,
              f"{WORKERS_UNIT} pulls in {KEYD_UNIT} (Wants=), which goes with it (PartOf=, "
              "no [Install])")
        for page in ("/usr/share/man/man8/redoubt.8.gz", "/usr/share/man/man5/redoubt.conf.5.gz"):
            res = run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
                      env=dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80"))
            check(res.returncode == 0 and not res.stderr.strip(),
                  f"{os.path.basename(page)} renders without warnings", res.stderr[:500])
        self.check_man_coverage()

    def check_man_coverage(self):
        """Every configuration key in redoubt.conf(5), every subcommand in redoubt(8)."""
        def text(page):
            return run(["man", "-l", page], env=dict(os.environ, MANWIDTH="200",
                                                     LC_ALL="C.UTF-8")).stdout
        conf5 = text("/usr/share/man/man5/redoubt.conf.5.gz")
        man8 = text("/usr/share/man/man8/redoubt.8.gz")
        keys = set(re.findall(r'KEY(?:FN)?\("([a-z-]+)"',
                              open(os.path.join(TOP, "policy", "config_keys.c")).read()))
        missing = sorted(k for k in keys if not re.search(rf"(?m)^\s+{re.escape(k)}\b", conf5)
                         and not re.search(rf"\b{re.escape(k)}\b", conf5))
        check(keys and not missing, f"redoubt.conf(5) documents all {len(keys)} keys",
              f"missing {missing}")
        main_c = open(os.path.join(TOP, "cli", "main.c")).read()
        cmds = re.findall(r'\{ "([a-z-]+)",\s+\w+,\s+"', main_c)
        missing = sorted(c for c in cmds if not re.search(rf"redoubt {re.escape(c)}\b", man8)
                         and not re.search(rf"(?m)^\s+{re.escape(c)}\b", man8))
        check(cmds and not missing, f"redoubt(8) documents all {len(cmds)} commands",
              f"missing {missing}")

    # -- 6. run it the way systemd would --
    def serve(self):
        step(f"configure; start {KEYD_UNIT}, then {WORKERS_UNIT}, as systemd would")
        try:
            self.serve_units()
        finally:
            # After a failure: stop what still runs, as systemctl stop would, so the package
            # steps below find the services stopped.
            self.stop_leftovers()

    def serve_units(self):
        helper = self.build_helper()
        units = {n: parse_unit(os.path.join(UNIT_DIR, n)) for n in (KEYD_UNIT, WORKERS_UNIT)}
        ux = {n: UnitExec(n, u, self.work, helper) for n, u in units.items()}
        self.unit_execs = ux
        for n in ux:
            self.runtime_made += ux[n].make_runtime_dirs()
        harness = True
        for n in ux:
            res = run(ux[n].argv("/bin/true"))
            harness &= check(res.returncode == 0, f"the systemd emulation of {n} runs a command",
                             res.stdout + res.stderr)
        # ExecCondition on the packaged example: skip (exit 1..254), not fail.
        for n in ux if harness else ():
            for cond in units[n]["Service"].get("ExecCondition", []):
                res = run(ux[n].argv(cond))
                check(res.returncode == 1 and not res.stderr.strip(),
                      f"{n}: ExecCondition skips the unconfigured example (exit "
                      f"{res.returncode})", res.stderr)
        # Development certificates into /etc/redoubt/tls, as README.Debian says.
        res = run(["redoubt", "cert", "dev", "--dir", TLS_DIR, "--client-name", "client"])
        if not check(res.returncode == 0, "redoubt cert dev --dir /etc/redoubt/tls",
                     res.stdout + res.stderr):
            return
        for n in ("ca.crt", "ca.key", "node.crt", "node.key", "client.crt", "client.key"):
            self.made_files.append(os.path.join(TLS_DIR, n))
        keyd_gid = pwd.getpwnam("redoubt-keyd").pw_gid
        os.chown(os.path.join(TLS_DIR, "node.key"), 0, keyd_gid)
        os.chmod(os.path.join(TLS_DIR, "node.key"), 0o640)
        # redis-server on a unix socket in the work directory (under /run: PrivateTmp hides /tmp).
        sock = os.path.join(self.work, "redis.sock")
        redis = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "777",
             "--save", "", "--appendonly", "no", "--dir", self.work,
             "--logfile", os.path.join(self.work, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(("redis-server", redis))
        port = free_port()
        with open(CONF, "a") as f:
            f.write(f"""
; ---- added by tests/package/test_package.py ----
[global]
workers = {PKGTEST_WORKERS}

[identity node]
cert = {TLS_DIR}/node.crt
key  = {TLS_DIR}/node.key
ca   = {TLS_DIR}/ca.crt

[listener clients]
listen   = 127.0.0.1:{port}
backend  = unix:{sock}
identity = node
tls-mode = verify-full
allow    = dns:client
""")
        self.conf_digest = sha256(CONF)
        if not harness:
            return
        wait_for(lambda: os.path.exists(sock), 10)
        for n in ux:
            for cond in units[n]["Service"].get("ExecCondition", []):
                res = run(ux[n].argv(cond))
                check(res.returncode == 0, f"{n}: ExecCondition lets the configured unit start",
                      f"exit {res.returncode}")

        keyd = self.start_keyd(units[KEYD_UNIT], ux[KEYD_UNIT])
        if keyd is None:
            return
        workers = self.start_unit(WORKERS_UNIT, units[WORKERS_UNIT], ux[WORKERS_UNIT])
        if workers is None:
            return
        log_path = self.logs[WORKERS_UNIT]
        ready = wait_for(lambda: workers.poll() is not None or port_open(port), READY_TIMEOUT_S)
        if not check(ready and workers.poll() is None,
                     f"{WORKERS_UNIT} listens on 127.0.0.1:{port}",
                     f"exit {workers.poll()}; log:\n{tail(log_path)}"):
            return
        tls = ["--tls", "--cacert", f"{TLS_DIR}/ca.crt", "--cert", f"{TLS_DIR}/client.crt",
               "--key", f"{TLS_DIR}/client.key", "-h", "127.0.0.1", "-p", str(port)]

        def ping():
            return run(["redis-cli"] + tls + ["PING"], timeout=30).stdout.strip() == "PONG"
        # keyd's half links to the workers' once their link socket exists (it retries).
        check(wait_for(ping, READY_TIMEOUT_S), "redis-cli --tls PING through redoubt: PONG",
              tail(log_path) + tail(self.logs[KEYD_UNIT]))
        self.check_processes(KEYD_UNIT, units[KEYD_UNIT], ux[KEYD_UNIT], keyd, 1)
        self.check_processes(WORKERS_UNIT, units[WORKERS_UNIT], ux[WORKERS_UNIT], workers,
                             PKGTEST_WORKERS)
        res = run(["redis-cli"] + tls + ["SET", "pkgtest", "through-the-package"], timeout=30)
        direct = run(["redis-cli", "-s", sock, "GET", "pkgtest"], timeout=30)
        check(direct.stdout.strip() == "through-the-package",
              "a SET through TLS reached the redis-server", res.stdout + direct.stdout)
        bad = run(["redis-cli", "--tls", "--cacert", f"{TLS_DIR}/ca.crt", "-h", "127.0.0.1",
                   "-p", str(port), "PING"], timeout=30)
        check(bad.stdout.strip() != "PONG", "a client without a certificate is refused",
              bad.stdout)
        self.check_audit(keyd.pid)
        for n in (WORKERS_UNIT, KEYD_UNIT):
            for reload in units[n]["Service"].get("ExecReload", []):
                res = run(ux[n].argv(reload), timeout=60)
                check(res.returncode == 0,
                      f"{n}: ExecReload ({reload}) succeeds",
                      (res.stdout + res.stderr).strip())
        check(ping(), "still serving after the reloads", tail(log_path))
        # systemctl stop redoubt: the workers' half, then keyd's (PartOf=, Before=).
        for n, proc in ((WORKERS_UNIT, workers), (KEYD_UNIT, keyd)):
            self.stop_unit(n, units[n], proc)
        ux[WORKERS_UNIT].remove_runtime_dirs()
        self.close_control_socket()
        check(not os.path.exists(os.path.join(RUN_DIR, "workers")) and
              not os.path.exists(self.control_path),
              f"stopped: {RUN_DIR}/workers and the control socket are gone (RuntimeDirectory=, "
              "RemoveOnStop=)")
        for n in (KEYD_UNIT, WORKERS_UNIT):
            print(f"   {n} log (last lines):")
            print("\n".join("      " + x for x in tail(self.logs[n], 8).splitlines()))

    def open_control_socket(self, sock_unit):
        """What systemd does when it starts redoubt-control.socket: bind, chown, chmod, listen."""
        s = sock_unit["Socket"]
        path = s["ListenStream"][-1]
        user = s.get("SocketUser", ["root"])[-1]
        group = s.get("SocketGroup", ["root"])[-1]
        mode = int(s.get("SocketMode", ["0666"])[-1], 8)
        check((user, group, mode) == ("root", "redoubt-admin", 0o660),
              f"{CONTROL_UNIT}: {path} root:redoubt-admin 0660 (as README.Debian says)",
              f"{user}:{group} {oct(mode)}")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, int(s.get("DirectoryMode", ["0755"])[-1], 8))
            self.runtime_made.append(parent)
        if os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
        so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        so.bind(path)
        self.control_path = path
        self.control_sock = so
        os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        os.chmod(path, mode)
        so.listen(int(s.get("Backlog", [str(socket.SOMAXCONN)])[-1]))
        m, o = mode_of(path)
        check((m, o) == (mode, f"{user}:{group}"), f"control socket made: {path} {o} {oct(m)}")
        return so, s.get("FileDescriptorName", [CONTROL_UNIT])[-1]

    def close_control_socket(self):
        """systemctl stop redoubt-control.socket (RemoveOnStop=yes)."""
        if self.control_sock is not None:
            self.control_sock.close()
            self.control_sock = None
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)

    def start_unit(self, name, unit, ux, extra_env=(), fds=None):
        """ExecStartPre, then ExecStart in the background; None if something failed."""
        svc = unit["Service"]
        for pre in svc.get("ExecStartPre", []):
            res = run(ux.argv(pre))
            if not check(res.returncode == 0, f"{name}: ExecStartPre ({' '.join(unit_argv(pre)[1][1:4])}"
                         f") passes as {ux.pw.pw_name} in the sandbox",
                         (res.stdout + res.stderr)[-1500:]):
                return None
        log_path = os.path.join(self.work, name + ".log")
        self.logs[name] = log_path
        start = svc["ExecStart"][-1]
        print(f"   {name}: ExecStart={start}")
        pre_exec = None
        if fds:
            # Socket activation: the sockets at fd 3, 4, ... in the started process.
            def pre_exec():
                for i, fd in enumerate(fds):
                    os.dup2(fd, 3 + i)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(ux.argv(start, extra_env), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    pass_fds=tuple(range(3, 3 + len(fds or ()))),
                                    preexec_fn=pre_exec, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start_keyd(self, unit, ux):
        """redoubt-control.socket, then redoubt-keyd.service (Type=notify) until READY=1."""
        svc = unit["Service"]
        control, fdname = self.open_control_socket(parse_unit(os.path.join(UNIT_DIR,
                                                                           CONTROL_UNIT)))
        notify_path = os.path.join(self.work, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        os.chmod(notify_path, 0o777)          # as systemd's /run/systemd/notify
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        env = ["LISTEN_PID=" + UnitExec.PID_MARK, "LISTEN_FDS=1", f"LISTEN_FDNAMES={fdname}"]
        if svc.get("Type", ["simple"])[-1] == "notify":
            env.append(f"NOTIFY_SOCKET={notify_path}")
        try:
            proc = self.start_unit(KEYD_UNIT, unit, ux, env, fds=[control.fileno()])
            if proc is None:
                return None
            if svc.get("Type", ["simple"])[-1] != "notify":
                fail(f"{KEYD_UNIT} is not Type=notify: the workers would not wait for its keys")
                return proc
            ready, sender = self.wait_notify(notify, proc)
            main_only = svc.get("NotifyAccess", ["main"])[-1] == "main"
            check(ready and (sender == proc.pid or not main_only),
                  f"{KEYD_UNIT}: READY=1 on NOTIFY_SOCKET"
                  f"{' from the main process' if main_only else ''}",
                  f"ready {ready}, sender pid {sender}, main pid {proc.pid}, exit "
                  f"{proc.poll()}; log:\n{tail(self.logs[KEYD_UNIT])}")
            return proc if ready and proc.poll() is None else None
        finally:
            notify.close()

    def wait_notify(self, notify, proc):
        """(READY=1 seen, sender pid) within READY_TIMEOUT_S, while the process lives."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        creds = struct.calcsize("iII")
        while time.monotonic() < deadline and proc.poll() is None:
            r, _, _ = select.select([notify], [], [], 0.2)
            if not r:
                continue
            msg, anc, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(creds))
            pid = None
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", data[:creds])[0]
            lines = msg.decode(errors="replace").splitlines()
            print(f"   notify from pid {pid}: {' '.join(lines)}")
            if "READY=1" in lines:
                return True, pid
        return False, None

    def stop_unit(self, name, unit, proc):
        """systemctl stop with KillMode=mixed: SIGTERM to the main process; then nothing of
        the service may be left (systemd would SIGKILL the rest of the cgroup)."""
        pids = [proc.pid] + descendants_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=int(unit["Service"].get("TimeoutStopSec", ["90"])[-1]))
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, f"{name}: SIGTERM stops it with exit 0",
              f"exit {rc}; {tail(self.logs[name])}")
        left = [p for p in pids if wait_for(lambda p=p: not pid_alive(p), 5) is False]
        check(not left, f"{name}: no process of the service is left ({len(pids)} were running)",
              str(left))

    def build_helper(self):
        # In the work directory under /run: the emulated PrivateTmp/ProtectHome hide a
        # checkout that lives in /tmp or /root.
        out = os.path.join(self.work, "helper")
        os.makedirs(out, exist_ok=True)
        helper = os.path.join(out, "seccomp_exec")
        run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", helper,
             os.path.join(TOP, "tests", "package", "seccomp_exec.c"), "-lseccomp"],
            check_rc=True)
        return helper

    def check_processes(self, name, unit, ux, proc, n_children):
        """Every process of the service: the unit's user, capabilities within its bounding
        set (none at all when it is empty), NoNewPrivs, a seccomp filter."""
        svc = unit["Service"]
        allowed = 0
        for v in svc.get("CapabilityBoundingSet", []):
            for c in v.split():
                allowed |= 1 << cap_number(c)
        kids = children_of(proc.pid)
        check(len(kids) == n_children, f"{name}: supervisor and {n_children} child(ren)",
              f"children {kids}")
        for pid, what in [(proc.pid, "supervisor")] + [(k, "child") for k in kids]:
            st = proc_status(pid)
            label = f"{name}: {what} {pid} ({st.get('Name')})"
            uids = {int(u) for u in st.get("Uid", "-1").split()}
            check(uids == {ux.pw.pw_uid}, f"{label} runs as {ux.pw.pw_name}",
                  f"uids {sorted(uids)}")
            caps = {k: int(st.get(k, "ffff"), 16) for k in ("CapEff", "CapPrm", "CapBnd")}
            if allowed == 0:
                check(not any(caps.values()), f"{label}: CapEff, CapPrm, CapBnd all 0",
                      str({k: hex(v) for k, v in caps.items()}))
            else:
                check(not any(v & ~allowed for v in caps.values()),
                      f"{label}: capabilities within the unit's bounding set",
                      str({k: hex(v) for k, v in caps.items()}))
            check(st.get("NoNewPrivs") == "1" and st.get("Seccomp") == "2",
                  f"{label}: NoNewPrivs 1, seccomp filter",
                  f"NoNewPrivs {st.get('NoNewPrivs')} Seccomp {st.get('Seccomp')}")

    def check_audit(self, pid):
        path = os.path.join(LOG_DIR, "audit.jsonl")
        if not check(wait_for(lambda: os.path.exists(path), 10), "keyd writes the audit log"):
            return
        self.made_files += [path, os.path.join(LOG_DIR, "audit.key"),
                            os.path.join(LOG_DIR, "audit.pub")]
        for name, mode in (("audit.jsonl", 0o640), ("audit.key", 0o600)):
            p = os.path.join(LOG_DIR, name)
            if os.path.exists(p):
                m, o = mode_of(p)
                check(m == mode and o == "redoubt-keyd:adm", f"{name} {oct(mode)} redoubt-keyd:adm",
                      f"is {oct(m)} {o}")
            else:
                fail(f"{p} missing")
        # The packaged logrotate file, forced; then what its postrotate does under systemd
        # (systemctl kill --kill-whom=main -s USR1 redoubt-keyd.service): SIGUSR1 to the main
        # process of keyd's service, which forwards it to keyd.
        with open("/etc/logrotate.d/redoubt") as f:
            post = f.read()
        check(re.search(rf"--kill-whom=main\s.*{re.escape(KEYD_UNIT)}", post),
              f"logrotate's postrotate signals {KEYD_UNIT}'s main process")
        state = os.path.join(self.work, "logrotate.state")
        res = run(["logrotate", "-f", "-s", state, "/etc/logrotate.d/redoubt"])
        rotated = sorted(glob.glob(os.path.join(LOG_DIR, "audit.jsonl-*")))
        self.made_files += rotated
        if not check(res.returncode == 0 and len(rotated) == 1, "logrotate rotated audit.jsonl",
                     res.stderr + str(rotated)):
            return
        os.kill(pid, signal.SIGUSR1)
        reopened = wait_for(lambda: os.path.exists(path), 10)
        check(reopened, "SIGUSR1: keyd reopened a new audit.jsonl")
        if reopened:
            m, o = mode_of(path)
            check(m == 0o640 and o == "redoubt-keyd:adm", "the new audit.jsonl is 0640 "
                  "redoubt-keyd:adm", f"is {oct(m)} {o}")
        res = run(["redoubt", "audit", "verify"] + rotated + [path])
        check(res.returncode == 0, "redoubt audit verify: the chain continues across the "
              "rotation", (res.stdout + res.stderr)[-800:])
        for p in glob.glob(os.path.join(LOG_DIR, "*")):
            if p not in self.made_files:
                self.made_files.append(p)

    # -- 7. reinstall keeps the edited conffile --
    def reinstall(self):
        step("reinstall keeps the edited conffile")
        res = run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "--reinstall", "-y",
                   "./" + os.path.basename(self.deb)], cwd=DEB_DIR,
                  env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        check(res.returncode == 0, "apt-get install --reinstall", res.stderr[-800:])
        if getattr(self, "conf_digest", None):
            check(sha256(CONF) == self.conf_digest, "the edited /etc/redoubt/redoubt.conf is kept")
        else:
            fail("reinstall: the configuration was never edited (an earlier step failed)")
        strays = glob.glob(CONF + ".dpkg-*") + glob.glob(CONF + ".ucf-*")
        check(not strays, "no .dpkg-new/.dpkg-dist copies", str(strays))
        m, o = mode_of(TLS_DIR)
        check(o.startswith("root:") and m == 0o750, "/etc/redoubt/tls still 0750 after postinst")

    # -- 8. remove, purge, compare --
    def remove_purge(self):
        step("dpkg -r redoubt")
        res = run(["dpkg", "-r", PKG])
        check(res.returncode == 0, "dpkg -r", res.stderr)
        after_r = snapshot(self.pkg_paths)
        print("   differences to the state before the test:")
        print("\n".join("      " + x for x in diff(self.before, after_r)) or "      (none)")
        check(not os.path.exists("/usr/bin/redoubt"), "remove: the program is gone")
        check(os.path.exists(CONF) and sha256(CONF) == getattr(self, "conf_digest", 0),
              "remove: the edited configuration stays")
        if os.path.join(TLS_DIR, "node.key") in self.made_files:
            check(os.path.exists(os.path.join(TLS_DIR, "node.key")), "remove: keys stay")
        check(os.path.isdir(LOG_DIR), "remove: the audit trail stays")
        check(all(in_passwd(u) for u in USERS), "remove: users stay")

        step("dpkg -P redoubt")
        # Without systemd, or after a crash, the units' sockets stay where they were made:
        # purge must clear them (and nothing else).  Leave such remains, as the services would.
        stale = [os.path.join(RUN_DIR, "workers", "link.sock"),
                 os.path.join(RUN_DIR, "control.sock")]
        os.makedirs(os.path.join(RUN_DIR, "workers"), exist_ok=True)
        self.runtime_made.append(os.path.join(RUN_DIR, "workers"))
        u = pwd.getpwnam("redoubt")
        os.chown(os.path.join(RUN_DIR, "workers"), u.pw_uid, u.pw_gid)
        for path in stale:
            if not os.path.lexists(path):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as so:
                    so.bind(path)
        res = run(["dpkg", "-P", PKG])
        print("\n".join("   " + x for x in (res.stdout + res.stderr).strip().splitlines()))
        check(res.returncode == 0, "dpkg -P", res.stderr)
        after_p = snapshot(self.pkg_paths)
        d = diff(self.before, after_p)
        print("   differences to the state before the test:")
        print("\n".join("      " + x for x in d) or "      (none)")
        check(not os.path.exists(CONF), "purge: the configuration is gone")
        check(not any(os.path.lexists(p) for p in stale) and
              not os.path.exists(os.path.join(RUN_DIR, "workers")),
              f"purge: sockets left in {RUN_DIR} and {RUN_DIR}/workers are gone",
              str([p for p in stale if os.path.lexists(p)]))
        if os.path.join(TLS_DIR, "node.key") in self.made_files:
            check(os.path.exists(os.path.join(TLS_DIR, "node.key")),
                  "purge: keys the administrator put in /etc/redoubt/tls stay")
        if os.path.join(LOG_DIR, "audit.pub") in self.made_files:
            check(os.path.exists(os.path.join(LOG_DIR, "audit.pub")),
                  "purge: the audit trail stays (PCI DSS retention)")
        unexplained = [x for x in d if not self.expected_after_purge(x)]
        check(not unexplained, "purge leaves only the documented differences (users and "
              "groups, keys, audit trail)", "\n" + "\n".join(unexplained))

    def expected_after_purge(self, line):
        if not line.startswith("+ "):
            return False          # something that existed before was removed or changed
        what = line[2:]
        if re.match(r"(passwd|group) (redoubt|redoubt-keyd|redoubt-admin) ", what):
            return True
        m = re.match(r"path (\S+) ", what)
        if not m:
            return False
        p = m.group(1)
        return p in ("/etc/redoubt", TLS_DIR, LOG_DIR) or p in self.made_files

    # -- cleanup: what this test made, and nothing else --
    def stop_leftovers(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                # What systemd would do at a stop: SIGTERM to the main process, then SIGKILL
                # to whatever of the service is left.
                rest = descendants_of(p.pid)
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                for k in rest:
                    if pid_alive(k):
                        os.kill(k, signal.SIGKILL)
                print(f"   stopped {name}")
        self.close_control_socket()
        for ux in self.unit_execs.values():
            ux.remove_runtime_dirs()

    def cleanup(self):
        step("clean up")
        self.stop_leftovers()
        for d in reversed(self.runtime_made):
            if os.path.isdir(d) and not os.listdir(d) and not self.existed(d):
                os.rmdir(d)
        status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PKG]).stdout.strip()
        if status and not status.startswith("un"):
            res = run(["dpkg", "-P", PKG])
            print(f"   purged the package ({status}): exit {res.returncode}")
        for p in self.made_files:
            if os.path.lexists(p):
                os.unlink(p)
        for d in (TLS_DIR, "/etc/redoubt", LOG_DIR, RUN_DIR):
            if os.path.isdir(d) and not os.listdir(d) and not self.existed(d):
                os.rmdir(d)
        # Users and groups that the package made during this test (the package keeps them).
        for u in USERS:
            if in_passwd(u) and not self.existed_line("passwd", u):
                run(["deluser", "--system", u])
        for g in GROUPS:
            if in_group(g) and not self.existed_line("group", g):
                run(["delgroup", "--system", g])
        if self.before is not None:
            final = snapshot(self.pkg_paths)
            d = diff(self.before, final)
            check(not d, "the system is as it was before the test", "\n" + "\n".join(d))
        if self.work and os.environ.get("REDOUBT_PKGTEST_KEEP") != "1" and not FAILURES:
            shutil.rmtree(self.work, ignore_errors=True)
        elif self.work:
            print(f"   kept {self.work}")

    def existed(self, path):
        return any(x.startswith(f"path {path} ") for x in self.before or [])

    def existed_line(self, kind, name):
        return any(x.startswith(f"{kind} {name} ") for x in self.before or [])

    def main(self):
        t0 = time.monotonic()
        if os.geteuid() != 0:
            print("test-package: run as root (it installs and purges a package)", file=sys.stderr)
            return 2
        status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PKG]).stdout.strip()
        if status and not status.startswith("un"):
            print(f"test-package: redoubt is installed here ({status}); refusing to touch it "
                  "(dpkg -P redoubt first)", file=sys.stderr)
            return 2
        for p in ("/etc/redoubt", LOG_DIR):
            if os.path.exists(p):
                print(f"test-package: {p} exists (a real installation?); refusing to touch it",
                      file=sys.stderr)
                return 2
        self.ensure_tools()
        self.work = tempfile.mkdtemp(prefix="redoubt-pkgtest.", dir="/run")
        os.chmod(self.work, 0o755)
        try:
            if not self.timed("build", self.build):
                return 1
            self.timed("lintian", self.lintian)
            self.timed("blhc", self.blhc)
            self.timed("systemd-analyze", self.security)
            self.before = snapshot(self.pkg_paths)
            if self.timed("install", self.install):
                self.timed("checks", self.check_installed)
                self.timed("serve", self.serve)
                self.timed("reinstall", self.reinstall)
                self.timed("remove/purge", self.remove_purge)
        except Exception as exc:  # noqa: BLE001 -- reported, then cleaned up
            fail(f"test aborted: {exc!r}")
        finally:
            self.cleanup()
        step("summary")
        if self.scores:
            print("   exposure: " + ", ".join(f"{n} {v}" for n, v in self.scores))
        print("   " + ", ".join(f"{n} {s:.1f}s" for n, s in self.timings) +
              f"; total {time.monotonic() - t0:.1f}s")
        if FAILURES:
            print(f"   {len(FAILURES)} failure(s):")
            for f in FAILURES:
                print("    - " + f.splitlines()[0])
            return 1
        for n in NOTES:
            print("   note: " + n)
        print("   all package checks passed")
        return 0


# ---------- small helpers ----------

def sha256(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(fn, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return fn()


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    st = proc_status(pid)
    return bool(st) and not st.get("State", "").startswith("Z")


def descendants_of(pid):
    out = []
    for k in children_of(pid):
        out += [k] + descendants_of(k)
    return out


def cap_number(name):
    """CAP_NET_BIND_SERVICE -> 10, from the kernel's header."""
    with open("/usr/include/linux/capability.h") as f:
        m = re.search(rf"^#define\s+{re.escape(name.upper())}\s+(\d+)", f.read(), re.M)
    if not m:
        raise RuntimeError(f"unknown capability {name}")
    return int(m.group(1))


def children_of(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit() and proc_status(d).get("PPid") == str(pid):
            kids.append(int(d))
    return kids


def in_passwd(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def in_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    sys.exit(PackageTest().main())
