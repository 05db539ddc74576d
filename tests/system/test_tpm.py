"""TPM 2.0 keys (issue 8): `redoubt tpm create-key`, `key = tpm:BLOB`, signing on keyd's TPM
thread, and a stopped TPM that must not stall software-key handshakes on the same keyd.

The TPM is swtpm (Debian `swtpm`), started by this module on loopback ports and stopped by pid.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from helpers import certs as certs_mod
from helpers import memscan, tlsclient
from helpers.procs import free_port, pid_alive, run, stop_pid
from helpers.servers import Redoubt, RedisServer, new_workdir
from helpers.stack import build_config

SWTPM = shutil.which("swtpm")
START_TIMEOUT = 10.0          # s for swtpm to accept connections

pytestmark = pytest.mark.skipif(SWTPM is None, reason="swtpm not installed (apt-get install swtpm)")


def _port_pair():
    """A command port P whose P+1 (control) is free too: keyd's sandbox allows P and P+1."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


class Swtpm:
    def __init__(self, dir):
        self.dir = dir
        self.state = os.path.join(dir, "state")
        os.makedirs(self.state, exist_ok=True)
        self.port = _port_pair()
        self.tcti = f"swtpm:host=127.0.0.1,port={self.port}"
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "swtpm.log"), "wb")
        self.proc = subprocess.Popen(
            [SWTPM, "socket", "--tpm2",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
             "--tpmstate", f"dir={self.state}", "--flags", "not-need-init,startup-clear"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert self.proc.poll() is None, "swtpm exited at start"
                time.sleep(0.05)
        raise TimeoutError("swtpm did not accept connections")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            stop_pid(self.proc, term_timeout=5)


@pytest.fixture(scope="module")
def tpm(env):
    t = Swtpm(new_workdir(env.root, prefix="swtpm-"))
    t.start()
    yield t
    t.stop()


def _sign_csr(certs, csr, out_crt, cn):
    ext = out_crt + ".ext"
    with open(ext, "w") as f:
        f.write("basicConstraints = CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth, clientAuth\n"
                f"subjectAltName = DNS:localhost,IP:127.0.0.1,DNS:{cn}\n")
    certs_mod._openssl("x509", "-req", "-in", csr, "-CA", certs.ca_crt, "-CAkey", certs.ca_key,
                       "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
                       "-sha256", "-extfile", ext, "-out", out_crt)
    os.chmod(out_crt, 0o644)


def create_tpm_identity(env, tpm, dir, key_type, name):
    """redoubt tpm create-key + CSR, signed by the test CA.  Returns (crt, blob)."""
    blob = os.path.join(dir, f"{name}.tpmkey")
    csr = os.path.join(dir, f"{name}.csr")
    res = run([env.bin, "tpm", "create-key", "--out", blob, "--type", key_type, "--tcti",
               tpm.tcti, "--csr", csr, "--subject", f"/CN={name}.tpm.test",
               "--san", "DNS:localhost,IP:127.0.0.1"], timeout=60)
    assert res.returncode == 0, res.stderr
    certs_mod.keyd_readable(blob)
    crt = os.path.join(dir, f"{name}.crt")
    _sign_csr(env.certs("p256"), csr, crt, f"{name}.tpm.test")
    pub = run([env.bin, "tpm", "public", blob], timeout=30)
    assert pub.returncode == 0 and "BEGIN PUBLIC KEY" in pub.stdout, pub.stderr
    crt_pub = run(["openssl", "x509", "-in", crt, "-noout", "-pubkey"], timeout=30)
    assert crt_pub.stdout.strip() == pub.stdout.strip()
    return crt, blob


class TpmStack:
    """redis-server + redoubt with a software identity on `port` (also the readiness probe)
    and, optionally, a TPM identity on `tpm_port`."""

    def __init__(self, env, tpm, crt, blob, with_software=True, keyd_timeout="1s",
                 global_extra=None):
        self.env = env
        self.certs = env.certs("p256")
        self.dir = new_workdir(env.root, prefix="tpmstack-")
        self.redis = RedisServer(self.dir)
        self.port = free_port()
        self.tpm_port = free_port()
        backend = f"unix:{self.redis.sock}"
        glob = {"tpm-tcti": tpm.tcti, **(global_extra or {})}
        if with_software:
            text = build_config(self.dir, self.certs, backend, self.port, global_extra=glob,
                                keyd_timeout=keyd_timeout)
            text += (f"\n[identity tpmnode]\ncert = {crt}\nkey = tpm:{blob}\n"
                     f"ca = {self.certs.ca_crt}\n\n[listener tpmclients]\n"
                     f"listen = 127.0.0.1:{self.tpm_port}\nbackend = {backend}\n"
                     "identity = tpmnode\ntls-mode = require\n")
            probe_port = self.port
        else:
            text = build_config(self.dir, self.certs, backend, self.tpm_port, global_extra=glob,
                                keyd_timeout=keyd_timeout,
                                identity_extra={"cert": crt, "key": f"tpm:{blob}"})
            probe_port = self.tpm_port
        ctx = tlsclient.client_context(self.certs.ca_crt)
        self.redoubt = Redoubt(env.bin, self.dir, text, probe_port, probe_ctx=ctx)

    def __enter__(self):
        try:
            self.redis.start()
            self.redoubt.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *a):
        try:
            self.redoubt.stop()
        finally:
            self.redis.stop()

    def handshake(self, port, timeout=5.0):
        ctx = tlsclient.client_context(self.certs.ca_crt)
        s = tlsclient.tls_connect(port, ctx, timeout=timeout)
        s.close()


def _s_client(ca, port, *args):
    return run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca,
                "-verify_return_error", "-servername", "localhost", *args],
               input="", timeout=30)


