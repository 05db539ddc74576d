"""Multi-host system tests: every "host" is a network namespace with its own redis-server and
redoubt, cabled by a veth pair to a bridge that lives in a private "switch" namespace.

    switch ns  (bridge br0, veths v1..vN; tcpdump runs here)
       |  v1            |  v2           ...
    host ns 1 (eth0 10.250.S.1)   host ns 2 (eth0 10.250.S.2)   ...

Nothing is created in the root namespace: no routes, no firewall interplay, no address that
could collide with the machine's own.  Hosts reach each other only across the bridge; their
redis-servers listen on loopback (and a unix socket in the host's work directory, which the
test itself uses for checks: unix sockets belong to the file system, not to a namespace).

Lab.close() kills every process the lab started (by pid), then deletes the namespaces, which
takes the veths, the bridge and any nftables table inside with them.  Namespaces left behind by
a run that was killed are removed by the next run (their name carries the pid that made them).
"""
import ctypes
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

from helpers import certs as certs_mod
from helpers.procs import pid_alive, run, stop_pid, tail, wait_until
from helpers.servers import REGISTRY, Redoubt, new_workdir

NS_PREFIX = "rdt7-"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

NODE_DOMAIN = "nodes.redoubt.test"
CLIENT_NAME = "client.redoubt.test"


