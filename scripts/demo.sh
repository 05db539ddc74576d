#!/bin/sh
# make demo: a real redis-server on a UNIX socket behind redoubt, with DEVELOPMENT
# certificates, in a scratch directory.  Ctrl-C stops everything this script started.
set -eu
BIN=${1:?usage: demo.sh PATH/TO/redoubt}
PORT=${REDOUBT_DEMO_PORT:-6380}
DIR=$(mktemp -d /tmp/redoubt-demo.XXXXXX)
chmod 0755 "$DIR"

if [ "$(id -u)" = 0 ]; then
	for u in redoubt redoubt-keyd; do
		id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
	done
fi

"$BIN" cert dev --dir "$DIR/tls" --name localhost --name 127.0.0.1 >/dev/null
mkdir -p "$DIR/audit"
if [ "$(id -u)" = 0 ]; then
	chgrp redoubt-keyd "$DIR/tls/node.key" && chmod 0640 "$DIR/tls/node.key"
	chown redoubt-keyd "$DIR/audit"
fi

redis-server --port 0 --unixsocket "$DIR/redis.sock" --unixsocketperm 777 --save "" \
	--appendonly no --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
i=0
while [ ! -s "$DIR/redis.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
REDIS_PID=$(cat "$DIR/redis.pid")

cat > "$DIR/redoubt.conf" <<CONF
; Demo configuration written by 'make demo'.  See docs/configuration.md.
[global]
workers = auto
control-socket = $DIR/control.sock
audit-log = $DIR/audit/audit.jsonl

[identity node]
cert = $DIR/tls/node.crt
key = $DIR/tls/node.key
ca = $DIR/tls/ca.crt

[listener clients]
listen = 127.0.0.1:$PORT
backend = unix:$DIR/redis.sock
identity = node
tls-mode = require
CONF

"$BIN" check-config -c "$DIR/redoubt.conf"
"$BIN" serve -c "$DIR/redoubt.conf" &
SERVE_PID=$!

cleanup() {
	trap - INT TERM EXIT
	kill "$SERVE_PID" 2>/dev/null || true
	wait "$SERVE_PID" 2>/dev/null || true
	kill "$REDIS_PID" 2>/dev/null || true
	echo
	echo "demo stopped; files left in $DIR (audit log: $DIR/audit/audit.jsonl)"
}
trap cleanup INT TERM EXIT

i=0
while ! redis-cli --tls --cacert "$DIR/tls/ca.crt" -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$SERVE_PID" 2>/dev/null; then
		echo "redoubt did not come up; see the messages above" >&2
		exit 1
	fi
	sleep 0.1
done

cat <<MSG

  redoubt is running: TLS on 127.0.0.1:$PORT -> redis-server on $DIR/redis.sock

  Connect:
    redis-cli --tls --cacert $DIR/tls/ca.crt -h 127.0.0.1 -p $PORT
  With a client certificate:
    redis-cli --tls --cacert $DIR/tls/ca.crt --cert $DIR/tls/client.crt \\
              --key $DIR/tls/client.key -h 127.0.0.1 -p $PORT
  Audit trail:
    $BIN audit show $DIR/audit/audit.jsonl

  !! These are DEVELOPMENT certificates: the CA key is in $DIR/tls. Never use them
  !! in production.  Press Ctrl-C to stop.

MSG
wait "$SERVE_PID"
