"""One TLS port per node for clients and the cluster bus, routed by ALPN.

Two cluster nodes (a, b) and a client host (c), each a network namespace.  Each node's redoubt
has one listener, 10.250.74.k:6380:
    alpn        = redis redis-bus redis-repl
    route       = redis-bus 127.0.0.1:16379      (the local redis-server's bus port)
    route-allow = redis-bus / redis-repl: node certificates only
    backend     = 127.0.0.1:6379                 (no ALPN, or redis, or redis-repl)
and one transparent connector offering ALPN redis-bus, to which `redoubt cluster-redirect`
sends the local redis-server's outbound connections to port 6380.  The nodes announce 6380 as
both their client and their bus port, so bus links and clients share the port.
"""
import os
import ssl

import pytest

import netns
from helpers.procs import wait_until

SUBNET = 74


@pytest.fixture(scope="module")
def alpn_lab(env):
    lab = netns.Lab(env.root, "a", SUBNET).start()
    try:
        pki = netns.Pki(env.root, "alpn")
        a, b, c = lab.add_host("a"), lab.add_host("b"), lab.add_host("c")
        lab.pki = pki
        lab.client_cert = pki.client()
        lab.node_cert_c = pki.node("c", c.ip)      # a node identity, for the positive case
        nodes = f"dns:*.{netns.NODE_DOMAIN}"
        ctx = netns.client_ctx(pki.ca_crt, *lab.client_cert)
        lab.redis, lab.redoubt = {}, {}
        for h in (a, b):
            crt, key = pki.node(h.name, h.ip)
            red = netns.NsRedis(h, extra=[
                "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-port 16379",
                "cluster-node-timeout 2000", f"cluster-announce-ip {h.ip}",
                "cluster-announce-port 6380", "cluster-announce-bus-port 6380"]).start()
            conf = netns.config_text([
                netns.global_section(h),
                netns.identity_section("node", crt, key, ca=pki.ca_crt),
                ("listener node", {
                    "listen": f"{h.ip}:6380", "backend": "127.0.0.1:6379", "identity": "node",
                    "tls-mode": "verify-full", "alpn": "redis redis-bus redis-repl",
                    "route": "redis-bus 127.0.0.1:16379",
                    "allow": [nodes, f"dns:{netns.CLIENT_NAME}"],
                    "route-allow": [f"redis-bus {nodes}", f"redis-repl {nodes}"]}),
                ("connector node", {
                    "listen": "127.0.0.1:16390", "transparent": "yes", "identity": "node",
                    "alpn": "redis-bus", "expect": nodes}),
            ])
            rd = netns.NsRedoubt(env.bin, h, conf, probe=(h.ip, 6380, ctx),
                                 probe_host=c).start()
            res = h.run([env.bin, "cluster-redirect", "-c", rd.conf], check=True)
            assert "6380 -> connector node" in res.stdout
            lab.redis[h.name], lab.redoubt[h.name] = red, rd
        lab.cap = lab.capture("any", os.path.join(lab.root, f"alpn-{os.getpid()}.pcap"))
        yield lab
    finally:
        lab.close()


def _session(lab, host, alpn, cert):
    """(outcome, selected ALPN, reply) of a TLS connection from c that sends PING."""
    c = lab.hosts["c"]
    ctx = netns.client_ctx(lab.pki.ca_crt, *cert, alpn=alpn)
    try:
        s = c.tls(host.ip, 6380, ctx)
    except (ssl.SSLError, OSError) as exc:
        return "refused", None, repr(exc)
    selected = s.selected_alpn_protocol()
    try:
        s.sendall(b"PING\r\n")
        data = s.recv(100)
    except (ssl.SSLError, OSError) as exc:
        return "refused", selected, repr(exc)
    finally:
        s.close()
    return ("ok" if data else "closed"), selected, data


def test_bus_and_clients_share_one_port(alpn_lab):
    lab = alpn_lab
    a, b = lab.hosts["a"], lab.hosts["b"]
    ra, rb = lab.redis["a"], lab.redis["b"]
    marker = "N7ALPN" + os.urandom(8).hex().upper()

    # Cluster bus through port 6380: a meets b, both directions of the bus come up.
    ra.cmd("CLUSTER", "ADDSLOTSRANGE", "0", "8191")
    rb.cmd("CLUSTER", "ADDSLOTSRANGE", "8192", "16383")
    ra.cmd("CLUSTER", "MEET", b.ip, "6380", "6380")

    def joined():
        for red in (ra, rb):
            info = dict(line.split(":", 1) for line in
                        red.cmd("CLUSTER", "INFO").decode().split("\r\n") if ":" in line)
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != "2":
                return False
            nodes = red.cmd("CLUSTER", "NODES").decode()
            if nodes.count(" connected") != 2 or "handshake" in nodes:
                return False
        return True
    wait_until(joined, 30, interval=0.2, what="the two nodes to meet over the shared port")
    assert f"{b.ip}:6380@6380" in ra.cmd("CLUSTER", "NODES").decode()

    # Clients without ALPN (redis-cli) on the same port reach the client backend.
    ccrt, ckey = lab.client_cert
    script = "".join(f"SET k{i}:{marker} v{i}:{marker}\n" for i in range(200))
    res = lab.hosts["c"].run(["redis-cli", "--tls", "--cacert", lab.pki.ca_crt, "--cert", ccrt,
                              "--key", ckey, "-h", a.ip, "-p", "6380", "-c"], input=script,
                             timeout=120)
    assert res.returncode == 0 and res.stdout.count("OK") == 200, res.stdout + res.stderr
    assert "-> Redirected to slot" in res.stdout
    assert ra.cmd("DBSIZE") > 0 and rb.cmd("DBSIZE") > 0
    assert ra.cmd("DBSIZE") + rb.cmd("DBSIZE") == 200

    # Per-route identity rules, and routing by the negotiated protocol.
    client, node = lab.client_cert, lab.node_cert_c
    assert _session(lab, a, None, client) == ("ok", None, b"+PONG\r\n")
    assert _session(lab, a, ["redis"], client) == ("ok", "redis", b"+PONG\r\n")
    assert _session(lab, a, ["redis-repl"], node) == ("ok", "redis-repl", b"+PONG\r\n")
    offset = lab.redoubt["a"].log_size()
    for proto in ("redis-bus", "redis-repl"):
        outcome, _, detail = _session(lab, a, [proto], client)
        assert outcome == "refused", f"a client certificate reached the {proto} route: {detail}"
    wait_until(lambda: lab.redoubt["a"].log_since(offset).count("client identity not allowed")
               >= 2, 5, what="both refusals to be logged with their reason")
    # A node identity is admitted to the bus route, which is not RESP: no +PONG from there.
    outcome, selected, data = _session(lab, a, ["redis-bus"], node)
    assert selected == "redis-bus" and data != b"+PONG\r\n", (outcome, selected, data)

    # Nothing readable on the wire between the hosts.
    ra.cmd("PUBLISH", "chan", marker)          # cluster pub/sub rides the bus
    lab.cap.stop()
    summary = netns.check_capture(lab.cap.path, marker.encode(), {6380})
    streams, _ = netns.read_pcap(lab.cap.path)
    inter_node = [k for k in streams if {k[0], k[2]} == {a.ip, b.ip}]
    assert inter_node, "no bus traffic between the nodes was captured"
    print(f"alpn: {summary}, {len(inter_node)} node-to-node streams")