@pytest.mark.parametrize("key_type,sigtype", [("p256", "ECDSA"), ("p384", "ECDSA"),
                                              ("rsa2048", "RSA-PSS")])
def test_tpm_key_serves_tls(env, tpm, key_type, sigtype):
    d = new_workdir(env.root, prefix=f"tpmkey-{key_type}-")
    crt, blob = create_tpm_identity(env, tpm, d, key_type, f"node-{key_type}")
    with TpmStack(env, tpm, crt, blob, with_software=False) as st:
        ca = st.certs.ca_crt
        res = run(["redis-cli", "--tls", "--cacert", ca, "-h", "127.0.0.1", "-p",
                   str(st.tpm_port), "PING"], timeout=30)
        assert res.stdout.strip() == "PONG", res.stderr
        for version in ("-tls1_3", "-tls1_2"):
            res = _s_client(ca, st.tpm_port, version)
            assert "Verify return code: 0 (ok)" in res.stdout, res.stdout + res.stderr
            assert f"Peer signature type: {sigtype}" in res.stdout, res.stdout
        # keyd holds no private key at all: its only identity is in the TPM.
        pid = st.redoubt.keyd_pid()
        assert pid
        found = memscan.scan(pid, {
            "PEM private key": b"PRIVATE KEY-----",
            "PKCS#8 header": bytes.fromhex("020100300d06092a864886f70d0101010500"),
            "P-256 ECPrivateKey": bytes.fromhex("30770201010420"),
        })
        assert not found.found, found.found
        log = st.redoubt.log_tail()
        # Started after the sandbox, so Landlock confines the signer thread too: no thread
        # existed when keyd entered it (keyd warns when one does).
        assert "signer thread started inside the sandbox" in log, log
        assert "threads already run" not in log, log


