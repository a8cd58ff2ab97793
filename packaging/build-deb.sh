#!/bin/sh
# Build the Debian package of mvpn-client from an already built executable,
# with dpkg's own tools only (dpkg-deb, dpkg-shlibdeps; no debhelper, no
# fakeroot: --root-owner-group makes every file root:root).
#
#   packaging/build-deb.sh [BINARY [OUTDIR]]     default: dist/mvpn-client dist
#
# The package's architecture is the executable's (amd64 or arm64, see
# target.sh); a foreign one is run under qemu-user for --version and the man page.
#
# Prints the path of the .deb on stdout. Environment:
#   MVPN_DEB_MAINTAINER  Maintainer field (default below)
#   MVPN_DEB_HOMEPAGE    Homepage field (omitted when unset)
#   SOURCE_DATE_EPOCH    timestamps in the package (default: last commit)
#   MVPN_LINTIAN=0       skip lintian even when it is installed
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=${1:-$repo/dist/mvpn-client}
outdir=${2:-$repo/dist}
node=${NODE:-$repo/node_modules/.bin/node}

fail() { printf 'build-deb: %s\n' "$*" >&2; exit 1; }
say() { printf 'build-deb: %s\n' "$*" >&2; }

[ -x "$bin" ] || fail "no executable at $bin (run ./build.sh first)"
for tool in dpkg-deb dpkg-shlibdeps gzip; do
	command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing: apt-get install dpkg-dev"
done
[ -x "$node" ] || fail "no Node.js runtime at $node to generate the copyright file (run npm ci)"
work=${MVPN_DEB_WORKDIR:-$repo/build/deb}
rm -rf "$work"
# shellcheck source=packaging/target.sh
. "$here/target.sh"
target_setup "$bin" "$work"

# The version comes from the binary itself: it proves the binary runs without
# any environment (as it will under systemd) and that package and --version agree.
version=$(env -i "$run_bin" --version) || fail "$bin --version failed"
case "$version" in
[0-9]*) ;;
*) fail "unexpected version string from $bin: '$version'" ;;
esac
arch=$target_deb
maintainer=${MVPN_DEB_MAINTAINER:-mvpn maintainers <mvpn-maintainers@example.org>}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

root=$work/root
mkdir -p "$root/DEBIAN"
umask 022

# Payload.
install -D -m 0755 "$bin" "$root/usr/bin/mvpn-client"
install -D -m 0644 "$repo/systemd/mvpn-client.service" "$root/lib/systemd/system/mvpn-client.service"
install -D -m 0644 "$repo/systemd/mvpn-server.service" "$root/lib/systemd/system/mvpn-server.service"
install -D -m 0644 "$here/config.json.example" "$root/etc/mvpn-client/config.json.example"
# Alerting rules for the operator's Prometheus (rule_files); not under doc/, which minimal systems drop.
install -D -m 0644 "$here/mvpn-alerts.yml" "$root/usr/share/mvpn-client/prometheus/mvpn-alerts.yml"

doc=$root/usr/share/doc/mvpn-client
mkdir -p "$doc" "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides"
"$node" "$here/gen-copyright.mjs" "$repo" > "$doc/copyright"
date_rfc=$(date -u -d "@$SOURCE_DATE_EPOCH" -R)
date_day=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
cat > "$work/changelog" <<EOF
mvpn-client ($version) unstable; urgency=medium

  * Release $version, built from the mvpn repository.

 -- $maintainer  $date_rfc
EOF
gzip -9n < "$work/changelog" > "$doc/changelog.gz"
"$here/gen-man.sh" "$run_bin" "$here/mvpn-client.1.in" "$version" "$date_day" > "$work/mvpn-client.1"
gzip -9n < "$work/mvpn-client.1" > "$root/usr/share/man/man1/mvpn-client.1.gz"
install -m 0644 "$here/debian/lintian-overrides" "$root/usr/share/lintian/overrides/mvpn-client"

# Control area.
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/conffiles"

# Shared libraries the embedded runtime links against, as dpkg computes them.
# dpkg-shlibdeps can only resolve libraries of this machine's architecture.
# For a foreign executable it reads the host's pinned runtime (node_modules/.bin/node, never $NODE) instead: the
# same Node.js release, built by the same toolchain against the same glibc
# baseline. That stand-in is only used after checking it needs the same
# libraries and no older symbol version of any of them than the target does.
shlibs_of=$root/usr/bin/mvpn-client
if [ "$target_foreign" = 1 ]; then
	host_rt=$(readlink -f "$repo/node_modules/.bin/node")
	needs() { readelf -d -V -W "$1" | sed -n -e 's/.*(NEEDED).*\[\(.*\)\]/\1/p' -e 's/.*Name: \([A-Z]*_[0-9.]*\).*/\1/p' | grep -v '^ld-linux' | LC_ALL=C sort -u; }
	newest() { needs "$1" | sed -n "s/^$2_//p" | sort -V | tail -n 1; }
	[ "$(needs "$bin" | grep -v '_')" = "$(needs "$host_rt" | grep -v '_')" ] ||
		fail "$bin needs other shared libraries than the host runtime $host_rt, so its dependencies cannot be derived from it"
	for v in GLIBC GLIBCXX CXXABI; do
		t=$(newest "$bin" "$v") h=$(newest "$host_rt" "$v")
		[ "$(printf '%s\n%s\n' "$t" "$h" | sort -V | tail -n 1)" = "$h" ] ||
			fail "$bin needs ${v}_$t, newer than the host runtime's ${v}_$h: its dependencies cannot be derived from the host runtime"
	done
	shlibs_of=$host_rt
fi
mkdir -p "$work/shlibs/debian"
printf 'Source: mvpn-client\n\nPackage: mvpn-client\nArchitecture: any\n' > "$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e "$shlibs_of" 2>"$work/shlibs.err") ||
	fail "dpkg-shlibdeps failed: $(cat "$work/shlibs.err")"
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || fail "dpkg-shlibdeps found no shared library dependencies"

installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@MAINTAINER@/$maintainer/" \
	-e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@SHLIBS_DEPENDS@/$shlibs/" \
	"$here/debian/control.in" > "$root/DEBIAN/control"
if [ -n "${MVPN_DEB_HOMEPAGE:-}" ]; then
	sed -i "s|@HOMEPAGE@|$MVPN_DEB_HOMEPAGE|" "$root/DEBIAN/control"
else
	sed -i '/^Homepage: @HOMEPAGE@$/d' "$root/DEBIAN/control"
fi
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"

mkdir -p "$outdir"
deb=$outdir/mvpn-client_${version}_${arch}.deb
rm -f "$deb.tmp"
dpkg-deb --root-owner-group -Zxz -z2 --build "$root" "$deb.tmp" >/dev/null || fail "dpkg-deb --build failed"
mv -f "$deb.tmp" "$deb"

if [ "${MVPN_LINTIAN:-1}" != 0 ] && command -v lintian >/dev/null 2>&1; then
	# Errors fail the build; warnings and notes are shown for whoever builds.
	if ! lintian --fail-on error "$deb" >"$work/lintian.txt" 2>&1; then
		cat "$work/lintian.txt" >&2
		fail "lintian found errors in $deb"
	fi
	sed -i "/running with root privileges/d" "$work/lintian.txt"
	if [ -s "$work/lintian.txt" ]; then sed 's/^/build-deb: lintian: /' "$work/lintian.txt" >&2; fi
fi

say "$deb ($(du -h "$deb" | cut -f1))"
printf '%s\n' "$deb"
