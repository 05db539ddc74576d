"""Process, port and timing utilities.  Every wait is bounded; processes are stopped by pid."""
import os
import signal
import socket
import subprocess
import time

DEFAULT_CMD_TIMEOUT = 60


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll predicate() until it returns a truthy value or timeout seconds pass.

    Returns the truthy value; raises TimeoutError naming `what` otherwise.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below if we time out
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def run(cmd, timeout=DEFAULT_CMD_TIMEOUT, check=False, input=None, env=None, cwd=None):
    """subprocess.run with captured text output and a mandatory timeout."""
    return subprocess.run(
        [str(c) for c in cmd],
        input=input,
        capture_output=True,
        text=isinstance(input, str) or input is None,
        timeout=timeout,
        check=check,
        env=env,
        cwd=cwd,
    )


def free_port(host="127.0.0.1"):
    """A TCP port on host that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rindex(b")") + 2:].split()[0]
    return state not in (b"Z", b"X")


def proc_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a != b""]


def proc_uid(pid):
    """Real uid of pid, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children_of(ppid):
    """[(pid, cmdline)] of the live processes whose parent is ppid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if proc_ppid(pid) != ppid or not pid_alive(pid):
            continue
        cmd = proc_cmdline(pid)
        if cmd is not None:
            out.append((pid, cmd))
    return out


def stop_pid(proc_or_pid, term_timeout=10.0, sig=signal.SIGTERM):
    """Send sig to one pid we started, wait term_timeout, then SIGKILL.  Returns the exit code
    when proc_or_pid is a Popen (else None)."""
    if isinstance(proc_or_pid, subprocess.Popen):
        proc = proc_or_pid
        if proc.poll() is not None:
            return proc.returncode
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)
    pid = proc_or_pid
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + term_timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return None


def tail(path, max_bytes=20000):
    """The last max_bytes of a file as text ('' when missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if size > max_bytes:
        text = f"[... {size - max_bytes} bytes cut ...]\n" + text
    return text