def _ip(*args, check=True, timeout=30):
    res = run(["ip", *args], timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def remove_stale_namespaces():
    """Namespaces of earlier runs whose test process is gone."""
    res = run(["ip", "netns", "list"], timeout=30)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", name)
        if m and not pid_alive(int(m.group(1))):
            # Servers that run was running inside (it was killed before it could stop them).
            pids = run(["ip", "netns", "pids", name], timeout=30).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", name, check=False)


# --- hosts ------------------------------------------------------------------------------------

class Host:
    def __init__(self, lab, name, index):
        self.lab = lab
        self.name = name
        self.index = index
        self.ns = f"{lab.prefix}{name}"
        self.ip = f"{lab.subnet}.{index}"
        self.veth = f"v{index}"            # the switch-side end
        self.dir = new_workdir(lab.root, prefix=f"{name}-")

    def exec_args(self, cmd):
        return ["ip", "netns", "exec", self.ns, *[str(c) for c in cmd]]

    def run(self, cmd, timeout=60, input=None, check=False):
        res = run(self.exec_args(cmd), timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise RuntimeError(f"[{self.name}] {' '.join(map(str, cmd))} failed "
                               f"({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def popen(self, cmd, log_name, **kw):
        """A long-running process in this host, output to DIR/log_name; stopped by close()."""
        out = open(os.path.join(self.dir, log_name), "ab")
        p = subprocess.Popen(self.exec_args(cmd), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, process_group=0, **kw)
        out.close()
        self.lab.procs.append(p)
        return p

    def call(self, fn, *args, **kw):
        """fn(*args) on a thread that has entered this host's network namespace.  Sockets made
        there stay in the namespace and may be used afterwards from any thread."""
        box = {}

        def target():
            fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({self.ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            try:
                box["v"] = fn(*args, **kw)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["e"] = exc

        t = threading.Thread(target=target, name=f"netns-{self.name}")
        t.start()
        t.join()
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def connect(self, host, port, timeout=5.0):
        """A TCP socket from this host."""
        return self.call(socket.create_connection, (host, port), timeout=timeout)

    def tls(self, host, port, ctx, server_hostname=None, timeout=5.0):
        raw = self.connect(host, port, timeout)
        try:
            s = ctx.wrap_socket(raw, server_hostname=server_hostname,
                                do_handshake_on_connect=False, suppress_ragged_eofs=False)
            s.settimeout(timeout)
            s.do_handshake()
            return s
        except BaseException:
            raw.close()
            raise


class Lab:
    """A switch namespace with a bridge, and hosts plugged into it."""

    def __init__(self, root, tag, subnet_octet):
        assert 0 < subnet_octet < 255
        self.root = root
        self.prefix = f"{NS_PREFIX}{os.getpid()}-{tag}-"
        self.subnet = f"10.250.{subnet_octet}"
        self.sw = f"{self.prefix}sw"
        self.hosts = {}
        self.procs = []
        self.redoubts = []
        self.captures = []
        self.closed = False

    def start(self):
        remove_stale_namespaces()
        _ip("netns", "add", self.sw)
        self._sysctl(self.sw)
        _ip("-n", self.sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.sw, "link", "set", "br0", "up")
        return self

    def _sysctl(self, ns):
        # No IPv6 chatter (DAD, router solicitations) in the captures.
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}=1"], timeout=10)

    def add_host(self, name):
        h = Host(self, name, len(self.hosts) + 1)
        _ip("netns", "add", h.ns)
        self._sysctl(h.ns)
        _ip("-n", h.ns, "link", "set", "lo", "up")
        _ip("-n", self.sw, "link", "add", h.veth, "type", "veth", "peer", "name", "eth0",
            "netns", h.ns)
        _ip("-n", self.sw, "link", "set", h.veth, "master", "br0", "up")
        _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
        _ip("-n", h.ns, "link", "set", "eth0", "up")
        self.hosts[name] = h
        return h

    def capture(self, iface, path, ns=None, bpf="tcp"):
        """tcpdump on a switch-side interface ('any' for all of them), or on an interface of
        namespace ns, until close() (or the capture's stop())."""
        err = open(path + ".log", "wb")
        p = subprocess.Popen(["ip", "netns", "exec", ns or self.sw, "tcpdump", "-i", iface,
                              "-n", "-s", "0", "-B", "16384", "-w", path, *bpf.split()],
                             stdin=subprocess.DEVNULL, stdout=err, stderr=err, process_group=0)
        err.close()
        cap = Capture(p, path)
        self.captures.append(cap)
        wait_until(lambda: "listening on" in tail(path + ".log") or p.poll() is not None, 10,
                   what="tcpdump to start")
        if p.poll() is not None:
            raise RuntimeError(f"tcpdump exited: {tail(path + '.log')}")
        return cap

    def close(self):
        if self.closed:
            return
        self.closed = True
        for cap in self.captures:
            cap.stop()
        for rd in reversed(self.redoubts):
            try:
                rd.stop()
            except Exception:  # noqa: BLE001 - the rest must still be cleaned up
                pass
        for p in reversed(self.procs):
            if p.poll() is None:
                stop_pid(p, term_timeout=5)
        for h in self.hosts.values():
            _ip("netns", "del", h.ns, check=False)
        _ip("netns", "del", self.sw, check=False)


class Capture:
    def __init__(self, proc, path):
        self.proc = proc
        self.path = path
        self.dropped = None

    def stop(self):
        if self.proc.poll() is None:
            # SIGINT: tcpdump flushes its buffer and reports drops.
            stop_pid(self.proc, term_timeout=10, sig=signal.SIGINT)
        m = re.search(r"(\d+) packets? dropped by kernel", tail(self.path + ".log"))
        self.dropped = int(m.group(1)) if m else None
        return self


# --- certificates -----------------------------------------------------------------------------

class Pki:
    """A CA of its own for a test module (revocations here disturb nobody) and the certificates
    of its hosts: node certificates name the host (DNS + IP SAN) and serve both directions."""

    def __init__(self, root, name="n7"):
        self.dir = os.path.join(root, f"pki-{name}")
        self.ca = certs_mod.CA.create(self.dir, f"redoubt {name} test CA")
        self.ca_crt = self.ca.crt
        self.issued = os.path.join(self.dir, "issued")

    def node(self, name, ip, dns=None):
        dns = dns or f"{name}.{NODE_DOMAIN}"
        return self.ca.issue(self.issued, f"node-{name}", dns, [f"DNS:{dns}", f"IP:{ip}"],
                             server=True, client=True)

    def client(self, name=CLIENT_NAME):
        return self.ca.issue(self.issued, f"client-{name}", name, [f"DNS:{name}"],
                             server=False, client=True)

    def leaf(self, label, cn, sans, **kw):
        kw.setdefault("server", True)
        kw.setdefault("client", True)
        return self.ca.issue(self.issued, label, cn, sans, **kw)

    def revoke(self, crt):
        """Revokes crt in the CA database and returns a fresh CRL (PEM) listing it."""
        with certs_mod.CA._lock:
            certs_mod._openssl("ca", "-config", self.ca.cnf, "-cert", self.ca.crt, "-keyfile",
                               self.ca.key, "-revoke", crt)
            crl = os.path.join(self.dir, "ca.crl")
            certs_mod._openssl("ca", "-config", self.ca.cnf, "-cert", self.ca.crt, "-keyfile",
                               self.ca.key, "-gencrl", "-crldays", "30", "-out", crl)
        certs_mod.world_readable(crl)
        return crl


def self_signed(dir, name, cn, sans):
    """A self-signed leaf (CA:FALSE) with the given SANs; returns (crt, key)."""
    os.makedirs(dir, exist_ok=True)
    key = certs_mod.gen_key(os.path.join(dir, f"{name}.key"))
    crt = os.path.join(dir, f"{name}.crt")
    certs_mod._openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={cn}", "-days", "30",
                       "-sha256", "-addext", "basicConstraints=critical,CA:FALSE",
                       "-addext", f"subjectAltName={','.join(sans)}",
                       "-addext", "extendedKeyUsage=serverAuth,clientAuth", "-out", crt)
    certs_mod.world_readable(crt)
    return crt, key


def client_ctx(ca, crt=None, key=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)
    ctx.check_hostname = False          # peers are named by IP SAN; verified by the chain
    ctx.verify_mode = ssl.CERT_REQUIRED
    if crt:
        ctx.load_cert_chain(crt, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


# --- redis-server and redoubt inside a host ---------------------------------------------------

class NsRedis:
    """redis-server in a host: loopback TCP (for redoubt and replication) plus a unix socket in
    the host's directory (for the test's own checks)."""

    def __init__(self, host, port=6379, extra=()):
        self.host = host
        self.port = port
        self.dir = host.dir
        self.sock = os.path.join(host.dir, "redis.sock")
        self.conf = os.path.join(host.dir, "redis.conf")
        self.log_path = os.path.join(host.dir, "redis.log")
        self.name = f"redis-server [{host.name}]"
        self.proc = None
        self.started_at = self.stopped_at = None
        lines = [f"port {port}", "bind 127.0.0.1", f"unixsocket {self.sock}",
                 "unixsocketperm 777", 'save ""', "appendonly no", "daemonize no",
                 f"dir {host.dir}", f"logfile {self.log_path}", "loglevel notice",
                 "enable-debug-command yes", "protected-mode no", *extra]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=15):
        self.proc = self.host.popen(["redis-server", self.conf], "redis.stdout")
        self.started_at = time.monotonic()
        REGISTRY.append(self)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.host.name} exited:\n"
                                   f"{self.log_tail()}")
            return self.direct().ping()
        wait_until(up, timeout, what=f"redis-server on {self.host.name}")
        return self

    def direct(self, **kw):
        import redis
        kw.setdefault("socket_timeout", 60)
        return redis.Redis(unix_socket_path=self.sock, **kw)

    def cmd(self, *args):
        r = self.direct()
        try:
            return r.execute_command(*args)
        finally:
            r.close()

    def info(self, section=None):
        r = self.direct()
        try:
            return r.info(section) if section else r.info()
        finally:
            r.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stopped_at = time.monotonic()

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc, term_timeout=10)
        self.stopped_at = time.monotonic()

    def log_tail(self, max_bytes=15000):
        return tail(self.log_path, max_bytes)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def relevant_since(self, t0):
        return self.started_at is not None and (self.stopped_at is None or self.stopped_at >= t0)


