"""Client traffic through redoubt: real clients (redis-cli, redis-py, openssl s_client) in front,
a real redis-server behind, for every key type and both TLS versions."""
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from helpers.procs import pid_alive, proc_uid, run, wait_until
from helpers.stack import Stack
from helpers.tlsclient import Resp

KEY_TYPES = ["p256", "p384", "rsa2048"]
VERSIONS = ["TLSv1.2", "TLSv1.3"]
S_CLIENT_FLAG = {"TLSv1.2": "-tls1_2", "TLSv1.3": "-tls1_3"}
# What `openssl s_client -brief` reports as "Signature type" for each key type.
PEER_SIG = {"p256": "ECDSA", "p384": "ECDSA", "rsa2048": "RSA-PSS"}


@pytest.fixture(scope="module", params=[(k, v) for k in KEY_TYPES for v in VERSIONS],
                ids=[f"{k}-{v}" for k in KEY_TYPES for v in VERSIONS])
def pinned(request, env):
    """A stack whose listener allows exactly one TLS version."""
    key_type, version = request.param
    st = Stack(env, key_type=key_type,
               listener_extra={"tls-protocol-min": version, "tls-protocol-max": version})
    st.version = version
    st.start()
    yield st
    st.stop()


def test_redis_cli_over_tls(pinned):
    key = f"cli:{pinned.key_type}:{pinned.version}"
    res = pinned.redis_cli("SET", key, "hello from redis-cli")
    assert res.returncode == 0 and res.stdout.strip() == "OK", res
    res = pinned.redis_cli("GET", key)
    assert res.returncode == 0 and res.stdout.strip() == "hello from redis-cli", res
    res = pinned.redis_cli("INCRBY", key + ":n", "41")
    assert res.stdout.strip() == "41", res
    # The bytes really reached the backend.
    assert pinned.direct().get(key) == b"hello from redis-cli"


def test_redis_py_over_tls_and_version(pinned):
    r = pinned.redis_py()
    try:
        assert r.ping() is True
        key = f"py:{pinned.key_type}:{pinned.version}"
        value = os.urandom(4096)
        assert r.set(key, value) is True
        assert r.get(key) == value
        sock = r.connection._sock
        assert sock.version() == pinned.version
        cipher = sock.cipher()[0]
        if pinned.version == "TLSv1.2":
            # The certificate type decides the TLS 1.2 suite: proof the right key signed.
            want = "ECDSA" if pinned.key_type.startswith("p") else "RSA"
            assert f"ECDHE-{want}-" in cipher, cipher
        else:
            assert cipher.startswith("TLS_"), cipher
    finally:
        r.close()
    assert pinned.direct().get(key) == value


def test_openssl_s_client_version_and_signature(pinned):
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{pinned.port}", "-servername",
            "localhost", "-CAfile", pinned.certs.ca_crt, "-verify_return_error", "-brief"]
    res = run(base + [S_CLIENT_FLAG[pinned.version]], input="", timeout=20)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"Protocol version: {pinned.version}" in out, out
    assert "Verification: OK" in out, out
    assert f"Signature type: {PEER_SIG[pinned.key_type]}" in out, out
    if pinned.key_type == "p384" and pinned.version == "TLSv1.3":
        assert "Hash used: SHA384" in out, out  # ecdsa_secp384r1_sha384
    # The other version is refused by this listener.
    other = "TLSv1.3" if pinned.version == "TLSv1.2" else "TLSv1.2"
    res = run(base + [S_CLIENT_FLAG[other]], input="", timeout=20)
    assert res.returncode != 0 and "Protocol version" not in res.stderr, res.stdout + res.stderr
    # Inline commands; -ign_eof keeps s_client reading until QUIT makes the server close.
    try:
        res = run(base + ["-ign_eof", S_CLIENT_FLAG[pinned.version]],
                  input="PING\r\nQUIT\r\n", timeout=10)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"s_client still connected 10 s after QUIT (redoubt did not close): "
                    f"stdout {exc.stdout!r} stderr {exc.stderr!r}")
    assert res.stdout.replace("\r", "").split("\n")[:2] == ["+PONG", "+OK"], res.stdout


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_client_chooses_version_on_default_listener(make_stack, key_type):
    st = make_stack(key_type=key_type)
    for version, kw in (("TLSv1.2", {"max_version": "TLSv1.2"}),
                        ("TLSv1.3", {"min_version": "TLSv1.3"})):
        r = st.resp(**kw)
        try:
            assert r.sock.version() == version
            assert r.command("PING") == "PONG"
        finally:
            r.sock.close()


