"""Encrypted replication across hosts: a primary and two replicas, each in its own network
namespace with its own redis-server and redoubt; the hosts talk only through redoubt.

    p  (10.250.71.1)  redis-server :6379 (loopback)  <-  redoubt listener 10.250.71.1:6380
    r1 (10.250.71.2)  redis-server replicaof 127.0.0.1:16380  ->  redoubt connector -> p:6380
    r2 (10.250.71.3)  the same

The primary's veth is captured for the whole test: the capture must hold TLS records and no
key or value in clear text (a marker that every key and value carries).  A capture on r1's
loopback, where replication is plaintext by design, shows that the marker search works.

The second test is about what a connector accepts: verify-full refuses a primary whose
certificate names another host, verify-ca accepts it, both refuse a self-signed one, and
expired, unknown-CA and revoked peers are refused with that reason in the log.  A peer that
keeps failing puts the connector into backoff; reconnects to a good peer resume the session.
"""
import os
import re
import signal
import socket
import time

import pytest

import netns
from helpers.procs import wait_until

KEYS_FULL = 100_000          # keys on the primary before the replicas attach
KEYS_STREAM = 10_000         # writes streamed to both replicas afterwards
KEYS_DURING_DROP = 1_000     # writes while a replica's link is down


def _marker():
    return "N7MARK" + os.urandom(8).hex().upper()


def _payload(prefix, marker, n, start=0):
    return b"".join(netns.resp_command("SET", f"{prefix}:{marker}:{i}", f"{marker}={i}")
                    for i in range(start, start + n))


def _digest(redis):
    return redis.cmd("DEBUG", "DIGEST")


@pytest.fixture(scope="module")
def repl(env):
    lab = netns.Lab(env.root, "r", 71).start()
    try:
        pki = netns.Pki(env.root, "repl")
        p, r1, r2 = lab.add_host("p"), lab.add_host("r1"), lab.add_host("r2")
        client_crt, client_key = pki.client()
        hosts = {}
        for h in (p, r1, r2):
            crt, key = pki.node(h.name, h.ip)
            hosts[h.name] = (crt, key)
        # The primary: rdbcompression off, so that a plaintext RDB would show the marker.
        lab.primary = netns.NsRedis(p, extra=[
            "repl-backlog-size 64mb", "rdbcompression no", "repl-diskless-sync no",
            "repl-diskless-sync-delay 0"]).start()
        conf = netns.config_text([
            netns.global_section(p, workers=2),
            netns.identity_section("node", *hosts["p"], ca=pki.ca_crt),
            ("listener repl", {
                "listen": f"{p.ip}:6380", "backend": "127.0.0.1:6379", "identity": "node",
                "tls-mode": "verify-full", "alpn": "redis redis-repl",
                "allow": [f"dns:{netns.CLIENT_NAME}", f"dns:*.{netns.NODE_DOMAIN}"],
                "route-allow": f"redis-repl dns:*.{netns.NODE_DOMAIN}"}),
        ])
        probe_ctx = netns.client_ctx(pki.ca_crt, client_crt, client_key)
        lab.p_redoubt = netns.NsRedoubt(env.bin, p, conf, workers=2,
                                        probe=(p.ip, 6380, probe_ctx), probe_host=r1).start()
        lab.replicas, lab.r_redoubts = [], []
        for h in (r1, r2):
            red = netns.NsRedis(h, extra=["repl-diskless-load disabled"]).start()
            conf = netns.config_text([
                netns.global_section(h, workers=1),
                netns.identity_section("node", *hosts[h.name], ca=pki.ca_crt),
                ("connector primary", {
                    "listen": "127.0.0.1:16380", "connect": f"{p.ip}:6380", "identity": "node",
                    "tls-mode": "verify-full", "alpn": "redis-repl",
                    "expect": f"dns:p.{netns.NODE_DOMAIN}"}),
            ])
            lab.replicas.append(red)
            lab.r_redoubts.append(netns.NsRedoubt(env.bin, h, conf, workers=1).start())
        lab.pki = pki
        yield lab
    finally:
        lab.close()


