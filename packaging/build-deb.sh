#!/bin/sh
# `make deb`: builds the Debian binary packages from the working tree.
#
# debian/ lives in packaging/debian/, not at the top of the source tree, so this copies the
# sources that the build uses, plus packaging/debian as debian/, into
# build/deb/redoubt-VERSION/ and runs `dpkg-buildpackage -us -uc -b` there.  The packages,
# .changes, .buildinfo and the build log (for blhc) end up in build/deb/.
set -eu

top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
version="$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)"
out="$top/build/deb"
tree="$out/redoubt-$version"

# What the package build reads: the Makefile, the C sources, the documentation.
SOURCES="Makefile common ipc policy keyd worker audit cli docs"
OPTIONAL="README.md SECURITY.md"

missing=""
for p in debhelper dpkg-dev pkg-config libssl-dev libseccomp-dev libcap-dev libtss2-dev \
    libinih-dev libjansson-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deb: missing build dependencies:$missing (install them with apt-get)" >&2
		exit 1
	fi
	echo "deb: installing$missing"
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
		--no-install-recommends $missing
fi

rm -rf "$tree"
rm -f "$out"/redoubt_* "$out"/redoubt-dbgsym_* "$out"/build.log
mkdir -p "$tree"
for p in $SOURCES; do
	cp -a "$p" "$tree/"
done
for p in $OPTIONAL; do
	[ -e "$p" ] && cp -a "$p" "$tree/"
done
cp -a packaging/debian "$tree/debian"
# Nothing built in the working tree may leak into the package build.
find "$tree" \( -name '*.o' -o -name '*.d' -o -name '*.a' -o -name '__pycache__' \) -prune \
	-exec rm -rf {} +

cd "$tree"
echo "deb: building redoubt $version in $tree"
status=0
DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
	dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1 || status=$?
if [ "$status" != 0 ]; then
	tail -n 40 "$out/build.log" >&2
	echo "deb: dpkg-buildpackage failed (exit $status); full log: $out/build.log" >&2
	exit "$status"
fi
cd "$out"
ls -1 redoubt_*.deb redoubt-dbgsym_* redoubt_*.changes 2>/dev/null | sed 's|^|deb: built build/deb/|'
