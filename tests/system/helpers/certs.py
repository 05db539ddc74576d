"""Certificates for the system tests.

The ordinary set (CA, node, client) comes from `redoubt cert dev`; special certificates (other
CA, expired, wrong names, chosen SANs, encrypted keys) are made with the openssl CLI, signed by
the dev CA where that matters.  Key files are made readable by the keyd user (root:GROUP 0640)
and every directory is world-searchable, because keyd does not run as root.
"""
import base64
import datetime
import grp
import os
import re
import threading

from .procs import run

KEYD_GROUP = "redoubt-keyd"

GENPKEY_ARGS = {
    "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "rsa2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa3072": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    "rsa4096": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
}

DEV_FILES = ("ca.crt", "ca.key", "node.crt", "node.key", "client.crt", "client.key")


def _openssl(*args, timeout=60, input=None):
    res = run(["openssl", *args], timeout=timeout, input=input)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed ({res.returncode}):\n"
                           f"{res.stdout}\n{res.stderr}")
    return res.stdout


def _openssl_bytes(*args, timeout=60):
    import subprocess
    res = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {res.stderr!r}")
    return res.stdout


def keyd_readable(path):
    """root:redoubt-keyd 0640, so that keyd (and nobody else unprivileged) reads it."""
    os.chown(path, 0, grp.getgrnam(KEYD_GROUP).gr_gid)
    os.chmod(path, 0o640)


def world_readable(path):
    os.chmod(path, 0o644)


def gen_key(path, key_type="p256"):
    _openssl("genpkey", *GENPKEY_ARGS[key_type], "-out", path)
    keyd_readable(path)
    return path


def encrypt_key(src, dst, passphrase):
    """Write src re-encrypted (PKCS#8, AES-256) with passphrase to dst."""
    _openssl("pkey", "-in", src, "-out", dst, "-aes256", "-passout", f"pass:{passphrase}")
    keyd_readable(dst)
    return dst


def _asn1_time(dt):
    return dt.strftime("%Y%m%d%H%M%SZ")


