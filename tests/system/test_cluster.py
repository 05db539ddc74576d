"""A Redis Cluster whose client traffic, replication and cluster bus all cross the network
encrypted: 3 primaries + 3 replicas, each node a host (network namespace) with its own
redis-server and redoubt, plus a client host.  No node's configuration names another node.

Per node (10.250.73.k):
    redis-server  127.0.0.1:6379, bus 127.0.0.1:16379, announcing 10.250.73.k:6380@16380
    redoubt       [listener clients] 10.250.73.k:6380  -> 127.0.0.1:6379
                  [listener bus]     10.250.73.k:16380 -> 127.0.0.1:16379
                  [connector bus]     127.0.0.1:16390, transparent, ALPN redis-bus
                  [connector clients] 127.0.0.1:16391, transparent, ALPN redis-repl
    `redoubt cluster-redirect` sends the local redis-server's connections to port 16380 (bus
    links) and 6380 (a replica's link to its primary) to those connectors, which dial the
    original destination with TLS and verify it by its IP SAN.
"""
import os
import random
import re
import time

import pytest

import netns
from helpers.procs import wait_until

SUBNET = 73
N_NODES = 6
N_KEYS = 10_000
SHUFFLED = 300          # keys written in random slot order: many MOVED redirections
CRC16_TABLE = []


def _crc16_table():
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        CRC16_TABLE.append(crc & 0xffff)


_crc16_table()


def key_slot(key):
    k = key.encode()
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1:e]
    crc = 0
    for b in k:
        crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ b) & 0xff]
    return crc % 16384


@pytest.fixture(scope="module")
def cluster(env):
    lab = netns.Lab(env.root, "c", SUBNET).start()
    try:
        pki = netns.Pki(env.root, "cluster")
        nodes = [lab.add_host(f"n{i}") for i in range(1, N_NODES + 1)]
        client = lab.add_host("cl")
        ccrt, ckey = pki.client()
        lab.pki, lab.nodes, lab.client = pki, nodes, client
        lab.client_files = (ccrt, ckey)
        lab.cli_tls = ["--tls", "--cacert", pki.ca_crt, "--cert", ccrt, "--key", ckey]
        ctx = netns.client_ctx(pki.ca_crt, ccrt, ckey)
        nodes_allow = f"dns:*.{netns.NODE_DOMAIN}"
        lab.redis, lab.redoubt = {}, {}
        for h in nodes:
            crt, key = pki.node(h.name, h.ip)
            red = netns.NsRedis(h, extra=[
                "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-port 16379",
                "cluster-node-timeout 2000", f"cluster-announce-ip {h.ip}",
                "cluster-announce-port 6380", "cluster-announce-bus-port 16380",
                "cluster-replica-validity-factor 0", "repl-backlog-size 16mb"]).start()
            conf = netns.config_text([
                netns.global_section(h, workers=1),
                netns.identity_section("node", crt, key, ca=pki.ca_crt),
                ("listener clients", {
                    "listen": f"{h.ip}:6380", "backend": "127.0.0.1:6379", "identity": "node",
                    "tls-mode": "verify-full", "allow": [nodes_allow, f"dns:{netns.CLIENT_NAME}"]}),
                ("listener bus", {
                    "listen": f"{h.ip}:16380", "backend": "127.0.0.1:16379", "identity": "node",
                    "tls-mode": "verify-full", "allow": nodes_allow, "alpn": "redis-bus"}),
                ("connector bus", {
                    "listen": "127.0.0.1:16390", "transparent": "yes", "identity": "node",
                    "alpn": "redis-bus", "expect": nodes_allow}),
                ("connector clients", {
                    "listen": "127.0.0.1:16391", "transparent": "yes", "identity": "node",
                    "alpn": "redis-repl", "expect": nodes_allow}),
            ])
            rd = netns.NsRedoubt(env.bin, h, conf, workers=1, probe=(h.ip, 6380, ctx),
                                 probe_host=client).start()
            res = h.run([env.bin, "cluster-redirect", "-c", rd.conf], check=True)
            assert "16380 -> connector bus" in res.stdout, res.stdout
            assert "6380 -> connector clients" in res.stdout, res.stdout
            lab.redis[h.name], lab.redoubt[h.name] = red, rd
        lab.env = env
        yield lab
    finally:
        lab.close()