def test_primary_two_replicas_encrypted(repl):
    lab = repl
    primary, (rep1, rep2) = lab.primary, lab.replicas
    p, r1 = lab.hosts["p"], lab.hosts["r1"]
    marker = _marker()
    wire = lab.capture(p.veth, os.path.join(p.dir, "primary-veth.pcap"))

    # 100,000 keys, then replica 1 by a disk-based full sync.
    t0 = time.monotonic()
    assert netns.pipe_into(primary.sock, _payload("full", marker, KEYS_FULL)) == KEYS_FULL
    assert primary.cmd("DBSIZE") == KEYS_FULL
    rep1.cmd("REPLICAOF", "127.0.0.1", "16380")
    netns.wait_link_up(rep1, 60)
    assert "target: disk" in primary.log(), "replica 1 was not synced from an RDB file"

    # Replica 2 by a diskless full sync.
    primary.cmd("CONFIG", "SET", "repl-diskless-sync", "yes")
    rep2.cmd("REPLICAOF", "127.0.0.1", "16380")
    netns.wait_link_up(rep2, 60)
    assert "target: replicas sockets" in primary.log(), "replica 2 was not synced diskless"
    stats = primary.info("stats")
    assert stats["sync_full"] == 2, stats

    # The command stream; r1's loopback (plaintext by design) shows that the search works.
    lo = lab.capture("lo", os.path.join(r1.dir, "r1-lo.pcap"), ns=r1.ns, bpf="tcp port 16380")
    assert netns.pipe_into(primary.sock, _payload("stream", marker, KEYS_STREAM)) == KEYS_STREAM
    netns.wait_caught_up(primary, [rep1, rep2])
    lo.stop()
    _, lo_raw = netns.read_pcap(lo.path)
    assert marker.encode() in lo_raw, "the positive control (plaintext loopback) lacks the marker"
    d = _digest(primary)
    assert _digest(rep1) == d and _digest(rep2) == d
    assert rep1.cmd("DBSIZE") == KEYS_FULL + KEYS_STREAM

    # Drop r1's link: kill its redoubt worker (the supervisor starts a new one).  The replica
    # keeps running and must continue with PSYNC, not resync.
    before = primary.info("stats")
    r1_redoubt = lab.r_redoubts[0]
    for pid in r1_redoubt.worker_pids():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: primary.info("stats")["sync_partial_ok"] > before["sync_partial_ok"], 30,
               interval=0.1, what="r1 to continue with a partial resync after the link drop")
    netns.pipe_into(primary.sock, _payload("drop1", marker, KEYS_DURING_DROP))
    netns.wait_link_up(rep1, 30, what="r1's link after its worker was killed")

    # Drop r2's link for longer: stop its whole redoubt, write, start it again.
    r2_redoubt = lab.r_redoubts[1]
    r2_redoubt.stop()
    wait_until(lambda: not netns.link_up(rep2), 15, interval=0.05, what="r2's link to drop")
    netns.pipe_into(primary.sock, _payload("drop2", marker, KEYS_DURING_DROP))
    r2_redoubt.start()
    netns.wait_link_up(rep2, 30, what="r2 to reconnect after its redoubt restarted")

    netns.wait_caught_up(primary, [rep1, rep2])
    after = primary.info("stats")
    assert after["sync_full"] == before["sync_full"], (
        f"a link drop caused a full resync: {before} -> {after}")
    assert after["sync_partial_ok"] >= before["sync_partial_ok"] + 2, (
        f"expected two partial resyncs: {before} -> {after}")
    for red in (rep1, rep2):
        assert "Successful partial resynchronization" in red.log()
    d = _digest(primary)
    assert _digest(rep1) == d and _digest(rep2) == d
    assert primary.cmd("DBSIZE") == KEYS_FULL + KEYS_STREAM + 2 * KEYS_DURING_DROP

    # The wire: TLS records only, at least the two full syncs' worth of application data.
    wire.stop()
    summary = netns.check_capture(wire.path, marker.encode(), {6380},
                                  min_app_bytes=2 * KEYS_FULL * 30)
    assert time.monotonic() - t0 < 240, "the replication test took too long"
    print(f"primary veth capture: {summary}, dropped by kernel: {wire.dropped}")


# --- what a connector accepts -----------------------------------------------------------------

VERIFY_CASES = {
    # connector name: (local port, remote port, tls-mode)
    "full-good": (16380, 6380, "verify-full"),
    "full-wronghost": (16381, 6381, "verify-full"),
    "ca-wronghost": (16382, 6381, "verify-ca"),
    "full-selfsigned": (16383, 6382, "verify-full"),
    "ca-selfsigned": (16384, 6382, "verify-ca"),
    "full-expired": (16385, 7001, "verify-full"),
    "full-unknownca": (16386, 7002, "verify-full"),
    "full-revoked": (16387, 7003, "verify-full"),
}