def test_process_layout(stack):
    import pwd
    ch = stack.redoubt.children()
    assert len(ch["keyd"]) == 1, ch
    assert len(ch["workers"]) == 2, ch        # workers = 2 in the config
    assert not ch["other"], ch
    assert pwd.getpwuid(proc_uid(ch["keyd"][0])).pw_name == "redoubt-keyd"
    for pid in ch["workers"].values():
        assert pwd.getpwuid(proc_uid(pid)).pw_name == "redoubt"


def test_sigterm_stops_everything_with_status_0(stack):
    children = stack.redoubt.worker_pids() + [stack.redoubt.keyd_pid()]
    rc = stack.redoubt.stop()
    assert rc == 0, stack.redoubt.log_tail()
    for pid in children:
        assert not pid_alive(pid), f"child {pid} survived SIGTERM of serve"


def test_pipeline_10000_commands_redis_py(stack):
    r = stack.redis_py(socket_timeout=60)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"pl:{i}", f"value-{i}")
            pipe.get(f"pl:{i}")
        replies = pipe.execute()
    finally:
        r.close()
    assert len(replies) == 10000
    bad = [(i, rep) for i, rep in enumerate(replies)
           if rep != (True if i % 2 == 0 else f"value-{i // 2}".encode())]
    assert not bad, f"{len(bad)} wrong replies, first: {bad[:5]}"


def test_pipe_10000_commands_redis_cli(stack):
    payload = "".join(f"RPUSH pipelist item-{i}\r\n" for i in range(10000))
    res = stack.redis_cli("--pipe", input=payload, timeout=120)
    assert res.returncode == 0, res
    assert "errors: 0, replies: 10000" in res.stdout, res.stdout + res.stderr
    d = stack.direct()
    assert d.llen("pipelist") == 10000
    assert d.lindex("pipelist", 9999) == b"item-9999"


def test_64mib_value_byte_exact(stack):
    value = os.urandom(64 << 20)
    digest = hashlib.sha256(value).hexdigest()
    r = stack.redis_py(socket_timeout=120)
    try:
        assert r.set("big", value) is True
        got = r.get("big")
    finally:
        r.close()
    assert len(got) == len(value)
    assert hashlib.sha256(got).hexdigest() == digest
    d = stack.direct(socket_timeout=120)
    assert d.strlen("big") == 64 << 20
    assert hashlib.sha256(d.get("big")).hexdigest() == digest


def test_subscribe_receives_publish_within_100ms(stack):
    sub = stack.resp()
    pub = stack.redis_py()
    try:
        assert sub.command("SUBSCRIBE", "news") == [b"subscribe", b"news", 1]
        latencies = []
        for i in range(5):
            msg = f"m{i}".encode()
            t0 = time.monotonic()
            assert pub.publish("news", msg) == 1
            sub.sock.settimeout(2.0)
            assert sub.reply() == [b"message", b"news", msg]
            latencies.append(time.monotonic() - t0)
        assert max(latencies) < 0.100, f"publish->message latencies {latencies}"
    finally:
        sub.sock.close()
        pub.close()


