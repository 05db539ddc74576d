"""Minimal TLS + RESP clients with exact control over bytes, versions and closing.

TLS sockets are made with suppress_ragged_eofs=False, so a peer that closes the TCP connection
without close_notify raises ssl.SSLEOFError instead of looking like a clean EOF.
"""
import socket
import ssl
import time

VERSIONS = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def client_context(ca, cert=None, key=None, min_version=None, max_version=None,
                   check_hostname=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert:
        ctx.load_cert_chain(cert, key)
    if min_version:
        ctx.minimum_version = VERSIONS[min_version]
    if max_version:
        ctx.maximum_version = VERSIONS[max_version]
    return ctx


def tls_connect(port, ctx, host="127.0.0.1", server_hostname="localhost", timeout=5.0):
    """Connect and complete the handshake; returns the SSLSocket (blocking, with timeout)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=False,
                            suppress_ragged_eofs=False)
        s.settimeout(timeout)
        s.do_handshake()
        return s
    except BaseException:
        raw.close()
        raise


class ProtocolError(Exception):
    pass


class Resp:
    """RESP2 over any socket-like object with sendall/recv."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send(self, *args):
        self.sock.sendall(self.encode(*args))

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            self.eof = True
            raise EOFError("connection closed")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return ProtocolError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ProtocolError(f"unexpected reply line {line[:80]!r}")

    def command(self, *args):
        self.send(*args)
        return self.reply()

    def read_to_eof(self, timeout=5.0, max_bytes=256 << 20):
        """Everything until the peer closes; returns (data, how) where how is 'close_notify'
        for a clean TLS close (or plain FIN on a non-TLS socket), else the exception name."""
        deadline = time.monotonic() + timeout
        data, self.buf = self.buf, b""
        how = None
        while how is None:
            left = deadline - time.monotonic()
            if left <= 0:
                how = "timeout"
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except ssl.SSLZeroReturnError:
                how = "close_notify"
                break
            except (ssl.SSLError, OSError) as exc:
                how = type(exc).__name__ + ": " + str(exc)
                break
            if not chunk:
                how = "close_notify"
                break
            data += chunk
            if len(data) > max_bytes:
                how = "too much data"
        return data, how


def resp_connect(port, ctx, **kw):
    return Resp(tls_connect(port, ctx, **kw))


def attempt(port, ctx, timeout=5.0, send_ping=True, **kw):
    """One connection attempt: handshake, then (send_ping) PING -> +PONG, or (not send_ping) wait
    up to `timeout` for the server to say something.

    Returns (outcome, detail, seconds) with outcome in:
      'ok'      handshake done and +PONG received (or, without PING, no alert within timeout)
      'refused' an exception (TLS alert, EOF, reset) before that; detail is the exception
      'hang'    the socket timed out while waiting for the server (only with send_ping)
    """
    t0 = time.monotonic()
    s = None
    try:
        s = tls_connect(port, ctx, timeout=timeout, **kw)
        if send_ping:
            s.sendall(b"PING\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise EOFError("EOF before a reply")
                buf += chunk
            if buf != b"+PONG\r\n":
                return "refused", ProtocolError(f"unexpected reply {buf!r}"), time.monotonic() - t0
            return "ok", s.version(), time.monotonic() - t0
        try:
            chunk = s.recv(4096)
            return "refused", EOFError(f"server closed or sent {chunk!r}"), time.monotonic() - t0
        except socket.timeout:
            return "ok", s.version(), time.monotonic() - t0
    except socket.timeout as exc:
        return "hang", exc, time.monotonic() - t0
    except (ssl.SSLError, OSError, EOFError) as exc:
        return "refused", exc, time.monotonic() - t0
    finally:
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
