"""Read another process's memory as root (/proc/PID/maps + /proc/PID/mem) and look for needles."""
import os
import re

CHUNK = 8 << 20
# Mappings the kernel does not let /proc/PID/mem read; they never hold user data.
SPECIAL = ("[vvar]", "[vvar_vclock]", "[vsyscall]")

_MAPS_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+\S+\s+\S+\s+\d+\s*(.*)$")


def mappings(pid):
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            m = _MAPS_RE.match(line.rstrip("\n"))
            if not m:
                continue
            out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4)))
    return out


class ScanResult:
    def __init__(self):
        self.found = {}          # label -> [(address, mapping path)]
        self.bytes_read = 0
        self.regions_read = 0
        self.unreadable = []     # (start, end, perms, path, error) of readable mappings we could not read

    def summary(self):
        return (f"{self.regions_read} regions, {self.bytes_read / (1 << 20):.1f} MiB read, "
                f"{len(self.unreadable)} unreadable")


def scan(pid, needles):
    """Search every readable mapping of pid for each needle {label: bytes}."""
    res = ScanResult()
    maxlen = max(len(n) for n in needles.values())
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, perms, path in mappings(pid):
            if perms[0] != "r" or path in SPECIAL:
                continue
            addr = start
            tailbuf = b""
            tail_addr = start
            ok = True
            while addr < end:
                n = min(CHUNK, end - addr)
                try:
                    mem.seek(addr)
                    data = mem.read(n)
                except OSError as exc:
                    res.unreadable.append((start, end, perms, path, repr(exc)))
                    ok = False
                    break
                if not data:
                    res.unreadable.append((start, end, perms, path, "short read"))
                    ok = False
                    break
                res.bytes_read += len(data)
                window = tailbuf + data
                base = tail_addr
                for label, needle in needles.items():
                    i = window.find(needle)
                    while i >= 0:
                        res.found.setdefault(label, []).append((base + i, path))
                        i = window.find(needle, i + 1)
                keep = min(len(window), maxlen - 1)
                tailbuf = window[len(window) - keep:] if keep else b""
                tail_addr = base + len(window) - keep
                addr += len(data)
            if ok:
                res.regions_read += 1
    # Matches found twice because of the overlap window are the same address: deduplicate.
    for label in res.found:
        res.found[label] = sorted(set(res.found[label]))
    return res


def open_files(pid):
    """Targets of /proc/PID/fd/* (unreadable entries skipped)."""
    out = []
    d = f"/proc/{pid}/fd"
    for name in os.listdir(d):
        try:
            out.append(os.readlink(os.path.join(d, name)))
        except OSError:
            pass
    return out


def mapped_files(pid):
    return sorted({p for _, _, _, p in mappings(pid) if p.startswith("/")})
