"""Shared by test_rotation, test_tickets, test_revocation and test_status (not a test module).

RotStack is a redis-server behind a redoubt whose identity files live in the stack's own
directory, so a test can replace them and rotate.  New certificates come from the session's
development CA (or any CA the test passes); every file is replaced atomically (write + rename),
as an operator's deployment tool would, unless a test wants a torn write.
"""
import datetime
import itertools
import json
import os
import shutil
import socket
import ssl
import threading
import time

from helpers import certs as certs_mod
from helpers import tlsclient
from helpers.procs import free_port, run, wait_until
from helpers.servers import Redoubt, RedisServer, new_workdir
from helpers.stack import build_config, client_cert

SERVER_SANS = ["DNS:localhost", "IP:127.0.0.1"]
ROTATE_TIMEOUT = 90          # seconds a `redoubt rotate|status` may take (keys load in keyd)
_names = itertools.count()


# --- certificates ------------------------------------------------------------------------------

def norm_serial(s):
    s = s.strip().upper()
    if s.startswith("SERIAL="):
        s = s[len("SERIAL="):]
    return s.lstrip("0") or "0"


def cert_serial(path):
    return norm_serial(certs_mod._openssl("x509", "-in", path, "-noout", "-serial"))


def cert_fingerprint(path):
    out = certs_mod._openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256")
    return out.strip().split("=", 1)[1].upper()


def install_file(src, dst, key=False):
    """Replace dst by a copy of src in one rename (readable by keyd when key)."""
    tmp = f"{dst}.tmp{next(_names)}"
    shutil.copyfile(src, tmp)
    if key:
        certs_mod.keyd_readable(tmp)
    else:
        certs_mod.world_readable(tmp)
    os.replace(tmp, dst)


def write_file(dst, data, key=False):
    tmp = f"{dst}.tmp{next(_names)}"
    with open(tmp, "wb") as f:
        f.write(data)
    if key:
        certs_mod.keyd_readable(tmp)
    else:
        certs_mod.world_readable(tmp)
    os.replace(tmp, dst)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


# --- CRLs (openssl ca, on the CA's own database) -------------------------------------------------

def ca_revoke(ca, crt):
    with certs_mod.CA._lock:
        certs_mod._openssl("ca", "-config", ca.cnf, "-cert", ca.crt, "-keyfile", ca.key,
                           "-revoke", crt)


def ca_crl(ca, out, days=30):
    """A fresh CRL of ca (everything revoked so far), written to out atomically."""
    tmp = f"{out}.gen{next(_names)}"
    with certs_mod.CA._lock:
        certs_mod._openssl("ca", "-config", ca.cnf, "-cert", ca.crt, "-keyfile", ca.key,
                           "-gencrl", "-crldays", str(days), "-out", tmp)
    certs_mod.world_readable(tmp)
    os.replace(tmp, out)
    return out


# --- a stack whose identity files we own ---------------------------------------------------------