def test_stopped_tpm_does_not_stall_software_keys(env, tpm):
    d = new_workdir(env.root, prefix="tpmkey-stall-")
    crt, blob = create_tpm_identity(env, tpm, d, "p256", "node-stall")
    with TpmStack(env, tpm, crt, blob, with_software=True) as st:
        st.handshake(st.tpm_port)
        st.handshake(st.port)
        os.kill(tpm.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises((ssl_error(), OSError)):
                st.handshake(st.tpm_port, timeout=5.0)
            assert time.monotonic() - t0 < 4.0, "a stopped TPM must fail handshakes fast"
            # Software-key handshakes on the same keyd keep working, and quickly, while
            # more TPM handshakes pile up behind the stopped TPM.
            for _ in range(10):
                t1 = time.monotonic()
                st.handshake(st.port, timeout=3.0)
                assert time.monotonic() - t1 < 1.0
            with pytest.raises((ssl_error(), OSError)):
                st.handshake(st.tpm_port, timeout=5.0)
            log = st.redoubt.log_tail()
            assert "TPM did not answer" in log, log
            audit = open(os.path.join(st.dir, "audit", "audit.jsonl")).read()
            assert "TPM did not answer" in audit
            deadline = time.monotonic() + 5
            while True:
                status = run([env.bin, "status", "-c", st.redoubt.conf, "--json"], timeout=30)
                assert status.returncode == 0, status.stderr
                if json.loads(status.stdout)["tpm"]["timeouts"] >= 2:
                    break
                assert time.monotonic() < deadline, status.stdout
                time.sleep(0.1)
        finally:
            os.kill(tpm.proc.pid, signal.SIGCONT)
        # The TPM is back: TPM handshakes work again without a restart.
        deadline = time.monotonic() + 10
        while True:
            try:
                st.handshake(st.tpm_port)
                break
            except (ssl_error(), OSError):
                assert time.monotonic() < deadline, "TPM handshakes did not recover"
                time.sleep(0.2)
        assert pid_alive(st.redoubt.keyd_pid())


def test_tpm_key_in_fips_mode(env, tpm):
    """keyd in FIPS mode signs with a TPM key (ESYS's own crypto runs on the FIPS provider)."""
    conf = os.path.join(os.environ.get("REDOUBT_FIPS_CACHE", "/var/cache/redoubt-test/fips"),
                        "openssl-fips.cnf")
    if not os.path.exists(conf):
        pytest.skip("no FIPS provider built (tests/fips/build-fips-provider.sh; test_fips.py)")
    d = new_workdir(env.root, prefix="tpmkey-fips-")
    crt, blob = create_tpm_identity(env, tpm, d, "rsa2048", "node-fips")
    with TpmStack(env, tpm, crt, blob, with_software=False,
                  global_extra={"fips": "yes", "fips-config": conf}) as st:
        res = _s_client(st.certs.ca_crt, st.tpm_port, "-tls1_3", "-groups", "P-256")
        assert "Verify return code: 0 (ok)" in res.stdout, res.stdout + res.stderr
        assert "Peer signature type: RSA-PSS" in res.stdout, res.stdout
        status = json.loads(run([env.bin, "status", "-c", st.redoubt.conf, "--json"],
                                timeout=30).stdout)
        assert status["fips"]["active"] and status["tpm"]["signs"] >= 1, status


def test_full_tpm_queue_answers_busy(env, tpm):
    """More TPM requests than the queue holds while the TPM is stopped: the excess is refused
    at once (busy, audited), nothing waits for the TPM, and software keys keep working."""
    import concurrent.futures
    d = new_workdir(env.root, prefix="tpmkey-busy-")
    crt, blob = create_tpm_identity(env, tpm, d, "p256", "node-busy")
    with TpmStack(env, tpm, crt, blob, with_software=True, keyd_timeout="3s") as st:
        st.handshake(st.tpm_port)
        os.kill(tpm.proc.pid, signal.SIGSTOP)
        try:
            def attempt(_):
                try:
                    st.handshake(st.tpm_port, timeout=10.0)
                    return "ok"
                except (ssl_error(), OSError):
                    return "failed"
            with concurrent.futures.ThreadPoolExecutor(max_workers=48) as pool:
                results = list(pool.map(attempt, range(48)))
            assert "ok" not in results, results
            st.handshake(st.port, timeout=3.0)
            log = st.redoubt.log_tail()
            assert "TPM queue full" in log, log
            audit = open(os.path.join(st.dir, "audit", "audit.jsonl")).read()
            assert "TPM queue full" in audit
        finally:
            os.kill(tpm.proc.pid, signal.SIGCONT)


def ssl_error():
    import ssl
    return ssl.SSLError


def test_rotation_to_new_tpm_blob(env, tpm):
    d = new_workdir(env.root, prefix="tpmkey-rot-")
    crt, blob = create_tpm_identity(env, tpm, d, "p256", "node-rot")
    with TpmStack(env, tpm, crt, blob, with_software=False) as st:
        st.handshake(st.tpm_port)
        d2 = new_workdir(env.root, prefix="tpmkey-rot2-")
        crt2, blob2 = create_tpm_identity(env, tpm, d2, "p256", "node-rot2")
        # A blob that does not match the certificate is refused; the running one stays.
        shutil.copy(blob2, blob + ".new")
        certs_mod.keyd_readable(blob + ".new")
        os.rename(blob + ".new", blob)
        conf_arg = ["-c", st.redoubt.conf]
        res = run([env.bin, "rotate", *conf_arg], timeout=30)
        assert res.returncode != 0, res.stdout
        assert "does not match" in res.stdout + res.stderr
        st.handshake(st.tpm_port)
        # Certificate and blob together: rotated, served from the TPM.
        shutil.copy(crt2, crt + ".new")
        os.rename(crt + ".new", crt)
        res = run([env.bin, "rotate", *conf_arg], timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        ctx = tlsclient.client_context(st.certs.ca_crt)
        s = tlsclient.tls_connect(st.tpm_port, ctx)
        try:
            cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
        finally:
            s.close()
        assert cn == "node-rot2.tpm.test"


def test_tpm_unreachable_refuses_to_start(env, workdir):
    d = new_workdir(env.root, prefix="tpmkey-none-")
    blob = os.path.join(d, "x.tpmkey")
    # A syntactically valid blob is not needed to see the TCTI error: keyd reads the blob
    # first, so make one with a live TPM, then point the config at a dead port.
    t = Swtpm(new_workdir(env.root, prefix="swtpm-short-"))
    t.start()
    try:
        crt, blob = create_tpm_identity(env, t, d, "p256", "node-none")
    finally:
        t.stop()
    certs = env.certs("p256")
    text = build_config(workdir, certs, "127.0.0.1:1", free_port(),
                        global_extra={"tpm-tcti": f"swtpm:host=127.0.0.1,port={t.port}"},
                        identity_extra={"cert": crt, "key": f"tpm:{blob}"})
    conf = os.path.join(workdir, "r.conf")
    with open(conf, "w") as f:
        f.write(text)
    p = subprocess.Popen([env.bin, "serve", "-c", conf], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, process_group=0)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stop_pid(p)
        raise
    assert p.returncode != 0
    assert b"TPM" in out and b"TCTI" in out, out
