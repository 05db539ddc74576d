#!/bin/bash
# bench/run.sh [REDOUBT_BINARY] — side-by-side TLS benchmark of redoubt against plaintext
# redis-server, Redis' own TLS, HAProxy, hitch and stunnel, on loopback (issue 10).
# `make bench` calls it with build/redoubt. Without a working binary the redoubt setups are
# skipped and everything else runs. Writes bench/results/<date>.json (+ .png) and, in full
# mode, docs/benchmarks.md. BENCH_QUICK=1 for a ~2 minute run; see bench/README.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
redoubt=${1:-}

if [ "$(id -u)" != 0 ]; then
	echo "bench: must run as root (it starts redoubt as root, creates its users," >&2
	echo "bench: pins processes and raises RLIMIT_NOFILE); try: sudo $0 $*" >&2
	exit 1
fi

# Packages the harness needs, installed from Debian 12's archive when missing.
PKGS="redis-server redis-tools stunnel4 haproxy hitch gnuplot-nox python3 jq procps util-linux openssl"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "bench: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
fi
# The Debian packages start their own daemons on the default ports; we use other ports and
# leave those services alone.

# System users of redoubt (see docs): worker and keyd run under their own accounts.
if [ -n "$redoubt" ] && [ -x "$redoubt" ]; then
	for u in redoubt redoubt-keyd; do
		getent passwd "$u" >/dev/null ||
			useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
	done
fi

# 10,000 idle TLS connections: 10,000 client sockets, 20,000 in a proxy (client + backend).
ulimit -Hn 262144 2>/dev/null || true
ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 30000 ]; then
	echo "bench: warning: RLIMIT_NOFILE is $(ulimit -n); the 10,000-connection memory step is lowered to what fits" >&2
fi

# The harness itself stays off the server CPU (0); it starts the servers pinned to CPU 0
# and the clients pinned to CPU 1.
pin=""
if [ "$(nproc --all)" -ge 2 ]; then
	pin="taskset -c 1"
fi

# Run the harness in the background so that this shell can forward a signal to it; the
# harness then stops, by pid, every process it started.
# shellcheck disable=SC2086
$pin /usr/bin/python3 "$here/bench.py" "$redoubt" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
status=0
wait "$pid" || status=$?
# A signal interrupts `wait`; wait again for the harness to finish its cleanup.
while kill -0 "$pid" 2>/dev/null; do
	wait "$pid" || status=$?
done
exit "$status"