def _cli(lab, *args, input=None, timeout=120, entry=None):
    host = entry or lab.nodes[0]
    return lab.client.run(["redis-cli", *lab.cli_tls, "-h", host.ip, "-p", "6380", *args],
                          input=input, timeout=timeout)


def _cluster_info(red):
    text = red.cmd("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)


def _primaries(lab):
    """{host name: NsRedis} of the nodes that are primaries now (alive ones only)."""
    out = {}
    for name, red in lab.redis.items():
        if red.proc.poll() is None and red.info("replication")["role"] == "master":
            out[name] = red
    return out


def _wait_replicas_caught_up(lab):
    def ok():
        for red in lab.redis.values():
            if red.proc.poll() is not None:
                continue
            info = red.info("replication")
            if info["role"] != "slave":
                continue
            if info.get("master_link_status") != "up":
                return False
            primary_ip = info["master_host"]
            prim = next(r for n, r in lab.redis.items()
                        if lab.hosts[n].ip == primary_ip)
            if prim.info("replication")["master_repl_offset"] != info["slave_repl_offset"]:
                return False
        return True
    wait_until(ok, 60, interval=0.2, what="every replica to catch up with its primary")


def test_cluster_through_redoubt(cluster):
    lab = cluster
    marker = "N7CLUSTER" + os.urandom(8).hex().upper()
    cap = lab.capture("any", os.path.join(lab.root, f"cluster-{os.getpid()}.pcap"))
    t0 = time.monotonic()

    # Create the cluster through the TLS endpoints.
    addrs = [f"{h.ip}:6380" for h in lab.nodes]
    res = lab.client.run(["redis-cli", *lab.cli_tls, "--cluster", "create", *addrs,
                          "--cluster-replicas", "1", "--cluster-yes"], timeout=120)
    assert res.returncode == 0 and "[OK] All 16384 slots covered" in res.stdout, (
        f"cluster create failed:\n{res.stdout}\n{res.stderr}")

    def healthy():
        for red in lab.redis.values():
            info = _cluster_info(red)
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != "6":
                return False
        return len(_primaries(lab)) == 3
    wait_until(healthy, 60, interval=0.2, what="the cluster to be ok on every node")
    _wait_replicas_caught_up(lab)

    # Every node announces redoubt's TLS ports, so clients are sent to TLS endpoints.
    nodes_text = lab.redis["n1"].cmd("CLUSTER", "NODES").decode()
    for h in lab.nodes:
        assert f" {h.ip}:6380@16380" in nodes_text, nodes_text
    shards = _cli(lab, "CLUSTER", "SHARDS")
    assert shards.returncode == 0
    assert "16379" not in shards.stdout and "6379\n" not in shards.stdout, shards.stdout
    for h in lab.nodes:
        assert h.ip in shards.stdout

    # 10,000 keys through redis-cli -c --tls: the first ones in random slot order (a MOVED
    # almost every time), the rest grouped by slot.
    keys = [f"k:{marker}:{i}" for i in range(N_KEYS)]
    rng = random.Random(7)
    head, tail = keys[:SHUFFLED], sorted(keys[SHUFFLED:], key=key_slot)
    rng.shuffle(head)
    order = head + tail
    script = "".join(f"SET {k} {marker}={k}\n" for k in order)
    res = _cli(lab, "-c", input=script, timeout=300)
    assert res.returncode == 0, res.stderr
    redirects = res.stdout.count("-> Redirected to slot")
    assert res.stdout.count("OK") == N_KEYS, res.stdout[-2000:]
    assert redirects >= SHUFFLED // 3, f"only {redirects} MOVED redirections followed"
    assert re.search(r"-> Redirected to slot \[\d+\] located at 10\.250\.73\.\d+:6380",
                     res.stdout)
    counts = {n: r.cmd("DBSIZE") for n, r in _primaries(lab).items()}
    assert sum(counts.values()) == N_KEYS and all(c > 0 for c in counts.values()), counts

    # Pub/sub messages travel on the bus: one published on n1 reaches a subscriber on another
    # node (and its marker must not be readable on the wire).
    sub_node = next(n for n in lab.redis if n != "n1")
    ps = lab.redis[sub_node].direct().pubsub()
    ps.subscribe("n7-chan")
    wait_until(lambda: ps.get_message(timeout=0.1) is not None, 5, what="subscription")
    assert _cli(lab, "PUBLISH", "n7-chan", f"msg-{marker}").returncode == 0
    msg = wait_until(lambda: ps.get_message(timeout=0.2), 10, what="the published message")
    assert msg["data"] == f"msg-{marker}".encode()
    ps.close()

    # Kill the primary that serves slot 0: its replica must be promoted (failure detection
    # and the election run over the encrypted bus), and every key stays readable.
    _wait_replicas_caught_up(lab)
    victim = None
    for name, red in _primaries(lab).items():
        mine = [line for line in red.cmd("CLUSTER", "NODES").decode().splitlines()
                if "myself" in line][0]
        if any(s.split("-")[0] == "0" for s in mine.split()[8:]):
            victim = name
    assert victim is not None, "no primary serves slot 0"
    victim_id = lab.redis[victim].cmd("CLUSTER", "MYID").decode()
    replica = next(n for n, r in lab.redis.items()
                   if r.info("replication").get("role") == "slave" and
                   r.info("replication").get("master_host") == lab.hosts[victim].ip)
    lab.redis[victim].kill()
    t_kill = time.monotonic()
    wait_until(lambda: lab.redis[replica].info("replication")["role"] == "master", 60,
               interval=0.2, what=f"{replica} to be promoted after {victim} died")
    failover_s = time.monotonic() - t_kill
    survivors = [r for n, r in lab.redis.items() if n != victim]
    wait_until(lambda: all(_cluster_info(r).get("cluster_state") == "ok" for r in survivors),
               60, interval=0.2, what="the cluster to be ok again")
    assert "fail" in [line for line in lab.redis[replica].cmd("CLUSTER", "NODES").decode()
                      .splitlines() if line.startswith(victim_id)][0]

    entry = next(h for h in lab.nodes if h.name != victim)
    script = "".join(f"GET {k}\n" for k in sorted(keys, key=key_slot))
    res = _cli(lab, "-c", input=script, timeout=300, entry=entry)
    assert res.returncode == 0, res.stderr
    values = [line for line in res.stdout.splitlines() if not line.startswith("-> Redirected")]
    expected = [f"{marker}={k}" for k in sorted(keys, key=key_slot)]
    missing = [e for v, e in zip(values, expected) if v != e]
    assert len(values) == N_KEYS and not missing, (
        f"{len(missing)} keys unreadable after the failover, e.g. {missing[:3]}")

    # The wire between the hosts: client, replication and bus traffic, all TLS.
    cap.stop()
    summary = netns.check_capture(cap.path, marker.encode(), {6380, 16380},
                                  min_app_bytes=N_KEYS * 40)
    streams, _ = netns.read_pcap(cap.path)
    bus = [k for k in streams if 16380 in (k[1], k[3])]
    assert len(bus) >= 6 * 5, f"only {len(bus)} bus streams captured"
    print(f"cluster: failover in {failover_s:.1f}s, {redirects} MOVED followed, capture "
          f"{summary}, {len(bus)} bus streams, dropped {cap.dropped}, "
          f"total {time.monotonic() - t0:.1f}s")

    # The redirect can be inspected and removed.
    h = lab.nodes[0]
    assert h.run([lab.env.bin, "cluster-redirect", "--check"]).returncode == 0
    res = h.run([lab.env.bin, "cluster-redirect", "--remove"])
    assert res.returncode == 0 and "removed" in res.stdout, res.stdout + res.stderr
    assert h.run([lab.env.bin, "cluster-redirect", "--check"]).returncode == 1
