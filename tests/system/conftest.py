"""Fixtures for redoubt's system tests: real redis-server, real `redoubt serve`, real clients.

Run as root: `make test` (REDOUBT_BIN = a build with test hooks) or
    REDOUBT_BIN=$PWD/build/redoubt /usr/bin/python3 -m pytest -q tests/system
A missing REDOUBT_BIN is an error, never a skip: CI must be red without the binary.
Set REDOUBT_TEST_KEEP=1 to keep the session's /tmp directory (it is kept anyway on failure).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import certs as certs_mod  # noqa: E402
from helpers import servers  # noqa: E402
from helpers.stack import Stack  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SYSTEM_USERS = ("redoubt", "redoubt-keyd")


def _redoubt_bin():
    return os.environ.get("REDOUBT_BIN") or os.path.join(REPO, "build", "redoubt")


class SessionEnv:
    """What every test shares: the binary, a world-searchable /tmp root, cached certificates."""

    def __init__(self, bin, root):
        self.bin = bin
        self.root = root
        self._certs = {}
        self._other_ca = None
        self._lock = threading.Lock()

    def certs(self, key_type="p256"):
        with self._lock:
            if key_type not in self._certs:
                self._certs[key_type] = certs_mod.make_dev_certs(
                    self.bin, os.path.join(self.root, f"certs-{key_type}"), key_type)
            return self._certs[key_type]

    def other_ca(self):
        with self._lock:
            if self._other_ca is None:
                self._other_ca = certs_mod.CA.create(os.path.join(self.root, "other-ca"),
                                                     "unrelated CA")
            return self._other_ca

    def other_ca_issue(self, name, cn, sans):
        ca = self.other_ca()
        crt = os.path.join(ca.dir, "issued", f"{name}.crt")
        if os.path.exists(crt):
            return crt, os.path.join(ca.dir, "issued", f"{name}.key")
        return ca.issue(os.path.join(ca.dir, "issued"), name, cn, sans)


def _ensure_users():
    for name in SYSTEM_USERS:
        if subprocess.run(["id", "-u", name], capture_output=True, timeout=10).returncode != 0:
            res = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                  "/usr/sbin/nologin", name],
                                 capture_output=True, text=True, timeout=30)
            if res.returncode != 0 and "already exists" not in res.stderr:
                pytest.fail(f"cannot create user {name}: {res.stderr}")


_session_failed = False


@pytest.fixture(scope="session")
def env():
    if os.geteuid() != 0:
        pytest.fail("the system tests run as root (they start redoubt serve and create users)")
    bin = _redoubt_bin()
    if not (os.path.isfile(bin) and os.access(bin, os.X_OK)):
        pytest.fail(f"REDOUBT_BIN={bin!r} is not an executable file; build it first "
                    f"(make TEST_HOOKS=1 BUILD=build-hooks build-hooks/redoubt)")
    _ensure_users()
    root = tempfile.mkdtemp(prefix="redoubt-sys-", dir="/tmp")
    os.chmod(root, 0o755)
    yield SessionEnv(os.path.abspath(bin), root)
    # Safety net: nothing we started outlives the session.
    for inst in reversed(servers.REGISTRY):
        if inst.proc is not None and inst.proc.poll() is None:
            inst.stop()
    if _session_failed or os.environ.get("REDOUBT_TEST_KEEP") == "1":
        sys.stderr.write(f"\nredoubt system tests: kept {root}\n")
    else:
        shutil.rmtree(root, ignore_errors=True)


class _StackPool:
    def __init__(self, env):
        self.env = env
        self.stacks = []

    def __call__(self, **kw):
        st = Stack(self.env, **kw)
        self.stacks.append(st)
        return st.start()

    def close(self):
        errors = []
        for st in reversed(self.stacks):
            try:
                st.stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def make_stack(env):
    """make_stack(key_type=, tls_mode=, allow=, listener_extra=, global_extra=, ...) -> Stack,
    started (redis-server + redoubt ready); stopped at the end of the test."""
    pool = _StackPool(env)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def make_module_stack(env):
    """Like make_stack, but the stacks live until the end of the module."""
    pool = _StackPool(env)
    yield pool
    pool.close()


@pytest.fixture
def stack(make_stack):
    """The plain case: P-256, tls-mode require, 2 workers."""
    return make_stack()


@pytest.fixture
def workdir(env):
    return servers.new_workdir(env.root, prefix="w-")


# --- attach the logs of every server that was up during a failed test ----------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._redoubt_t0 = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    global _session_failed
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    _session_failed = True
    t0 = getattr(item, "_redoubt_t0", 0)
    for inst in servers.REGISTRY:
        if inst.relevant_since(t0):
            rep.sections.append((inst.name, inst.log_tail()))