class NsRedoubt(Redoubt):
    """`redoubt serve` inside a host.  Ready = keyd and the workers are up, and (when probe is
    given) a TLS handshake from probe_host to probe = (ip, port, ctx) completes."""

    def __init__(self, bin, host, config_text, workers=1, probe=None, probe_host=None):
        super().__init__(bin, host.dir, config_text, port=None, probe_ctx=None, workers=workers)
        self.host = host
        self.ns_probe = probe
        self.probe_host = probe_host or host
        self.name = f"redoubt [{host.name}] stderr [{self.log_path}]"

    def start(self, timeout=30):
        err = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.host.exec_args([self.bin, "serve", "-c", self.conf]),
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     process_group=0)
        err.close()
        self.started_at = time.monotonic()
        self.stopped_at = None
        REGISTRY.append(self)
        if self not in self.host.lab.redoubts:
            self.host.lab.redoubts.append(self)
        self.wait_ready(timeout)
        if self.ns_probe is not None:
            ip, port, ctx = self.ns_probe

            def probe():
                self.check_alive()
                s = self.probe_host.tls(ip, port, ctx, timeout=3)
                s.close()
                return True
            wait_until(probe, timeout, interval=0.1,
                       what=f"a TLS handshake with redoubt on {self.host.name} {ip}:{port}")
        return self

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def config_text(sections):
    """[(header, {key: value or [values]})] -> INI text."""
    out = []
    for header, keys in sections:
        out.append(f"[{header}]")
        for k, v in keys.items():
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                out.append(f"{k} = {item}")
        out.append("")
    return "\n".join(out)


