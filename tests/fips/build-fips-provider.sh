#!/bin/bash
# Builds OpenSSL's FIPS provider (providers/fips.so only) from Debian's own openssl source
# package of the installed 3.0 series, runs `openssl fipsinstall` for this machine, and caches
# the result for the tests:
#
#   $REDOUBT_FIPS_CACHE (default /var/cache/redoubt-test/fips)/fips.so
#                                                             /fipsmodule.cnf
#                                                             /openssl-fips.cnf   (fips + base)
#                                                             /version
#
# The system's apt configuration is not changed: the deb-src index lives in a private apt
# directory next to the cache.  Every step is bounded in time (REDOUBT_FIPS_BUILD_TIMEOUT,
# default 360 s in total).  Exit status: 0 built or cached; 77 unavailable (no source, no
# network, no compiler, too slow: the message says which); anything else is a bug.
#
# This is a FIPS-*capable* build for tests.  It is not a validated module: see docs/fips.md.
set -euo pipefail

CACHE=${REDOUBT_FIPS_CACHE:-/var/cache/redoubt-test/fips}
BUDGET=${REDOUBT_FIPS_BUILD_TIMEOUT:-360}
START=$(date +%s)
SKIP=77

skip() { echo "build-fips-provider: SKIP: $*" >&2; exit $SKIP; }
left() { local l=$(( BUDGET - ($(date +%s) - START) )); (( l > 5 )) || skip "time budget of ${BUDGET}s used up"; echo "$l"; }

# The cache is valid when fipsinstall's output matches this machine's openssl and the module.
if [[ -f $CACHE/fips.so && -f $CACHE/fipsmodule.cnf && -f $CACHE/openssl-fips.cnf ]] &&
   OPENSSL_CONF=$CACHE/openssl-fips.cnf timeout 20 openssl list -providers 2>/dev/null |
   grep -q 'OpenSSL FIPS Provider'; then
	echo "build-fips-provider: cached in $CACHE ($(cat "$CACHE/version" 2>/dev/null))"
	exit 0
fi

for tool in apt-get dpkg-source make cc perl; do
	command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install build-essential dpkg-dev perl)"
done

series=$(openssl version | awk '{print $2}' | cut -d. -f1,2)
[[ $series == 3.0 ]] || skip "installed OpenSSL is $series, this script builds the 3.0 series"

WORK=$CACHE.work
APTDIR=$CACHE.apt
rm -rf "$WORK"
mkdir -p "$CACHE" "$WORK" "$APTDIR/lists/partial" "$APTDIR/sources.list.d" "$APTDIR/cache/archives/partial"

# deb-src stanzas from the system's deb822 sources (the same mirrors and suites).
eval "$(apt-config shell D Dir::Etc::sourceparts/d)"
found=0
for f in "$D"/*.sources; do
	[[ -f $f ]] || continue
	sed 's/^Types: deb$/Types: deb-src/' "$f" > "$APTDIR/sources.list.d/$(basename "$f")"
	found=1
done
[[ $found == 1 ]] || skip "no deb822 sources in $D to derive deb-src entries from"
APT=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$APTDIR/sources.list.d"
     -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
     -o "APT::Sandbox::User=root" -o "Acquire::Retries=1" -o "Acquire::http::Timeout=20")

timeout "$(left)" apt-get "${APT[@]}" -qq update >"$WORK/apt-update.log" 2>&1 ||
	skip "apt-get update of the deb-src index failed (no network?): $(tail -1 "$WORK/apt-update.log")"
mapfile -t versions < <(apt-cache "${APT[@]}" showsrc openssl 2>/dev/null |
	awk '/^Version: 3\.0\./ {print $2}' | sort -V -r -u)
(( ${#versions[@]} > 0 )) || skip "no openssl 3.0 source package in the deb-src index"

# Newest first; some .dsc files of security updates are not on the mirror (404): next one.
cd "$WORK"
got=
for v in "${versions[@]}"; do
	if timeout "$(left)" apt-get "${APT[@]}" -qq source --only-source "openssl=$v" \
	    >"$WORK/source-$v.log" 2>&1; then
		got=$v
		break
	fi
	rm -rf "$WORK"/openssl-*/
done
[[ -n $got ]] || skip "apt-get source openssl failed for ${versions[*]}"
src=$(find "$WORK" -maxdepth 1 -type d -name 'openssl-3.0.*' | head -1)
[[ -n $src ]] || skip "openssl source tree not found after apt-get source"
cd "$src"

timeout "$(left)" ./Configure linux-x86_64 enable-fips shared no-tests >"$WORK/configure.log" 2>&1 ||
	skip "Configure failed: $(tail -1 "$WORK/configure.log")"
timeout "$(left)" make -j2 build_generated >"$WORK/gen.log" 2>&1 ||
	skip "make build_generated failed or took too long: $(tail -1 "$WORK/gen.log")"
timeout "$(left)" make -j2 providers/fips.so >"$WORK/make.log" 2>&1 ||
	skip "make providers/fips.so failed or took too long: $(tail -1 "$WORK/make.log")"

install -m 0644 providers/fips.so "$CACHE/fips.so"
# fipsinstall runs the self-tests and writes this machine's module MAC (the Security Policy
# wants it run on each target; a cached file is only ever this machine's own).
timeout 60 openssl fipsinstall -module "$CACHE/fips.so" -out "$CACHE/fipsmodule.cnf" \
    >"$WORK/fipsinstall.log" 2>&1 || skip "openssl fipsinstall failed: $(tail -1 "$WORK/fipsinstall.log")"
cat > "$CACHE/openssl-fips.cnf" <<EOF
config_diagnostics = 1
openssl_conf = openssl_init

.include $CACHE/fipsmodule.cnf

[fips_sect]
module = $CACHE/fips.so

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
fips = fips_sect
base = base_sect

[base_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes
EOF
echo "$got" > "$CACHE/version"
rm -rf "$WORK"
echo "build-fips-provider: built from Debian openssl $got in $(( $(date +%s) - START ))s: $CACHE"
