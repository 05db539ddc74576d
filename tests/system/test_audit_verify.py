"""`redoubt audit verify|show` on logs made by the real writer (audit/writer.c).

The logs come from the unit-test program's generator mode (`test_audit generate DIR N
[ROTATE_AT]`: the writer API, two files when it rotates), never from a hidden mode of the
redoubt binary.  Each tampering test edits a fresh log and checks that the verifier exits 1
and names the problem; an independent Python reading of docs/audit.md (hash chain with
hashlib, checkpoint signatures with openssl(1)) checks that the format is what the docs say.

Binaries: $REDOUBT_BIN (default build/redoubt) and $REDOUBT_AUDIT_GEN (default
tests/test_audit beside REDOUBT_BIN, else build/tests/test_audit).
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("REDOUBT_BIN", str(REPO / "build" / "redoubt"))
OPENSSL = shutil.which("openssl")

INTACT, TAMPERED, UNREADABLE, USAGE = 0, 1, 2, 64
EVENTS, ROTATE_AT = 60, 30       # two files: audit.jsonl.1 (older) and audit.jsonl
RUN_TIMEOUT = 60                 # seconds for one command
GENESIS = "0" * 64


def _gen_bin():
    cands = [os.environ.get("REDOUBT_AUDIT_GEN"),
             str(Path(BIN).parent / "tests" / "test_audit"),
             str(REPO / "build" / "tests" / "test_audit")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail("no log generator: build it (make build/tests/test_audit) or set "
                "REDOUBT_AUDIT_GEN")


def run(*args):
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"redoubt binary {BIN} missing: run `make` or set REDOUBT_BIN")
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def generate(d, n=EVENTS, rotate_at=ROTATE_AT):
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([_gen_bin(), "generate", str(d), str(n), str(rotate_at)], check=True,
                   capture_output=True, timeout=RUN_TIMEOUT)
    return d


class Log:
    """A generated log: old = audit.jsonl.1, cur = audit.jsonl, both as lists of lines."""

    def __init__(self, d):
        self.dir = d
        self.old_path = d / "audit.jsonl.1"
        self.cur_path = d / "audit.jsonl"
        self.pub = d / "audit.pub"
        self.old = self.old_path.read_bytes().split(b"\n")[:-1]
        self.cur = self.cur_path.read_bytes().split(b"\n")[:-1]

    def save(self):
        self.old_path.write_bytes(b"".join(line + b"\n" for line in self.old))
        self.cur_path.write_bytes(b"".join(line + b"\n" for line in self.cur))

    def verify(self, *extra):
        # Newest first, as a shell glob would list them: the verifier orders them itself.
        return run("audit", "verify", self.cur_path, self.old_path, *extra)

    @staticmethod
    def index(lines, event, nth=0):
        hits = [i for i, line in enumerate(lines) if json.loads(line)["event"] == event]
        return hits[nth]


@pytest.fixture
def log(tmp_path):
    return Log(generate(tmp_path / "log"))


def assert_tampered(res, *needles):
    out = res.stdout + res.stderr
    assert res.returncode == TAMPERED, out
    for n in needles:
        assert n in out, out


# ---------- the untouched log ----------

def test_untouched_log_is_intact(log):
    res = log.verify()
    assert res.returncode == INTACT, res.stdout + res.stderr
    total = len(log.old) + len(log.cur)
    assert f"intact: {total} records, seq 1..{total}" in res.stdout
    assert f"verified with {log.pub}" in res.stdout


def test_each_file_alone_is_intact(log):
    for f in (log.old_path, log.cur_path):
        res = run("audit", "verify", f)
        assert res.returncode == INTACT, res.stdout + res.stderr
    assert "note: records before seq" in run("audit", "verify", log.cur_path).stdout


def test_format_is_what_the_docs_say(log, tmp_path):
    """An independent reader: hashlib for the chain, openssl(1) for the signatures."""
    if OPENSSL is None:
        pytest.skip("needs the openssl command")
    lines = log.old + log.cur
    prev = GENESIS
    checked = 0
    for i, raw in enumerate(lines):
        rec = json.loads(raw)
        assert list(rec)[:5] == ["seq", "time", "event", "outcome", "reason"]
        assert rec["seq"] == i + 1 and rec["prev"] == prev, raw
        assert rec["time"].endswith("Z") and len(rec["time"]) == 27
        prev = hashlib.sha256(raw).hexdigest()
        if rec["event"] != "audit.checkpoint":
            continue
        assert raw.endswith(b'"}') and list(rec)[-1] == "sig"
        cut = raw.rindex(b',"sig":"')
        msg, sig = tmp_path / "msg", tmp_path / "sig"
        msg.write_bytes(raw[:cut] + b"}")
        sig.write_bytes(base64.b64decode(rec["sig"]))
        der = subprocess.run([OPENSSL, "pkey", "-pubin", "-in", log.pub, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        assert rec["key"] == hashlib.sha256(der).hexdigest()
        res = subprocess.run([OPENSSL, "dgst", "-sha256", "-verify", log.pub, "-signature",
                              sig, msg], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        checked += 1
    assert checked >= 5
    # The old file ends with the checkpoint that sealed it; the new one starts with the rotation.
    assert json.loads(log.old[-1])["event"] == "audit.checkpoint"
    assert json.loads(log.cur[0])["event"] == "audit.rotated"


# ---------- each kind of tampering, on a fresh copy ----------

def test_edited_byte(log):
    line = bytearray(log.old[16])                 # seq 17
    at = line.index(b'"time":"') + 20             # a digit of the hour
    line[at] = ord("1") if line[at] != ord("1") else ord("2")
    log.old[16] = bytes(line)
    log.save()
    assert_tampered(log.verify(), "audit.jsonl.1:17: seq 17: record altered")


def test_deleted_record(log):
    del log.old[19]                                # seq 20
    log.save()
    assert_tampered(log.verify(), "seq gap: 21 follows 19 (record 20 deleted)")


def test_swapped_records(log):
    log.old[22], log.old[23] = log.old[23], log.old[22]
    log.save()
    assert_tampered(log.verify(), "audit.jsonl.1:23: seq 24: records out of order")


def test_truncated_tail_proved_by_next_file(log):
    last = json.loads(log.old[-1])["seq"]
    del log.old[-3:]
    log.save()
    assert_tampered(log.verify(), f"log ends at seq {last - 3} but ", "truncated tail",
                    f"records {last - 2}..{last} missing")


def test_torn_last_line(log):
    log.save()
    data = log.cur_path.read_bytes()
    log.cur_path.write_bytes(data[:-25])
    assert_tampered(log.verify(), "torn record")


def test_replaced_checkpoint_signature(log, tmp_path):
    """A well-formed signature over the right bytes, by a key that is not the audit key."""
    if OPENSSL is None:
        pytest.skip("needs the openssl command")
    i = Log.index(log.old, "audit.checkpoint", 1)
    raw = log.old[i]
    cut = raw.rindex(b',"sig":"')
    key, msg = tmp_path / "forger.key", tmp_path / "msg"
    subprocess.run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    msg.write_bytes(raw[:cut] + b"}")
    sig = subprocess.run([OPENSSL, "dgst", "-sha256", "-sign", key, msg], check=True,
                         capture_output=True).stdout
    log.old[i] = raw[:cut] + b',"sig":"' + base64.b64encode(sig) + b'"}'
    log.save()
    seq = json.loads(raw)["seq"]
    assert_tampered(log.verify(), f"audit.jsonl.1:{i + 1}: seq {seq}: checkpoint at seq {seq}: "
                    "signature does not verify with")


def test_checkpoint_claiming_another_key(log):
    i = Log.index(log.cur, "audit.checkpoint")
    rec = log.cur[i]
    key = json.loads(rec)["key"]
    log.cur[i] = rec.replace(key.encode(), b"f" * 64)
    log.save()
    assert_tampered(log.verify(), "checkpoint signed by another key")


def test_spliced_record_from_another_log(log, tmp_path):
    other = Log(generate(tmp_path / "other"))
    log.old.insert(12, other.old[12])
    log.save()
    assert_tampered(log.verify(), "audit.jsonl.1:13: seq 13: record inserted")


def test_wrong_public_key(log, tmp_path):
    other = generate(tmp_path / "other", n=4, rotate_at=0)
    assert_tampered(log.verify("--pubkey", other / "audit.pub"), "signed by another key")


# ---------- unreadable and usage ----------

def test_unreadable(log, tmp_path):
    res = run("audit", "verify", tmp_path / "nothing.jsonl", "--pubkey", log.pub)
    assert res.returncode == UNREADABLE and "cannot open" in res.stderr
    res = run("audit", "verify", log.cur_path, "--pubkey", tmp_path / "none.pub")
    assert res.returncode == UNREADABLE and "cannot read audit public key" in res.stderr
    (tmp_path / "bad.pub").write_text("not a key\n")
    res = run("audit", "verify", log.cur_path, "--pubkey", tmp_path / "bad.pub")
    assert res.returncode == UNREADABLE


@pytest.mark.parametrize("args", [["audit"], ["audit", "verify"], ["audit", "frobnicate"],
                                  ["audit", "show"], ["audit", "show", "x", "--since", "soon"],
                                  ["audit", "show", "x", "--outcome", "maybe"],
                                  ["audit", "show", "x", "--json", "--csv"]])
def test_usage(args):
    assert run(*args).returncode == USAGE


# ---------- show ----------

def test_show_table(log):
    res = run("audit", "show", log.old_path, log.cur_path)
    assert res.returncode == 0, res.stderr
    rows = res.stdout.splitlines()
    assert rows[0].split() == ["TIME", "EVENT", "OUTCOME", "PEER", "IDENTITY", "LISTENER",
                               "REASON"]
    assert len(rows) == 1 + len(log.old) + len(log.cur)
    assert any("tls.handshake" in r and "certificate verify failed" in r for r in rows)


def test_show_filters_json(log):
    res = run("audit", "show", log.old_path, log.cur_path, "--event", "tls.handshake",
              "--outcome", "failure", "--json")
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert recs and all(r["event"] == "tls.handshake" and r["outcome"] == "failure"
                        for r in recs)
    # --json prints the exact lines: they still hash to what the chain says.
    raw = set(log.old + log.cur)
    assert all(line.encode() in raw for line in res.stdout.splitlines())

    peer = recs[0]["peer"]
    res = run("audit", "show", log.old_path, "--peer", peer.rsplit(":", 1)[0], "--json")
    assert [json.loads(x)["peer"] for x in res.stdout.splitlines()] == [peer]
    res = run("audit", "show", log.cur_path, "--identity", "client.example", "--json")
    assert all("client.example" in json.loads(x)["peer_identity"]
               for x in res.stdout.splitlines())
    res = run("audit", "show", log.cur_path, "--since", "2999-01-01", "--json")
    assert res.returncode == 0 and res.stdout == ""
    res = run("audit", "show", log.cur_path, "--until", "2000-01-01 00:00", "--json")
    assert res.stdout == ""


def test_show_csv(log):
    # Bytes, not text: CSV rows end with CRLF (RFC 4180), which text mode would hide.
    res = subprocess.run([BIN, "audit", "show", str(log.cur_path), "--csv", "--event",
                          "connection"], capture_output=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr
    rows = res.stdout.decode().split("\r\n")
    assert rows[0] == "seq,time,event,outcome,worker,peer,identity,listener,reason"
    assert all(r.split(",")[2].startswith("connection.") for r in rows[1:] if r)