@pytest.fixture(scope="module")
def verify_lab(env):
    lab = netns.Lab(env.root, "v", 72).start()
    try:
        pki = netns.Pki(env.root, "verify")
        p, r = lab.add_host("p"), lab.add_host("r")
        p_crt, p_key = pki.node("p", p.ip)
        r_crt, r_key = pki.node("r", r.ip)
        # A certificate of the right CA for another host, and a self-signed one for this host.
        wrong = pki.leaf("wronghost", f"other.{netns.NODE_DOMAIN}",
                         [f"DNS:other.{netns.NODE_DOMAIN}", "IP:10.250.72.99"])
        selfsigned = netns.self_signed(pki.issued, "selfsigned", f"p.{netns.NODE_DOMAIN}",
                                       [f"DNS:p.{netns.NODE_DOMAIN}", f"IP:{p.ip}"])
        # Right names, wrong otherwise: served by openssl s_server (keyd would refuse them).
        import datetime
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [f"DNS:p.{netns.NODE_DOMAIN}", f"IP:{p.ip}"]
        expired = pki.leaf("expired", f"p.{netns.NODE_DOMAIN}", sans,
                           not_before=now - datetime.timedelta(days=30),
                           not_after=now - datetime.timedelta(days=1))
        revoked = pki.leaf("revoked", f"p.{netns.NODE_DOMAIN}", sans)
        crl = pki.revoke(revoked[0])
        other_ca = netns.Pki(env.root, "verify-other")
        unknown = other_ca.leaf("unknownca", f"p.{netns.NODE_DOMAIN}", sans)

        lab.primary = netns.NsRedis(p).start()
        lab.primary.cmd("SET", "from-primary", "yes")
        conf = netns.config_text([
            netns.global_section(p),
            netns.identity_section("node", p_crt, p_key, ca=pki.ca_crt),
            netns.identity_section("wrong", *wrong, ca=pki.ca_crt),
            netns.identity_section("self", *selfsigned),
            ("listener good", {"listen": f"{p.ip}:6380", "backend": "127.0.0.1:6379",
                               "identity": "node", "tls-mode": "verify-ca"}),
            ("listener wronghost", {"listen": f"{p.ip}:6381", "backend": "127.0.0.1:6379",
                                    "identity": "wrong", "tls-mode": "require"}),
            ("listener selfsigned", {"listen": f"{p.ip}:6382", "backend": "127.0.0.1:6379",
                                     "identity": "self", "tls-mode": "require"}),
        ])
        ctx = netns.client_ctx(pki.ca_crt, r_crt, r_key)
        lab.p_redoubt = netns.NsRedoubt(env.bin, p, conf, probe=(p.ip, 6380, ctx),
                                        probe_host=r).start()
        for port, (crt, key) in ((7001, expired), (7002, unknown), (7003, revoked)):
            p.popen(["openssl", "s_server", "-quiet", "-accept", f"{p.ip}:{port}", "-cert", crt,
                     "-key", key, "-naccept", "1000"], f"s_server-{port}.log")
        sections = [netns.global_section(r),
                    netns.identity_section("node", r_crt, r_key, ca=pki.ca_crt, crl=crl)]
        for name, (lport, rport, mode) in VERIFY_CASES.items():
            sections.append((f"connector {name}", {
                "listen": f"127.0.0.1:{lport}", "connect": f"{p.ip}:{rport}",
                "identity": "node", "tls-mode": mode}))
        lab.replica = netns.NsRedis(r).start()
        lab.r_redoubt = netns.NsRedoubt(env.bin, r, netns.config_text(sections)).start()
        for port in (7001, 7002, 7003):
            wait_until(lambda port=port: r.connect(p.ip, port).close() or True, 10,
                       what=f"openssl s_server on :{port}")
        yield lab
    finally:
        lab.close()


def _refusal_logged(lab, connector, reason, offset=0):
    pat = re.compile(rf"worker \d+: {re.escape(connector)}: refused .*{re.escape(reason)}.*")
    return wait_until(lambda: pat.search(lab.r_redoubt.log()[offset:]), 10, interval=0.1,
                      what=f"connector {connector} to log a refusal with reason {reason!r}")


def _replicate_from(lab, connector):
    lport = VERIFY_CASES[connector][0]
    lab.replica.cmd("REPLICAOF", "127.0.0.1", str(lport))


