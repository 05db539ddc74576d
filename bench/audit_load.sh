#!/bin/sh
# Does audit load slow the relay path?  (issue 6: "2,000 handshakes per second of audit load
# do not slow the relay path".)  One redoubt (1 worker, keyd signing) in front of
# redis-server on a UNIX socket, server side on CPU 0.  The relay is measured with
# redis-benchmark GET -P 1 -c 50 alone, then again while `openssl s_time -new` processes
# (CPU 1) make full handshakes, each one three audit records.  AUDIT=on (default) or off:
# run both and compare the "under handshakes" lines — the difference is what the audit trail
# costs; the rest is the handshakes themselves sharing the one server core.  Bounded: ~45 s.
set -eu
BIN=${1:?usage: audit_load.sh PATH/TO/redoubt}
N=${AUDIT_LOAD_REQUESTS:-200000}
SECS=${AUDIT_LOAD_SECONDS:-12}
CLIENTS=${AUDIT_LOAD_HANDSHAKERS:-3}
# -reuse: TLS 1.3 resumption, so the one client core can open >= 2,000 connections/s; each
# connection makes the same three audit records as a full handshake.  -new: full handshakes.
STIME_MODE=${AUDIT_LOAD_STIME:--reuse}
AUDIT=${AUDIT:-on}
DIR=$(mktemp -d /tmp/redoubt-auditload.XXXXXX)
if [ "$AUDIT" = on ]; then AUDIT_PATH=$DIR/audit/audit.jsonl; else AUDIT_PATH=none; fi
chmod 0755 "$DIR"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${AUDIT_LOAD_KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

"$BIN" cert dev --dir "$DIR/tls" >/dev/null 2>&1
chgrp redoubt-keyd "$DIR/tls/node.key" && chmod 0640 "$DIR/tls/node.key"
mkdir "$DIR/audit" && chown redoubt-keyd "$DIR/audit"
taskset -c 0 redis-server --port 0 --unixsocket "$DIR/redis.sock" --unixsocketperm 777 \
	--save "" --appendonly no --daemonize no --logfile "$DIR/redis.log" &
PIDS="$PIDS $!"
cat > "$DIR/redoubt.conf" <<CONF
[global]
workers = 1
control-socket = $DIR/control.sock
audit-log = $AUDIT_PATH
log-level = warning
[identity node]
cert = $DIR/tls/node.crt
key = $DIR/tls/node.key
[listener bench]
listen = 127.0.0.1:$PORT
backend = unix:$DIR/redis.sock
identity = node
tls-mode = require
CONF
sleep 0.5
taskset -c 0 "$BIN" serve -c "$DIR/redoubt.conf" 2>"$DIR/redoubt.log" &
SERVE_PID=$!
PIDS="$PIDS $SERVE_PID"
i=0
until redis-cli --tls --cacert "$DIR/tls/ca.crt" -p "$PORT" ping >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat "$DIR/redoubt.log"; exit 1; }; sleep 0.1
done

relay() {
	taskset -c 1 redis-benchmark --tls --cacert "$DIR/tls/ca.crt" -h 127.0.0.1 -p "$PORT" \
		-n "$N" -c 50 -P 1 -t get --csv 2>/dev/null | tail -1
}
records() { if [ "$AUDIT" = on ]; then wc -l < "$DIR/audit/audit.jsonl"; else echo 0; fi; }
# CPU ticks (user + system) of redoubt's whole process tree: what the audit trail costs shows
# up here, whoever (worker, keyd) pays it.
tree_ticks() {
	t=0
	for p in $SERVE_PID $(pgrep -P "$SERVE_PID"); do
		set -- $(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null)
		[ $# -ge 13 ] && t=$((t + ${12} + ${13}))
	done
	echo $t
}

echo "relay alone:            $(relay)"
r0=$(records)
c0=$(tree_ticks)
t0=$(date +%s.%N)
STPIDS=""
for c in $(seq "$CLIENTS"); do
	taskset -c 1 timeout $((SECS + 5)) openssl s_time -connect "127.0.0.1:$PORT" "$STIME_MODE" \
		-time "$SECS" -CAfile "$DIR/tls/ca.crt" > "$DIR/stime.$c" 2>&1 &
	STPIDS="$STPIDS $!"
done
PIDS="$PIDS $STPIDS"
sleep 1
# AUDIT_LOAD_RELAY=0: connections only, so the CPU figure is the connections' own cost.
if [ "${AUDIT_LOAD_RELAY:-1}" = 1 ]; then
	echo "relay under handshakes: $(relay)"
fi
for p in $STPIDS; do wait "$p" || true; done
t1=$(date +%s.%N)
c1=$(tree_ticks)
r1=$(records)
conns=$(cat "$DIR"/stime.* | awk '/connections in .* real seconds/ { n += $1 } END { print n + 0 }')
HZ=$(getconf CLK_TCK)
awk -v c="$conns" -v s="$((SECS + 1))" -v r="$((r1 - r0))" -v t0="$t0" -v t1="$t1" \
    -v cpu="$((c1 - c0))" -v hz="$HZ" -v relay="${AUDIT_LOAD_RELAY:-1}" 'BEGIN {
	printf "connections (handshakes): %d in %d s = %.0f/s; audit records written: %d = %.0f/s\n",
	    c, s, c / s, r, r / (t1 - t0)
	printf "redoubt CPU (keyd + worker + supervisor) over the phase: %.2f s = %.0f us per connection%s\n",
	    cpu / hz, c ? cpu / hz * 1e6 / c : 0, relay ? " (relay included)" : "" }'
echo "audit: $AUDIT"
[ "$AUDIT" != on ] || "$BIN" audit verify "$DIR/audit/audit.jsonl" >/dev/null && echo "audit verify: intact"