def test_blpop_released_by_lpush(stack):
    blocked = stack.resp(timeout=15)
    result = {}

    def pop():
        try:
            result["reply"] = blocked.command("BLPOP", "queue", "10")
            result["t"] = time.monotonic()
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    th = threading.Thread(target=pop, daemon=True)
    th.start()
    wait_until(lambda: stack.redis.info("clients")["blocked_clients"] == 1, 5,
               what="the BLPOP to block in redis-server")
    pusher = stack.redis_py()
    try:
        t_push = time.monotonic()
        assert pusher.lpush("queue", "job-1") == 1
    finally:
        pusher.close()
    th.join(5)
    blocked.sock.close()
    assert not th.is_alive(), "BLPOP was not released within 5 s of LPUSH"
    assert "error" not in result, result
    assert result["reply"] == [b"queue", b"job-1"]
    assert result["t"] - t_push < 1.0


def test_quit_gets_every_byte_then_close_notify(stack):
    value = os.urandom(4 << 20)
    stack.direct().set("before-quit", value)
    r = stack.resp()
    # A large reply and QUIT in one write: the whole reply, +OK, then a clean TLS close.
    r.sock.sendall(Resp.encode("GET", "before-quit") + Resp.encode("QUIT"))
    data, how = r.read_to_eof(timeout=10)
    r.sock.close()
    expect = b"$%d\r\n%s\r\n+OK\r\n" % (len(value), value)
    assert len(data) == len(expect), f"got {len(data)} bytes, expected {len(expect)} ({how})"
    assert data == expect
    assert how == "close_notify", how


def test_plain_quit(stack):
    r = stack.resp()
    r.send("QUIT")
    data, how = r.read_to_eof(timeout=5)
    r.sock.close()
    assert data == b"+OK\r\n"
    assert how == "close_notify", how


def test_client_kill_closes_connection(stack):
    victim = stack.resp()
    killer = stack.redis_py()
    try:
        assert victim.command("SET", "k", "v") == "OK"
        cid = victim.command("CLIENT", "ID")
        assert isinstance(cid, int)
        t0 = time.monotonic()
        assert killer.execute_command("CLIENT", "KILL", "ID", cid) == 1
        data, how = victim.read_to_eof(timeout=5)
        elapsed = time.monotonic() - t0
        assert data == b""
        assert how == "close_notify", how
        assert elapsed < 1.0, f"EOF came {elapsed:.2f}s after CLIENT KILL"
        assert killer.ping() is True
    finally:
        victim.sock.close()
        killer.close()


def _backend_clients_settle(stack, want, timeout=5):
    return wait_until(lambda: stack.redis.connected_clients() == want, timeout,
                      what=f"connected_clients == {want} on the backend "
                           f"(now {stack.redis.connected_clients()})")


def test_disconnect_drops_backend_clients(stack):
    _backend_clients_settle(stack, 0)       # the readiness probes' connections are gone
    conns = [stack.resp() for _ in range(6)]
    for c in conns:
        assert c.command("PING") == "PONG"
    _backend_clients_settle(stack, 6)
    # Two close cleanly (close_notify), two drop TCP (FIN), two reset (RST).
    for c in conns[:2]:
        try:
            c.sock.unwrap()
        except (ssl.SSLError, OSError):
            pass        # whether redoubt answers our close_notify is not the question here
        c.sock.close()
    _backend_clients_settle(stack, 4)
    for c in conns[2:4]:
        c.sock.close()          # Python does not send close_notify on close(): a bare FIN
    _backend_clients_settle(stack, 2)
    for c in conns[4:]:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.close()
    _backend_clients_settle(stack, 0)


def test_plaintext_client_gets_err(stack):
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            pytest.fail(f"the server did not close a plaintext connection within 5 s ({data!r})")
    assert data.startswith(b"-ERR"), data
    assert data == b"-ERR this port requires TLS\r\n", data
    # The service is still fine for TLS clients.
    r = stack.resp()
    assert r.command("PING") == "PONG"
    r.sock.close()