def global_section(host, workers=1, log_level="info"):
    return ("global", {
        "workers": str(workers),
        "user": "redoubt",
        "keyd-user": "redoubt-keyd",
        "control-socket": os.path.join(host.dir, "run", "control.sock"),
        "audit-log": os.path.join(host.dir, "audit", "audit.jsonl"),
        "log-level": log_level,
        "keyd-timeout": "2s",
    })


def identity_section(name, crt, key, ca=None, crl=None):
    keys = {"cert": crt, "key": key}
    if ca:
        keys["ca"] = ca
    if crl:
        keys["crl"] = crl
    return (f"identity {name}", keys)


# --- RESP for redis-cli --pipe ----------------------------------------------------------------

def resp_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def pipe_into(sock_path, payload, timeout=120):
    """redis-cli --pipe over the unix socket; returns the number of replies."""
    res = subprocess.run(["redis-cli", "-s", sock_path, "--pipe"], input=payload,
                         capture_output=True, timeout=timeout)
    text = res.stdout.decode(errors="replace")
    m = re.search(r"errors: (\d+), replies: (\d+)", text)
    if res.returncode != 0 or not m or m.group(1) != "0":
        raise RuntimeError(f"redis-cli --pipe failed: {text}\n{res.stderr!r}")
    return int(m.group(2))


# --- pcap: TCP streams and TLS records --------------------------------------------------------

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276      # tcpdump -i any (libpcap >= 1.10)


