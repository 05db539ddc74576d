"""tls-mode on a listener: require, verify-ca, verify-full with allow lists (dns:, ip:, uri:, cn:).

Client identities (issued from the dev CA unless noted; see helpers/stack.py CLIENTS):
  app     CN app-cn.client.test, SAN DNS:app.client.test IP:127.0.0.5 URI:spiffe://redoubt.test/app
  cnonly  CN cn-only.client.test, no SAN
  other   CN other-cn.client.test, SAN DNS:other.client.test
  stranger CN stranger.example, SAN DNS:stranger.example IP:127.0.0.9 URI:spiffe://elsewhere.test/x
  dev     the client certificate written by `redoubt cert dev`
  otherca the app identity, issued by an unrelated CA
"""
import re
import ssl
import time

import pytest

from helpers.procs import wait_until
from helpers.tlsclient import attempt, tls_connect

# A log line from a worker that gives a reason for refusing a peer.
REASON_RE = re.compile(r"^redoubt\[\d+\] worker[^:]*: .*(certificate|verif|refus|reject|denied|"
                       r"allow|identity|unknown ca|issuer|chain)", re.I | re.M)


def accepted(st, client, **kw):
    outcome, detail, _ = attempt(st.port, st.ctx(client, **kw), timeout=5)
    assert outcome == "ok", f"client {client!r} should be accepted, got {outcome}: {detail!r}"
    return detail


def refused(st, client, **kw):
    """The client must be refused with a TLS alert, and a worker must log why."""
    offset = st.redoubt.log_size()
    conns_before = st.redis.info("stats")["total_connections_received"]
    outcome, detail, secs = attempt(st.port, st.ctx(client, **kw), timeout=5, send_ping=False)
    assert outcome == "refused", f"client {client!r} should be refused, got {outcome}: {detail!r}"
    assert isinstance(detail, ssl.SSLError) and "alert" in str(detail).lower(), (
        f"client {client!r} was refused without a TLS alert: {detail!r}")
    assert secs < 5
    wait_until(lambda: REASON_RE.search(st.redoubt.log_since(offset)), 3,
               what=f"a worker log line giving the reason for refusing {client!r}")
    # A refused peer never reaches the backend (the info call itself is one connection).
    conns_after = st.redis.info("stats")["total_connections_received"]
    assert conns_after - conns_before == 1, (
        f"refusing {client!r} still opened {conns_after - conns_before - 1} backend connection(s)")
    return detail


def test_require_accepts_clients_without_certificate(make_stack):
    st = make_stack(tls_mode="require")
    accepted(st, None)
    accepted(st, "otherca")      # not asked for, so a foreign certificate does not matter
    accepted(st, "app")


def test_verify_ca(make_stack):
    st = make_stack(tls_mode="verify-ca")
    accepted(st, "app")
    accepted(st, "dev")
    accepted(st, "cnonly")
    accepted(st, "stranger")     # any certificate of the CA, whatever its names
    refused(st, "otherca")
    refused(st, None)


@pytest.mark.parametrize("allow,client", [
    (["dns:app.client.test"], "app"),
    (["dns:*.client.test"], "app"),
    (["ip:127.0.0.5"], "app"),
    (["uri:spiffe://redoubt.test/app"], "app"),
    (["cn:cn-only.client.test"], "cnonly"),
    (["dns:nothing.example", "uri:spiffe://redoubt.test/app"], "app"),
], ids=["dns", "dns-wildcard", "ip", "uri", "cn", "second-entry"])
def test_verify_full_matching_identity_accepted(make_stack, allow, client):
    st = make_stack(tls_mode="verify-full", allow=allow, probe_client=client)
    accepted(st, client)
    accepted(st, client, max_version="TLSv1.2")
    # Same CA, identity not on the list.
    refused(st, "stranger")
    # Same identity, wrong CA.
    if client == "app":
        refused(st, "otherca")
    refused(st, None)


@pytest.mark.parametrize("allow", [
    ["dns:nomatch.client.test"],
    ["dns:*.other.test"],
    ["ip:127.0.0.6"],
    ["uri:spiffe://redoubt.test/other"],
    ["cn:someone-else"],
], ids=["dns", "dns-wildcard", "ip", "uri", "cn"])
def test_verify_full_refused_identity(make_stack, allow):
    st = make_stack(tls_mode="verify-full", allow=allow + ["dns:other.client.test"],
                    probe_client="other")
    accepted(st, "other")         # the service works for a listed identity...
    refused(st, "app")            # ...and refuses the unlisted one
    refused(st, "app", max_version="TLSv1.2")


def test_verify_full_refusal_fails_the_tls12_handshake(make_stack):
    """In TLS 1.2 the client's handshake itself must fail with an alert (nothing half-open)."""
    st = make_stack(tls_mode="verify-full", allow=["dns:nomatch.client.test"])
    ctx = st.ctx("app", max_version="TLSv1.2")
    t0 = time.monotonic()
    with pytest.raises(ssl.SSLError) as info:
        s = tls_connect(st.port, ctx, timeout=5)
        s.close()
    assert "alert" in str(info.value).lower(), info.value
    assert time.monotonic() - t0 < 5
