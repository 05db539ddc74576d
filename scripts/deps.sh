#!/bin/sh
# Installs what building, testing and the demo need, from Debian 12's archive, when missing.
set -eu
PKGS="build-essential pkg-config libssl-dev libseccomp-dev libcap-dev libtss2-dev
 libinih-dev libjansson-dev libcmocka-dev openssl redis-server redis-tools python3
 python3-redis python3-pytest iproute2 nftables tcpdump procps psmisc util-linux
 swtpm dpkg-dev cppcheck clang-tidy valgrind"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing" >&2
	echo "deps: run 'sudo make deps' or install them with apt-get" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
