"""`redoubt cert dev`: the files it writes, their modes, and that real TLS peers accept them.

The handshakes use openssl(1) on both sides (s_server with mandatory client certificates,
s_client verifying the server's name), bound to 127.0.0.1 on a free port, stopped by pid.
Binary: $REDOUBT_BIN, default build/redoubt under the repository root.
"""
import collections
import contextlib
import datetime
import os
import re
import selectors
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("REDOUBT_BIN", str(REPO / "build" / "redoubt"))
OPENSSL = shutil.which("openssl")

FILES = ("ca.crt", "ca.key", "node.crt", "node.key", "client.crt", "client.key")
KEY_TYPES = ("p256", "p384", "rsa2048")
EXIT_USAGE = 64
RUN_TIMEOUT = 120       # seconds for one `cert dev` run (RSA key generation is the slow part)
TLS_TIMEOUT = 20        # seconds for one s_client run
SERVER_START = 10       # seconds for s_server to print ACCEPT
HTTP_GET = b"GET / HTTP/1.0\r\n\r\n"

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


def cert_dev(*args, umask=None):
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"redoubt binary {BIN} missing: run `make` or set REDOUBT_BIN")
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([BIN, "cert", *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, preexec_fn=pre)


def make(d, *args, **kw):
    r = cert_dev("dev", "--dir", str(d), *args, **kw)
    assert r.returncode == 0, r.stderr
    return r


def openssl(*args, check=True):
    r = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=TLS_TIMEOUT)
    if check:
        assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


def x509(path, *opts):
    return openssl("x509", "-in", str(path), "-noout", *opts).stdout


def cert_time(path, which):
    """notBefore / notAfter as an aware datetime ("-startdate" prints notBefore=...)."""
    out = x509(path, "-startdate" if which == "start" else "-enddate").strip()
    value = out.split("=", 1)[1]
    return datetime.datetime.strptime(value, "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=datetime.timezone.utc)


def san(path):
    out = x509(path, "-ext", "subjectAltName")
    return [s.strip() for s in out.splitlines()[1].split(",")]


Certs = collections.namedtuple("Certs", "kind dir")


@pytest.fixture(scope="module", params=KEY_TYPES)
def certs(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"certs-{request.param}") / "tls"
    make(d, "--key-type", request.param)
    return Certs(request.param, d)


# --- files, modes, output --------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_modes_ignore_umask(tmp_path, mask):
    d = tmp_path / "a" / "b"
    make(d, umask=mask)
    assert sorted(os.listdir(d)) == sorted(FILES)
    for p in (tmp_path / "a", d):
        assert stat.S_IMODE(p.stat().st_mode) == 0o755, p
    for f in FILES:
        mode = stat.S_IMODE((d / f).stat().st_mode)
        assert mode == (0o600 if f.endswith(".key") else 0o644), f"{f}: {oct(mode)}"


def test_reports_files_and_warns(tmp_path):
    r = make(tmp_path)
    for f in FILES:
        assert f"{tmp_path}/{f}" in r.stdout
    assert "DEVELOPMENT" in r.stderr and "production" in r.stderr
    assert f"{tmp_path}/ca.key" in r.stderr


def test_refuses_to_overwrite(tmp_path):
    make(tmp_path)
    before = {f: (tmp_path / f).read_bytes() for f in FILES}
    r = cert_dev("dev", "--dir", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path}/ca.key" in r.stderr and "--force" in r.stderr
    assert {f: (tmp_path / f).read_bytes() for f in FILES} == before


def test_refuses_if_only_one_file_exists(tmp_path):
    (tmp_path / "client.key").write_text("mine\n")
    r = cert_dev("dev", "--dir", str(tmp_path))
    assert r.returncode == 1 and "client.key" in r.stderr
    assert os.listdir(tmp_path) == ["client.key"]
    assert (tmp_path / "client.key").read_text() == "mine\n"


def test_force_replaces_and_resets_modes(tmp_path):
    make(tmp_path)
    old_ca = (tmp_path / "ca.crt").read_bytes()
    os.chmod(tmp_path / "node.key", 0o644)
    target = tmp_path / "elsewhere"
    (tmp_path / "client.key").unlink()
    (tmp_path / "client.key").symlink_to(target)
    make(tmp_path, "--force")
    assert (tmp_path / "ca.crt").read_bytes() != old_ca
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    assert not (tmp_path / "client.key").is_symlink() and not target.exists()
    openssl("verify", "-CAfile", str(tmp_path / "ca.crt"),
            str(tmp_path / "node.crt"), str(tmp_path / "client.crt"))


def test_write_failure_leaves_nothing_behind(tmp_path):
    (tmp_path / "node.crt").mkdir()     # --force cannot remove a directory
    r = cert_dev("dev", "--dir", str(tmp_path), "--force")
    assert r.returncode == 1 and f"{tmp_path}/node.crt" in r.stderr
    assert os.listdir(tmp_path) == ["node.crt"]


def test_dir_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    r = cert_dev("dev", "--dir", str(tmp_path / "f"))
    assert r.returncode == 1 and str(tmp_path / "f") in r.stderr


# --- usage errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [],
    ["prod", "--dir", "{d}"],
    ["dev"],
    ["dev", "--dir"],
    ["dev", "--dir", "{d}", "--key-type", "ed25519"],
    ["dev", "--dir", "{d}", "--key-type", "rsa1024"],
    ["dev", "--dir", "{d}", "--days", "0"],
    ["dev", "--dir", "{d}", "--days", "3651"],
    ["dev", "--dir", "{d}", "--days", "7d"],
    ["dev", "--dir", "{d}", "--name", "a.test,DNS:evil.test"],
    ["dev", "--dir", "{d}", "--name", "10.0.0.256"],
    ["dev", "--dir", "{d}", "--name", "x" * 65],
    ["dev", "--dir", "{d}", "--client-name", "two words"],
    ["dev", "--dir", "{d}", "--force=yes"],
    ["dev", "--dir", "{d}", "--bogus"],
    ["dev", "--dir", "{d}", "stray"],
])
def test_usage_errors(tmp_path, args):
    d = tmp_path / "out"
    r = cert_dev(*[a.format(d=d) for a in args])
    assert r.returncode == EXIT_USAGE, r.stderr
    assert r.stderr.strip()
    assert not d.exists()


