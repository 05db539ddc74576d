#!/usr/bin/python3
"""`make test-package`: build the Debian package, check it, install it, run it, remove it.

Steps (each reported; every failure is collected and the exit status is 1 if there was one):
  1. build with packaging/build-deb.sh (dpkg-buildpackage -us -uc -b, debhelper 13)
  2. lintian on the .changes: no error, no warning; every override has a written reason
  3. blhc on the build log: every compile and link line has the hardening flags
  4. systemd-analyze security --offline=true: every shipped unit, and the unit with each
     shipped drop-in example, scores <= REDOUBT_SECURITY_MAX (default 1.5, the issue's bar)
  5. apt-get install ./redoubt_*.deb; users, groups, directories, modes, files, conffiles
  6. a real configuration (dev certificates in /etc/redoubt/tls, redis-server on a unix socket),
     ExecCondition, ExecStartPre and ExecStart run the way systemd would run them: clean
     environment, the unit's limits and umask, its capability bounding set and NoNewPrivileges,
     a mount namespace with ProtectSystem=strict + ReadWritePaths, PrivateTmp, ProtectHome,
     PrivateDevices, ProtectProc/ProcSubset, and its system call filter (tests/package/
     seccomp_exec.c); redis-cli --tls through it; the children's users and sandboxes; the audit
     log, rotated by the packaged logrotate file and reopened on SIGUSR1; ExecReload; SIGTERM
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
import hashlib
import json
import os
import pwd
import resource
import re
import shlex
import shutil
import signal
import socket
import stat
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
UNIT_PATH = "/lib/systemd/system/redoubt.service"
CONF = "/etc/redoubt/redoubt.conf"
TLS_DIR = "/etc/redoubt/tls"
LOG_DIR = "/var/log/redoubt"
RUN_DIR = "/run/redoubt"
READY_TIMEOUT_S = 30      # ExecStart to an accepting listener (keyd may load slowly)
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
    """Builds the command line that runs an Exec*= line of the unit as systemd would."""

    def __init__(self, unit, work, helper):
        self.svc = unit["Service"]
        self.work = work
        self.helper = helper
        self.allow_file = os.path.join(work, "syscalls.allow")
        with open(self.allow_file, "w") as f:
            f.write("\n".join(sorted(syscall_allow_list(self.svc.get("SystemCallFilter", [])))))
            f.write("\n")
        self.ns_script = os.path.join(work, "unit-namespace.sh")
        self._write_ns_script()

    def _write_ns_script(self):
        rw = []
        for v in self.svc.get("ReadWritePaths", []):
            rw += [p.lstrip("-") for p in v.split()]
        rw += ["/run/" + d for v in self.svc.get("RuntimeDirectory", []) for d in v.split()]
        lines = ["#!/bin/sh", "# Generated by tests/package/test_package.py: the unit's file "
                 "system view, in a private mount namespace.", "set -e",
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

    def argv(self, exec_value):
        _, cmd = unit_argv(exec_value)
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
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG=C.UTF-8"]
        for v in svc.get("Environment", []):
            env += shlex.split(v)
        caps = []
        for v in svc.get("CapabilityBoundingSet", []):
            caps += [c.lower().replace("cap_", "") for c in v.split()]
        bounding = "-all" + "".join(f",+{c}" for c in caps)
        groups = [g for v in svc.get("SupplementaryGroups", []) for g in v.split()]
        priv = ["setpriv", f"--groups={','.join(groups)}" if groups else "--clear-groups",
                f"--bounding-set={bounding}", "--inh-caps=-all", "--ambient-caps=-all"]
        if self._yes("NoNewPrivileges"):
            priv.append("--no-new-privs")
        err = svc.get("SystemCallErrorNumber", ["EPERM"])[-1]
        errnum = getattr(errno, err) if not err.isdigit() else int(err)
        afs = []
        for v in svc.get("RestrictAddressFamilies", []):
            afs += [str(int(getattr(socket, a))) for a in v.split()]
        mdwe = "1" if self._yes("MemoryDenyWriteExecute") else "0"
        umask = svc.get("UMask", ["0022"])[-1]
        return (["unshare", "--mount", "--propagation", "private", self.ns_script,
                 "sh", "-c", f'umask {umask} && exec "$@"', "umask",
                 "prlimit"] + limits + ["--", "env", "-i"] + env + priv +
                ["--", self.helper, self.allow_file, str(errnum), ",".join(afs) or "0", mdwe] +
                cmd)


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
    roots = ["/etc/redoubt", LOG_DIR, RUN_DIR, "/etc/systemd/system/redoubt.service.d",
             "/usr/share/doc/redoubt", "/etc/systemd/system/multi-user.target.wants/redoubt.service"]
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
        deb_dir = os.path.join(TOP, "packaging", "debian")
        units = sorted(glob.glob(os.path.join(deb_dir, "*.service")))
        dropins = sorted(glob.glob(os.path.join(deb_dir, "examples", "systemd", "*.conf")))
        cases = [(u, None) for u in units] + [(u, d) for u in units for d in dropins]
        for unit, dropin in cases:
            name = os.path.basename(unit)
            root = tempfile.mkdtemp(prefix="sa-root.", dir=self.work)
            os.makedirs(os.path.join(root, "lib/systemd/system"))
            shutil.copy(unit, os.path.join(root, "lib/systemd/system", name))
            label = name
            if dropin:
                d = os.path.join(root, "etc/systemd/system", name + ".d")
                os.makedirs(d)
                shutil.copy(dropin, d)
                label += f" + {os.path.basename(dropin)}"
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
            UNIT_PATH: (0o644, "root:root"),
            "/etc/logrotate.d/redoubt": (0o644, "root:root"),
            "/usr/lib/tmpfiles.d/redoubt.conf": (0o644, "root:root"),
            "/usr/share/man/man8/redoubt.8.gz": (0o644, "root:root"),
            "/usr/share/man/man5/redoubt.conf.5.gz": (0o644, "root:root"),
            "/usr/share/doc/redoubt/README.Debian": (0o644, "root:root"),
            "/usr/share/doc/redoubt/copyright": (0o644, "root:root"),
            "/usr/share/doc/redoubt/examples/systemd/tpm.conf": (0o644, "root:root"),
            "/usr/share/doc/redoubt/examples/systemd/ip-allow.conf": (0o644, "root:root"),
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
        res = run(["systemd-analyze", "verify", UNIT_PATH])
        check(res.returncode == 0 and not res.stderr.strip(), "systemd-analyze verify: clean",
              res.stderr)
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
        step("configure and run ExecCondition / ExecStartPre / ExecStart as systemd would")
        unit = parse_unit(UNIT_PATH)
        helper = self.build_helper()
        ux = UnitExec(unit, self.work, helper)
        svc = unit["Service"]
        res = run(ux.argv("/bin/true"))
        harness = check(res.returncode == 0, "the systemd emulation runs a command",
                        res.stdout + res.stderr)
        # ExecCondition on the packaged example: skip (exit 1..254), not fail.
        for cond in svc.get("ExecCondition", []) if harness else []:
            res = run(ux.argv(cond))
            check(res.returncode == 1 and not res.stderr.strip(),
                  f"ExecCondition skips the unconfigured example (exit {res.returncode})",
                  res.stderr)
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
workers = 2

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
        for cond in svc.get("ExecCondition", []):
            res = run(ux.argv(cond))
            check(res.returncode == 0, "ExecCondition lets the configured unit start",
                  f"exit {res.returncode}")
        for pre in svc.get("ExecStartPre", []):
            res = run(ux.argv(pre))
            if not check(res.returncode == 0, f"ExecStartPre ({unit_argv(pre)[1][1]}) passes "
                         "in the sandbox", (res.stdout + res.stderr)[-1500:]):
                return
        log_path = os.path.join(self.work, "serve.log")
        log = open(log_path, "w")
        start = unit_argv(svc["ExecStart"][-1])[1]
        print(f"   ExecStart: {' '.join(start)}")
        serve = subprocess.Popen(ux.argv(svc["ExecStart"][-1]), stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(("redoubt serve", serve))
        ready = wait_for(lambda: serve.poll() is not None or port_open(port), READY_TIMEOUT_S)
        if not check(ready and serve.poll() is None, f"redoubt serve listens on 127.0.0.1:{port}",
                     f"exit {serve.poll()}; log:\n{tail(log_path)}"):
            return
        self.check_processes(serve.pid)
        tls = ["--tls", "--cacert", f"{TLS_DIR}/ca.crt", "--cert", f"{TLS_DIR}/client.crt",
               "--key", f"{TLS_DIR}/client.key", "-h", "127.0.0.1", "-p", str(port)]
        res = run(["redis-cli"] + tls + ["PING"], timeout=30)
        check(res.stdout.strip() == "PONG", "redis-cli --tls PING through redoubt: PONG",
              res.stdout + res.stderr + tail(log_path))
        res = run(["redis-cli"] + tls + ["SET", "pkgtest", "through-the-package"], timeout=30)
        direct = run(["redis-cli", "-s", sock, "GET", "pkgtest"], timeout=30)
        check(direct.stdout.strip() == "through-the-package",
              "a SET through TLS reached the redis-server", res.stdout + direct.stdout)
        bad = run(["redis-cli", "--tls", "--cacert", f"{TLS_DIR}/ca.crt", "-h", "127.0.0.1",
                   "-p", str(port), "PING"], timeout=30)
        check(bad.stdout.strip() != "PONG", "a client without a certificate is refused",
              bad.stdout)
        self.check_audit(serve.pid)
        for reload in svc.get("ExecReload", []):
            res = run(ux.argv(reload), timeout=60)
            check(res.returncode == 0, f"ExecReload ({' '.join(unit_argv(reload)[1])}) succeeds",
                  (res.stdout + res.stderr).strip())
        res = run(["redis-cli"] + tls + ["PING"], timeout=30)
        check(res.stdout.strip() == "PONG", "still serving after the reload", res.stderr)
        # systemctl stop with KillMode=mixed: SIGTERM to the main process.
        serve.send_signal(signal.SIGTERM)
        try:
            rc = serve.wait(timeout=int(svc.get("TimeoutStopSec", ["90"])[-1]))
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "SIGTERM stops the service with exit 0", f"exit {rc}; {tail(log_path)}")
        time.sleep(0.2)
        left = children_of(serve.pid)
        check(not left, "no process of the service is left", str(left))
        print("   serve log (last lines):")
        print("\n".join("      " + x for x in tail(log_path, 12).splitlines()))

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

    def check_processes(self, pid):
        status = proc_status(pid)
        check(status.get("Uid", "").split()[:1] == ["0"], "supervisor runs as root")
        caps = int(status.get("CapBnd", "0"), 16)
        allowed = 0
        # NET_BIND_SERVICE, SETGID, SETUID, SETPCAP, KILL, AUDIT_READ (naming seccomp kills)
        for c in (10, 6, 7, 8, 5, 37):
            allowed |= 1 << c
        check(caps & ~allowed == 0, "supervisor bounding set within the unit's six "
              f"capabilities ({hex(caps)})", hex(caps))
        check(status.get("NoNewPrivs") == "1", "supervisor has NoNewPrivs")
        check(status.get("Seccomp") == "2", "supervisor runs under the unit's seccomp filter")
        kids = children_of(pid)
        users = sorted(pwd.getpwuid(int(proc_status(k).get("Uid", "0").split()[0])).pw_name
                       for k in kids)
        check(users.count("redoubt-keyd") == 1 and users.count("redoubt") == 2,
              "children: keyd as redoubt-keyd, 2 workers as redoubt", str(users))
        for k in kids:
            st = proc_status(k)
            check(int(st.get("CapBnd", "1"), 16) == 0 and st.get("NoNewPrivs") == "1" and
                  int(st.get("CapEff", "1"), 16) == 0,
                  f"child {k} ({st.get('Name')}): no capabilities, NoNewPrivs",
                  f"CapBnd {st.get('CapBnd')} CapEff {st.get('CapEff')}")

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
        # (systemctl kill --kill-whom=main -s USR1): SIGUSR1 to the main process.
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
        res = run(["dpkg", "-P", PKG])
        print("\n".join("   " + x for x in (res.stdout + res.stderr).strip().splitlines()))
        check(res.returncode == 0, "dpkg -P", res.stderr)
        after_p = snapshot(self.pkg_paths)
        d = diff(self.before, after_p)
        print("   differences to the state before the test:")
        print("\n".join("      " + x for x in d) or "      (none)")
        check(not os.path.exists(CONF), "purge: the configuration is gone")
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
    def cleanup(self):
        step("clean up")
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
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