def read_pcap(path):
    """{(src, sport, dst, dport): bytes} reassembled per direction (retransmissions and the
    duplicate copies of `-i any` collapse; a gap ends the stream at the gap), plus the raw bytes
    of the file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return {}, data
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xa1b2c3d4, 0xa1b23c4d):
        endian = "<"
    elif magic in (0xd4c3b2a1, 0x4d3cb2a1):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    segs = {}
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == LINKTYPE_ETHERNET:
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == LINKTYPE_LINUX_SLL:
            if len(pkt) < 16 or pkt[14:16] != b"\x08\x00":
                continue
            ip = pkt[16:]
        elif linktype == LINKTYPE_LINUX_SLL2:
            if len(pkt) < 20 or pkt[0:2] != b"\x08\x00":
                continue
            ip = pkt[20:]
        else:
            raise ValueError(f"{path}: link type {linktype} not handled")
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0xf) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:total] if total >= ihl else ip[ihl:]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        flags = tcp[13]
        key = (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport)
        st = segs.setdefault(key, {"isn": None, "parts": {}})
        if flags & 0x02:                      # SYN: data starts at seq + 1
            st["isn"] = seq + 1
        if payload:
            st["parts"].setdefault(seq, payload)
    streams = {}
    for key, st in segs.items():
        if not st["parts"]:
            continue
        base = st["isn"] if st["isn"] is not None else min(st["parts"])
        rel = sorted((((s - base) & 0xffffffff), p) for s, p in st["parts"].items())
        buf = bytearray()
        for r, p in rel:
            if r > len(buf):
                break                          # a gap (capture started late, or a drop)
            if r + len(p) > len(buf):
                buf += p[len(buf) - r:]
        streams[key] = bytes(buf)
    return streams, data


TLS_CONTENT_TYPES = {20, 21, 22, 23}
TLS_RECORD_MAX = 16384 + 2048


def tls_records(stream):
    """Walks a byte stream as TLS records: (n_records, app_data_bytes, leftover) where leftover
    is the number of trailing bytes that are not a whole record (a stream cut by the capture's
    end); raises ValueError at the first byte that is not a record header."""
    off = n = app = 0
    while off + 5 <= len(stream):
        ctype, major, minor, length = stream[off], stream[off + 1], stream[off + 2], \
            struct.unpack(">H", stream[off + 3:off + 5])[0]
        if ctype not in TLS_CONTENT_TYPES or major != 3 or minor not in (1, 3) or \
                length > TLS_RECORD_MAX:
            raise ValueError(f"not a TLS record at offset {off}: {stream[off:off + 16]!r}")
        if off + 5 + length > len(stream):
            break
        n += 1
        if ctype == 23:
            app += length
        off += 5 + length
    return n, app, len(stream) - off


def check_capture(path, marker, tls_ports, min_app_bytes=0):
    """The capture has no marker (raw file or any reassembled stream), and every stream to or
    from a port in tls_ports is TLS records from its first byte.  Returns a summary dict."""
    streams, raw = read_pcap(path)
    assert raw, f"{path}: empty capture"
    assert marker not in raw, f"{path}: the marker {marker!r} is in the capture in clear text"
    tls_streams = app_total = records = 0
    for key, data in streams.items():
        assert marker not in data, f"{path}: marker in clear text in stream {key}"
        if key[1] not in tls_ports and key[3] not in tls_ports:
            continue
        n, app, _ = tls_records(data)
        assert data[:1] == b"\x16", f"stream {key} does not start with a TLS handshake record"
        tls_streams += 1
        records += n
        app_total += app
    assert tls_streams > 0, f"{path}: no TCP stream on ports {tls_ports}"
    assert b"\x17\x03\x03" in raw, f"{path}: no TLS application-data record header"
    assert app_total >= min_app_bytes, (
        f"{path}: only {app_total} bytes of TLS application data (expected >= {min_app_bytes})")
    return {"streams": tls_streams, "records": records, "app_bytes": app_total,
            "bytes": len(raw)}


# --- replication state ------------------------------------------------------------------------

def link_up(redis):
    """The replica's link to its primary is up and no sync is in progress."""
    info = redis.info("replication")
    return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")


def wait_link_up(redis, timeout=60, what=None):
    wait_until(lambda: link_up(redis), timeout, interval=0.1,
               what=what or f"replication link of {redis.host.name} to be up")


def wait_caught_up(primary, replicas, timeout=60):
    """Every replica has processed the primary's whole replication stream."""
    def done():
        off = primary.info("replication")["master_repl_offset"]
        return all(r.info("replication").get("slave_repl_offset") == off for r in replicas)
    wait_until(done, timeout, interval=0.1, what="replicas to catch up with the primary")
