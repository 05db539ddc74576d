"""`redoubt check-config -c FILE`: 0 for a valid file; 78 and a precise message otherwise."""
import datetime
import os
import socket

import pytest

from helpers import certs as certs_mod
from helpers.procs import free_port
from helpers.servers import check_config
from helpers.stack import build_config

EX_CONFIG = 78


class Conf:
    """A valid configuration we can break one line at a time, knowing the line numbers."""

    def __init__(self, env, workdir, certs, port=None):
        self.env = env
        self.dir = workdir
        self.certs = certs
        self.port = port or free_port()
        self.lines = build_config(workdir, certs, f"unix:{workdir}/redis.sock",
                                  self.port).splitlines()
        self.path = os.path.join(workdir, "redoubt.conf")

    def header(self, section):
        return self.lines.index(f"[{section}]")

    def set(self, section, key, value):
        """Set key in section (replacing it if present); returns the 1-based line number."""
        start = self.header(section)
        i = start + 1
        while i < len(self.lines) and not self.lines[i].startswith("["):
            if self.lines[i].split("=")[0].strip() == key:
                self.lines[i] = f"{key} = {value}"
                return i + 1
            i += 1
        self.lines.insert(start + 1, f"{key} = {value}")
        return start + 2

    def drop(self, section, key):
        start = self.header(section)
        for i in range(start + 1, len(self.lines)):
            if self.lines[i].startswith("["):
                break
            if self.lines[i].split("=")[0].strip() == key:
                del self.lines[i]
                return
        raise KeyError(key)

    def check(self, env=None):
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        res = check_config(self.env.bin, self.path, env=env)
        res.output = res.stdout + res.stderr
        return res


@pytest.fixture
def conf(env, workdir):
    return Conf(env, workdir, env.certs("p256"))


def _env_without_passphrase():
    e = dict(os.environ)
    e.pop("REDOUBT_KEY_PASSPHRASE", None)
    return e


def assert_refused(res, *needles):
    assert res.returncode == EX_CONFIG, (
        f"check-config exited {res.returncode}, expected {EX_CONFIG}:\n{res.output}")
    low = res.output.lower()
    for n in needles:
        assert n.lower() in low, f"{n!r} missing from the message:\n{res.output}"


def test_valid_config_passes(conf):
    res = conf.check()
    assert res.returncode == 0, res.output


@pytest.mark.parametrize("section,key", [
    ("global", "frobnicate"),
    ("global", "worker"),                 # near miss of 'workers'
    ("identity node", "certificate"),
    ("listener clients", "tls-modee"),
])
def test_unknown_key(conf, section, key):
    line = conf.set(section, key, "yes")
    assert_refused(conf.check(), f"{conf.path}:{line}:", key)


@pytest.mark.parametrize("section,key,value", [
    ("global", "workers", "0"),
    ("global", "workers", "lots"),
    ("global", "workers", "65"),
    ("global", "keyd-timeout", "5x"),
    ("global", "keyd-timeout", "5ms"),             # below 10ms
    ("global", "log-level", "loud"),
    ("global", "secure-heap", "3M"),               # not a power of two
    ("global", "tls-protocol-min", "TLSv1.1"),
    ("global", "audit-fail-closed", "maybe"),
    ("listener clients", "tls-mode", "strict"),
    ("listener clients", "listen", "127.0.0.1:99999"),
    ("listener clients", "listen", "127.0.0.1"),
    ("listener clients", "backend", "10.1.2.3:6379"),   # backends must be loopback
    ("listener clients", "backend", "unix:relative/redis.sock"),
], ids=lambda v: str(v).replace(" ", "_"))
def test_bad_value(conf, section, key, value):
    line = conf.set(section, key, value)
    res = conf.check()
    assert_refused(res, f"{conf.path}:{line}:")
    assert key in res.output or value in res.output, res.output


def test_missing_required_key_reported_at_section_header(conf):
    conf.drop("listener clients", "backend")
    line = conf.header("listener clients") + 1
    assert_refused(conf.check(), f"{conf.path}:{line}:", "backend")


def test_undefined_identity(conf):
    line = conf.set("listener clients", "identity", "nosuchidentity")
    assert_refused(conf.check(), f"{conf.path}:{line}:", "nosuchidentity")


def test_verify_full_without_allow(conf):
    conf.set("listener clients", "tls-mode", "verify-full")
    assert_refused(conf.check(), "allow")


def test_passphrase_in_config_refused(conf):
    line = conf.set("identity node", "key-passphrase", "hunter2")
    res = conf.check()
    assert_refused(res, f"{conf.path}:{line}:")
    assert "hunter2" not in res.output, "the secret was echoed back"


@pytest.mark.parametrize("key", ["cert", "key", "ca"])
def test_missing_file(conf, key):
    missing = os.path.join(conf.dir, f"no-such-{key}.pem")
    conf.set("identity node", key, missing)
    assert_refused(conf.check(), missing, "no such file")


def test_key_does_not_match_cert(conf):
    other = certs_mod.gen_key(os.path.join(conf.dir, "other.key"), "p256")
    conf.set("identity node", "key", other)
    assert_refused(conf.check(), "match", other)


def test_key_of_other_type_does_not_match_cert(conf):
    other = certs_mod.gen_key(os.path.join(conf.dir, "other-rsa.key"), "rsa2048")
    conf.set("identity node", "key", other)
    assert_refused(conf.check(), "match", other)


def _encrypted(conf, right="correct horse battery", given=None):
    enc = certs_mod.encrypt_key(conf.certs.node_key, os.path.join(conf.dir, "node-enc.key"),
                                right)
    pw = os.path.join(conf.dir, "passphrase")
    with open(pw, "w") as f:
        f.write((given if given is not None else right) + "\n")
    certs_mod.keyd_readable(pw)
    conf.set("identity node", "key", enc)
    conf.set("identity node", "key-passphrase-file", pw)
    return enc


def test_encrypted_key_right_passphrase_passes(conf):
    _encrypted(conf)
    res = conf.check(env=_env_without_passphrase())
    assert res.returncode == 0, res.output


def test_encrypted_key_wrong_passphrase(conf):
    enc = _encrypted(conf, given="Tr0ub4dor-given")
    res = conf.check(env=_env_without_passphrase())
    assert_refused(res, "passphrase", enc)
    assert "Tr0ub4dor" not in res.output, "the passphrase itself appears in the message"


def test_encrypted_key_without_passphrase(conf):
    enc = _encrypted(conf)
    conf.drop("identity node", "key-passphrase-file")
    assert_refused(conf.check(env=_env_without_passphrase()), "passphrase", enc)


def test_expired_certificate(conf):
    now = datetime.datetime.now(datetime.timezone.utc)
    crt, _ = conf.certs.ca.issue(
        os.path.join(conf.dir, "expired"), "node-expired", "localhost",
        ["DNS:localhost", "IP:127.0.0.1"], key=conf.certs.node_key, server=True,
        not_before=now - datetime.timedelta(days=400), not_after=now - datetime.timedelta(days=35))
    conf.set("identity node", "cert", crt)
    assert_refused(conf.check(), "expired", crt)


def test_port_in_use(env, workdir):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        c = Conf(env, workdir, env.certs("p256"), port=port)
        assert_refused(c.check(), str(port), "in use")
    # Once the port is free again the same file passes.
    res = c.check()
    assert res.returncode == 0, res.output