def test_help():
    r = cert_dev("dev", "--help")
    assert r.returncode == 0 and "--key-type" in r.stdout


# --- certificate contents --------------------------------------------------------------------

def test_ca(certs):
    ca = certs.dir / "ca.crt"
    text = x509(ca, "-text")
    assert "CA:TRUE" in text
    assert re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign", text)
    assert re.search(r"Basic Constraints: critical", text)
    assert "Subject Key Identifier" in text
    # The CA is P-256 whatever --key-type said.
    assert "NIST CURVE: P-256" in text
    assert re.search(r"subject=CN = redoubt development CA [0-9a-f]{16}$",
                     x509(ca, "-subject").strip())


def test_node(certs):
    node = certs.dir / "node.crt"
    text = x509(node, "-text")
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "Authority Key Identifier" in text
    rsa = certs.kind.startswith("rsa")
    ku = "Digital Signature, Key Encipherment" if rsa else "Digital Signature\n"
    assert re.search(r"Key Usage: critical\s+" + ku, text), text
    assert "ecdsa-with-SHA256" in text
    assert san(node) == ["DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"]
    assert x509(node, "-subject").strip() == "subject=CN = localhost"
    serial = x509(node, "-serial").strip().split("=")[1]
    assert len(serial) == 32, serial        # 128 bits, top bits fixed so never shorter


def test_client(certs):
    client = certs.dir / "client.crt"
    text = x509(client, "-text")
    assert "TLS Web Client Authentication" in text
    assert "Server Authentication" not in text
    assert san(client) == ["DNS:client"]
    assert x509(client, "-subject").strip() == "subject=CN = client"


def test_key_types(certs):
    bits = certs.kind.lstrip("prsa")
    for f in ("node.key", "client.key"):
        text = openssl("pkey", "-in", str(certs.dir / f), "-noout", "-text").stdout
        assert f"Private-Key: ({bits} bit" in text, text.splitlines()[0]
        if certs.kind.startswith("p"):
            assert f"NIST CURVE: P-{bits}" in text


def test_names_and_lifetime(tmp_path):
    make(tmp_path, "--name", "redis.test", "--name", "10.9.8.7", "--name", "::2",
         "--name", "redis.test", "--client-name", "app.test", "--days", "10")
    node, client = tmp_path / "node.crt", tmp_path / "client.crt"
    assert san(node) == ["DNS:redis.test", "IP Address:10.9.8.7",
                         "IP Address:0:0:0:0:0:0:0:2"]
    assert x509(node, "-subject").strip() == "subject=CN = redis.test"
    assert san(client) == ["DNS:app.test"]
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    minute = datetime.timedelta(minutes=1)
    for leaf in (node, client):
        start = cert_time(leaf, "start")
        assert now - 6 * minute < start < now - 4 * minute     # 5 minutes of clock skew
        assert abs(cert_time(leaf, "end") - (now + 10 * day)) < 2 * minute
    assert abs(cert_time(tmp_path / "ca.crt", "end") - (now + 20 * day)) < 2 * minute