class RotStack:
    """redis-server + redoubt; identity `node` reads self.crt / self.key (and extras)."""

    def __init__(self, env, *, workers=2, tls_mode="require", global_extra=None,
                 listener_extra=None, identity_extra=None, extra_config="", probe_client="app",
                 initial=None):
        self.env = env
        self.certs = env.certs("p256")
        self.dir = new_workdir(env.root, prefix="rot-")
        self.tlsdir = os.path.join(self.dir, "tls")
        os.mkdir(self.tlsdir)
        os.chmod(self.tlsdir, 0o755)
        self.crt = os.path.join(self.tlsdir, "node.crt")
        self.key = os.path.join(self.tlsdir, "node.key")
        crt, key = initial or self.issue("gen0")
        install_file(crt, self.crt)
        install_file(key, self.key, key=True)
        self.redis = RedisServer(self.dir)
        self.port = free_port()
        self.sock = os.path.join(self.dir, "run", "control.sock")
        ident = {"cert": self.crt, "key": self.key, "ca": self.certs.ca_crt}
        ident.update(identity_extra or {})
        self.tls_mode = tls_mode
        self.probe_client = probe_client if tls_mode != "require" else None
        config = build_config(self.dir, self.certs, f"unix:{self.redis.sock}", self.port,
                              workers=workers, tls_mode=tls_mode, listener_extra=listener_extra,
                              global_extra=global_extra, identity_extra=ident)
        # extra_config: more sections; a callable gets the stack (for its port, its files).
        self.config = config + (extra_config(self) if callable(extra_config) else extra_config)
        self.redoubt = Redoubt(env.bin, self.dir, self.config, self.port,
                               probe_ctx=self.ctx(self.probe_client), workers=workers)

    # lifecycle
    def start(self):
        self.redis.start()
        self.redoubt.start()
        return self

    def stop(self):
        try:
            self.redoubt.stop()
        finally:
            self.redis.stop()

    # certificates
    def issue(self, tag, ca=None, **kw):
        """A new server certificate for localhost: (crt, key).  ca: another CA (certs.CA)."""
        ca = ca or self.certs.ca
        name = f"{tag}-{next(_names)}-{os.getpid()}"
        kw.setdefault("server", True)
        return ca.issue(os.path.join(self.tlsdir, "issued"), name, "localhost", SERVER_SANS, **kw)

    def install(self, crt=None, key=None):
        if crt:
            install_file(crt, self.crt)
        if key:
            install_file(key, self.key, key=True)

    def install_new(self, tag="next"):
        crt, key = self.issue(tag)
        self.install(crt, key)
        return cert_serial(crt)

    # clients
    def ctx(self, client=None):
        crt = key = None
        if client is not None:
            crt, key = client if isinstance(client, tuple) else \
                client_cert(self.env, self.certs, client)
        return tlsclient.client_context(self.certs.ca_crt, crt, key)

    def tls(self, client="default", timeout=5.0, ctx=None, session=None):
        if client == "default":
            client = self.probe_client
        ctx = ctx or self.ctx(client)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s = ctx.wrap_socket(raw, server_hostname="localhost", session=session,
                                do_handshake_on_connect=False, suppress_ragged_eofs=False)
            s.settimeout(timeout)
            s.do_handshake()
            return s
        except BaseException:
            raw.close()
            raise

    def resp(self, client="default", timeout=5.0):
        return tlsclient.Resp(self.tls(client, timeout=timeout))

    def served_serial(self, client="default"):
        s = self.tls(client)
        try:
            return norm_serial(s.getpeercert()["serialNumber"])
        finally:
            s.close()

    # control socket
    def control(self, *args, timeout=ROTATE_TIMEOUT, user=None):
        cmd = [self.env.bin, *args, "--socket", self.sock]
        if user is not None:
            cmd = ["setpriv", *user, "--", *cmd]
        return run(cmd, timeout=timeout)

    def rotate(self, *flags):
        return self.control("rotate", *flags)

    def rotate_ok(self, *flags):
        res = self.rotate(*flags)
        assert res.returncode == 0, f"redoubt rotate failed: {res.stdout}\n{res.stderr}"
        return res

    def status(self):
        res = self.control("status", "--json")
        assert res.returncode == 0, f"redoubt status failed: {res.stdout}\n{res.stderr}"
        return json.loads(res.stdout)

    def identity(self, name="node"):
        for i in self.status()["identities"]:
            if i["name"] == name:
                return i
        raise AssertionError(f"no identity {name} in status")

    def active_generation(self):
        return self.identity()["active"]["generation"]

    def audit_records(self):
        path = os.path.join(self.dir, "audit", "audit.jsonl")
        out = []
        try:
            with open(path) as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def audit_events(self, name):
        return [r for r in self.audit_records()
                if name in (r.get("event"), r.get("type"), r.get("event_type"))]


def start_stack(env, **kw):
    return RotStack(env, **kw).start()


class StackPool:
    """Stacks started by a test (or module); stopped, by pid, at the end."""

    def __init__(self, env):
        self.env = env
        self.stacks = []

    def __call__(self, **kw):
        st = RotStack(self.env, **kw)
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


# --- connections ---------------------------------------------------------------------------------

def works(r, tag):
    """A SET/GET round trip on an open connection."""
    assert r.command("SET", f"w:{tag}", tag) == "OK"
    assert r.command("GET", f"w:{tag}") == tag.encode()


def closed_by_server(r, timeout=5.0):
    """True once the server has ended the connection (a PING then fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r.sock.settimeout(1.0)
            reply = r.command("PING")
            if reply != "PONG":
                return True
        except (OSError, EOFError, ssl.SSLError, tlsclient.ProtocolError):
            return True
        time.sleep(0.1)
    return False


class Load:
    """Clients doing SET/GET in a loop, each on a fresh connection every `per_conn` commands
    or `conn_seconds`, whichever comes first, from start() to stop().  Any error is a failed
    command.  (A connection that outlived two rotations would be ended by design: keep
    conn_seconds well below the time between rotations.)"""

    def __init__(self, stack, clients=4, per_conn=20, conn_seconds=0.3, client="default",
                 max_seconds=600):
        self.stack = stack
        self.clients = clients
        self.per_conn = per_conn
        self.conn_seconds = conn_seconds
        self.client = client
        self.max_seconds = max_seconds
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.threads = []

    def _run(self, tid):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            r = None
            try:
                r = self.stack.resp(self.client, timeout=10)
                until = time.monotonic() + self.conn_seconds
                for _ in range(self.per_conn):
                    if time.monotonic() > until:
                        break
                    key, val = f"load:{tid}:{n % 50}", f"{tid}-{n}"
                    n += 1
                    if r.command("SET", key, val) != "OK" or r.command("GET", key) != val.encode():
                        raise AssertionError(f"wrong reply for {key}")
                    with self.lock:
                        self.ok += 2
            except Exception as exc:  # noqa: BLE001 - every error is a failure to report
                with self.lock:
                    self.failures.append(f"client {tid} at {time.monotonic():.3f}: {exc!r}")
            finally:
                if r is not None:
                    try:
                        r.sock.close()
                    except OSError:
                        pass

    def start(self):
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        wait_until(lambda: self.ok > 0 or self.failures, 10, what="the load to start")
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a load client did not stop"
        return self.ok, list(self.failures)