def _stays_down(replica, seconds=3.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not netns.link_up(replica), "the replica synced through a refused connector"
        time.sleep(0.1)


def test_verify_full_and_verify_ca(verify_lab):
    lab = verify_lab
    rep = lab.replica

    _replicate_from(lab, "full-good")
    netns.wait_link_up(rep, 30)
    assert rep.cmd("GET", "from-primary") == b"yes"

    # Certificate for another host: verify-full refuses, saying so; verify-ca accepts.
    rep.cmd("REPLICAOF", "NO", "ONE")
    rep.cmd("FLUSHALL")
    _replicate_from(lab, "full-wronghost")
    _stays_down(rep)
    line = _refusal_logged(lab, "full-wronghost", "wrong host").group(0)
    assert "IP address mismatch" in line and "10.250.72.99" in line, line
    _replicate_from(lab, "ca-wronghost")
    netns.wait_link_up(rep, 30)
    assert rep.cmd("GET", "from-primary") == b"yes"

    # Self-signed primary: refused under verify-full and verify-ca.
    for name in ("full-selfsigned", "ca-selfsigned"):
        rep.cmd("REPLICAOF", "NO", "ONE")
        _replicate_from(lab, name)
        _stays_down(rep)
        _refusal_logged(lab, name, "self-signed")
    rep.cmd("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize("connector,reason", [
    ("full-expired", "expired"),
    ("full-unknownca", "unknown CA"),
    ("full-revoked", "revoked"),
])
def test_connector_refusal_reasons(verify_lab, connector, reason):
    lab = verify_lab
    r = lab.hosts["r"]
    lport = VERIFY_CASES[connector][0]
    s = r.connect("127.0.0.1", lport)
    s.sendall(b"PING\r\n")
    s.settimeout(10)
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    s.close()
    assert data == b"", f"{connector} relayed {data!r} from a peer it should refuse"
    _refusal_logged(lab, connector, reason)


def test_connector_backoff(verify_lab):
    """After repeated failures the connector closes local clients at once, logs it once, and
    dials again after the wait."""
    lab = verify_lab
    r = lab.hosts["r"]
    lport = VERIFY_CASES["full-expired"][0]
    offset = len(lab.r_redoubt.log())

    def attempt():
        t = time.monotonic()
        s = r.connect("127.0.0.1", lport)
        s.settimeout(10)
        try:
            s.recv(1)
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
        return time.monotonic() - t

    def refusals():
        return len(re.findall(r"full-expired: refused", lab.r_redoubt.log()[offset:]))

    # Failures in a row (the expired peer refuses every handshake) until the backoff starts.
    backoff = re.compile(r"connector full-expired: peer 10\.250\.72\.1:7001 failed \d+ times "
                         r"in a row .*closed at once")
    for _ in range(netns_backoff_after() + 1):
        if backoff.search(lab.r_redoubt.log()[offset:]):
            break
        attempt()
    assert backoff.search(lab.r_redoubt.log()[offset:]), lab.r_redoubt.log()[-3000:]
    # While a wait lasts, a local client is closed at once and nothing is dialled (no new
    # refusal).  Each failure after a wait doubles it, so a few tries land inside one.
    for _ in range(6):
        before = refusals()
        took = attempt()
        if refusals() == before:
            break
    else:
        pytest.fail("every local connection was dialled: no backoff\n" +
                    lab.r_redoubt.log()[-3000:])
    assert took < 1.0, f"a connection during the backoff took {took:.2f}s to be closed"
    assert len(backoff.findall(lab.r_redoubt.log()[offset:])) == 1, (
        "the backoff was logged more than once")
    # After the wait (at most CONNECTOR_BACKOFF_MAX_MS), the peer is dialled again.
    time.sleep(5.5)
    before = refusals()
    attempt()
    wait_until(lambda: refusals() > before, 5, what="a new attempt after the backoff wait")


def netns_backoff_after():
    """CONNECTOR_BACKOFF_AFTER in worker/connector.h."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "worker", "connector.h")) as f:
        return int(re.search(r"#define CONNECTOR_BACKOFF_AFTER\s+(\d+)", f.read()).group(1))


def _signatures(host, redoubt):
    import json
    res = host.run([redoubt.bin, "status", "--json", "-c", redoubt.conf])
    assert res.returncode == 0, res.stdout + res.stderr
    return sum(w.get("signatures", 0) for w in json.loads(res.stdout)["workers"])


def test_connector_resumes_sessions(verify_lab):
    """Reconnects through a connector resume the TLS session: no new signature on either side
    (a replica reconnecting after a link drop, a cluster bus link coming back)."""
    lab = verify_lab
    p, r = lab.hosts["p"], lab.hosts["r"]
    lport = VERIFY_CASES["full-good"][0]

    def ping():
        s = r.connect("127.0.0.1", lport)
        s.settimeout(10)
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
        s.close()

    ping()                                  # a session for the cache, whatever came before
    time.sleep(0.2)
    before = (_signatures(p, lab.p_redoubt), _signatures(r, lab.r_redoubt))
    for _ in range(5):
        ping()
    after = (_signatures(p, lab.p_redoubt), _signatures(r, lab.r_redoubt))
    assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1, (
        f"5 reconnects cost {after[0] - before[0]} signatures on the primary and "
        f"{after[1] - before[1]} on the replica: sessions were not resumed")