def test_two_runs_make_different_cas(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make(a)
    make(b)
    assert x509(a / "ca.crt", "-subject") != x509(b / "ca.crt", "-subject")
    assert x509(a / "ca.crt", "-fingerprint") != x509(b / "ca.crt", "-fingerprint")
    r = openssl("verify", "-CAfile", str(b / "ca.crt"), str(a / "node.crt"), check=False)
    assert r.returncode != 0


# --- verification with openssl ---------------------------------------------------------------

def test_verify(certs):
    ca, node, client = (str(certs.dir / f) for f in ("ca.crt", "node.crt", "client.crt"))
    openssl("verify", "-CAfile", ca, node, client)
    openssl("verify", "-CAfile", ca, "-purpose", "sslserver", node)
    openssl("verify", "-CAfile", ca, "-purpose", "sslclient", node, client)
    openssl("verify", "-CAfile", ca, "-verify_hostname", "localhost", node)
    openssl("verify", "-CAfile", ca, "-verify_ip", "127.0.0.1", node)
    openssl("verify", "-CAfile", ca, "-verify_ip", "::1", node)
    assert openssl("verify", "-CAfile", ca, "-purpose", "sslserver", client,
                   check=False).returncode != 0
    assert openssl("verify", "-CAfile", ca, "-verify_hostname", "other.test", node,
                   check=False).returncode != 0


# --- real handshakes -------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_accept(proc):
    """True once s_server prints ACCEPT, False if it exits or SERVER_START passes."""
    deadline = time.monotonic() + SERVER_START
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return False
            buf += chunk
            if b"ACCEPT" in buf:
                return True
    return False


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def s_server(d):
    """s_server with d's node certificate, requiring a client certificate from d's CA."""
    for _ in range(3):      # the free port may be taken between probe and bind
        port = free_port()
        proc = subprocess.Popen(
            [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}",
             "-cert", str(d / "node.crt"), "-key", str(d / "node.key"),
             "-CAfile", str(d / "ca.crt"), "-Verify", "1", "-verify_return_error", "-www"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            if wait_for_accept(proc):
                yield port
                return
        finally:
            stop(proc)
            proc.stdout.close()
    pytest.fail("s_server did not start")


def s_client(port, d, *extra, cert=True, ca=None):
    args = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}",
            "-CAfile", str(ca or d / "ca.crt"), "-verify_return_error", "-ign_eof", *extra]
    if cert:
        args += ["-cert", str(d / "client.crt"), "-key", str(d / "client.key")]
    return subprocess.run(args, input=HTTP_GET, capture_output=True, timeout=TLS_TIMEOUT)


def assert_mutual_tls(r):
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out
    # s_server -www answers only after verifying our certificate, and shows it back.
    assert "HTTP/1.0 200 ok" in out
    assert "Client certificate" in out and "Subject: CN=client" in out


@pytest.mark.parametrize("verify", [["-verify_hostname", "localhost"],
                                    ["-verify_ip", "127.0.0.1"]])
def test_handshake(certs, verify):
    with s_server(certs.dir) as port:
        assert_mutual_tls(s_client(port, certs.dir, *verify))


def test_handshake_tls12(certs):
    # For RSA, plain RSA key exchange: exercises keyEncipherment on the node certificate.
    rsa = certs.kind.startswith("rsa")
    cipher = "AES128-GCM-SHA256" if rsa else "ECDHE-ECDSA-AES128-GCM-SHA256"
    with s_server(certs.dir) as port:
        r = s_client(port, certs.dir, "-tls1_2", "-cipher", cipher, "-verify_hostname", "localhost")
        assert_mutual_tls(r)
        assert cipher in r.stdout.decode(errors="replace")


def test_handshake_rejects(certs, tmp_path):
    other = tmp_path / "other"
    make(other)
    d = certs.dir
    with s_server(d) as port:
        # Wrong name, a different dev CA, no client certificate, another CA's client.
        assert s_client(port, d, "-verify_hostname", "other.test").returncode != 0
        assert s_client(port, d, ca=other / "ca.crt").returncode != 0
        assert s_client(port, d, cert=False).returncode != 0
        assert s_client(port, other, ca=d / "ca.crt").returncode != 0