class CA:
    """A small CA driven by `openssl ca` (which lets us choose validity dates and extensions)."""

    _lock = threading.Lock()

    def __init__(self, dir, crt, key):
        self.dir = dir
        self.crt = crt
        self.key = key
        self.db = os.path.join(dir, "ca-db-" + os.path.basename(crt).replace(".", "_"))
        os.makedirs(os.path.join(self.db, "newcerts"), exist_ok=True)
        os.chmod(self.db, 0o755)
        for name, content in (("index.txt", ""), ("index.txt.attr", "unique_subject = no\n")):
            p = os.path.join(self.db, name)
            if not os.path.exists(p):
                with open(p, "w") as f:
                    f.write(content)
        serial = os.path.join(self.db, "serial")
        if not os.path.exists(serial):
            with open(serial, "w") as f:
                f.write(os.urandom(8).hex().upper() + "\n")
        self.cnf = os.path.join(self.db, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(f"""[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {self.db}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
""")

    @classmethod
    def create(cls, dir, name="redoubt test CA", key_type="p256"):
        os.makedirs(dir, exist_ok=True)
        os.chmod(dir, 0o755)
        key = gen_key(os.path.join(dir, "ca.key"), key_type)
        cnf = os.path.join(dir, "ca-req.cnf")
        with open(cnf, "w") as f:
            f.write(f"""[ req ]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[ dn ]
CN = {name}
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
""")
        crt = os.path.join(dir, "ca.crt")
        _openssl("req", "-x509", "-new", "-config", cnf, "-key", key, "-days", "3650",
                 "-sha256", "-out", crt)
        world_readable(crt)
        return cls(dir, crt, key)

    def issue(self, out_dir, name, cn, sans=(), key_type="p256", key=None,
              not_before=None, not_after=None, server=False, client=True):
        """Sign a leaf for cn with the given SAN entries ("DNS:x", "IP:1.2.3.4", "URI:...").

        Returns (crt_path, key_path).  key: reuse an existing key file instead of making one.
        """
        os.makedirs(out_dir, exist_ok=True)
        os.chmod(out_dir, 0o755)
        if key is None:
            key = gen_key(os.path.join(out_dir, f"{name}.key"), key_type)
        csr = os.path.join(out_dir, f"{name}.csr")
        _openssl("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-out", csr)
        now = datetime.datetime.now(datetime.timezone.utc)
        not_before = not_before or now - datetime.timedelta(days=1)
        not_after = not_after or now + datetime.timedelta(days=30)
        eku = ",".join(e for e, on in (("serverAuth", server), ("clientAuth", client)) if on)
        ext = os.path.join(out_dir, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("[ ext ]\nbasicConstraints = CA:FALSE\n"
                    "keyUsage = critical, digitalSignature, keyEncipherment\n"
                    "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
            if eku:
                f.write(f"extendedKeyUsage = {eku}\n")
            if sans:
                f.write(f"subjectAltName = {','.join(sans)}\n")
        crt = os.path.join(out_dir, f"{name}.crt")
        with CA._lock:
            _openssl("ca", "-batch", "-config", self.cnf, "-cert", self.crt, "-keyfile", self.key,
                     "-in", csr, "-out", crt, "-notext", "-md", "sha256",
                     "-startdate", _asn1_time(not_before), "-enddate", _asn1_time(not_after),
                     "-extfile", ext, "-extensions", "ext")
        world_readable(crt)
        return crt, key


class CertSet:
    """One `redoubt cert dev` directory plus certificates issued from its CA on demand."""

    def __init__(self, dir, key_type):
        self.dir = dir
        self.key_type = key_type
        for f in DEV_FILES:
            setattr(self, f.replace(".", "_"), os.path.join(dir, f))
        self._ca = None
        self._issued = {}
        self._lock = threading.Lock()

    @property
    def ca(self):
        if self._ca is None:
            self._ca = CA(self.dir, self.ca_crt, self.ca_key)
        return self._ca

    def issue(self, name, cn, sans=(), **kw):
        """A certificate from this set's CA, cached by name.  Returns (crt, key)."""
        with self._lock:
            if name not in self._issued:
                self._issued[name] = self.ca.issue(os.path.join(self.dir, "issued"), name, cn,
                                                   sans, **kw)
            return self._issued[name]


def make_dev_certs(redoubt_bin, dir, key_type="p256", names=(), client_name=None):
    """Run `redoubt cert dev` into dir and prepare the files for keyd.  Returns a CertSet."""
    os.makedirs(dir, exist_ok=True)
    os.chmod(dir, 0o755)
    if os.environ.get("REDOUBT_TEST_CERTS") == "openssl":
        # Development aid only: lets the fixtures be exercised before `cert dev` exists.
        _openssl_dev_certs(dir, key_type)
    else:
        cmd = [redoubt_bin, "cert", "dev", "--dir", dir, "--key-type", key_type, "--force"]
        for n in names:
            cmd += ["--name", n]
        if client_name:
            cmd += ["--client-name", client_name]
        res = run(cmd, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with {res.returncode}:\n"
                               f"{res.stdout}\n{res.stderr}")
    for f in DEV_FILES:
        p = os.path.join(dir, f)
        if not os.path.exists(p):
            raise RuntimeError(f"`redoubt cert dev` did not write {p}")
        if f.endswith(".key"):
            keyd_readable(p)
        else:
            world_readable(p)
    return CertSet(dir, key_type)


def _openssl_dev_certs(dir, key_type):
    ca = CA.create(dir, "redoubt development CA", key_type)
    ca.issue(dir, "node", "localhost", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"],
             key_type=key_type, server=True, client=True)
    ca.issue(dir, "client", "client", ["DNS:client"], key_type=key_type)


# --- secrets of a private key, for the memory scans -----------------------------------------

def key_text(key_path):
    return _openssl("pkey", "-in", key_path, "-text", "-noout")


def _parse_pkey_text(text):
    """{field: int} for the hex blocks of `openssl pkey -text` (priv, pub, prime1, ...)."""
    fields = {}
    name = None
    hexparts = []

    def flush():
        if name and hexparts:
            fields[name] = int("".join(hexparts).replace(":", ""), 16)

    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9]+):\s*$", line)
        if m:
            flush()
            name, hexparts = m.group(1), []
        elif name and re.match(r"^\s+[0-9a-fA-F:]+$", line):
            hexparts.append(line.strip())
        else:
            flush()
            name, hexparts = None, []
    flush()
    return fields


def _int_bytes(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def key_secrets(key_path):
    """The byte strings that must never appear in a worker: {label: bytes}.

    EC: the private scalar; RSA: d, p, q — each big-endian and little-endian (a BIGNUM's limbs
    on x86-64 are little-endian words, so its bytes in memory are the little-endian form).  Also
    the key file's PEM text (whole and every long base64 line) and its DER.
    """
    text = key_text(key_path)
    fields = _parse_pkey_text(text)
    if "priv" in fields:
        comps = {"ec-priv": fields["priv"]}
    elif "privateExponent" in fields:
        comps = {"rsa-d": fields["privateExponent"], "rsa-p": fields["prime1"],
                 "rsa-q": fields["prime2"]}
    else:
        raise RuntimeError(f"cannot find the private components in:\n{text}")
    secrets = {}
    for label, n in comps.items():
        be = _int_bytes(n)
        assert len(be) >= 16, f"{label} implausibly short"
        secrets[f"{label}-be"] = be
        secrets[f"{label}-le"] = be[::-1]
    with open(key_path, "rb") as f:
        pem = f.read()
    secrets["pem-file"] = pem
    body = []
    in_body = False
    for line in pem.splitlines():
        if line.startswith(b"-----BEGIN"):
            in_body = True
            continue
        if line.startswith(b"-----END"):
            in_body = False
            continue
        if in_body and b":" not in line:
            body.append(line.strip())
    # A base64 line whose bytes are all public (an RSA modulus, an EC point) could also occur in
    # the worker's copy of the certificate: only lines that carry private bytes are needles.
    pub_der = _openssl_bytes("pkey", "-in", key_path, "-pubout", "-outform", "DER")
    for i, line in enumerate(body):
        if len(line) >= 40 and len(line) % 4 == 0:
            if base64.b64decode(line) not in pub_der:
                secrets[f"pem-line-{i}"] = line
    secrets["der"] = base64.b64decode(b"".join(body))
    return secrets, {k: v for k, v in comps.items()}
