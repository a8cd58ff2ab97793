#!/bin/sh
# Build the Debian package of mvpn-client from an already built executable,
# with dpkg's own tools only (dpkg-deb, dpkg-shlibdeps; no debhelper, no
# fakeroot: --root-owner-group makes every file root:root).
#
#   packaging/build-deb.sh [BINARY [OUTDIR]]     default: dist/mvpn-client dist
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

# The version comes from the binary itself: it proves the binary runs without
# any environment (as it will under systemd) and that package and --version agree.
version=$(env -i "$bin" --version) || fail "$bin --version failed"
case "$version" in
[0-9]*) ;;
*) fail "unexpected version string from $bin: '$version'" ;;
esac
arch=$(dpkg --print-architecture)
maintainer=${MVPN_DEB_MAINTAINER:-mvpn maintainers <mvpn-maintainers@example.org>}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

work=${MVPN_DEB_WORKDIR:-$repo/build/deb}
root=$work/root
rm -rf "$work"
mkdir -p "$root/DEBIAN"
umask 022

# Payload.
install -D -m 0755 "$bin" "$root/usr/bin/mvpn-client"
install -D -m 0644 "$repo/systemd/mvpn-client.service" "$root/lib/systemd/system/mvpn-client.service"
install -D -m 0644 "$repo/systemd/mvpn-server.service" "$root/lib/systemd/system/mvpn-server.service"
install -D -m 0644 "$here/config.json.example" "$root/etc/mvpn-client/config.json.example"

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
"$here/gen-man.sh" "$bin" "$here/mvpn-client.1.in" "$version" "$date_day" > "$work/mvpn-client.1"
gzip -9n < "$work/mvpn-client.1" > "$root/usr/share/man/man1/mvpn-client.1.gz"
install -m 0644 "$here/debian/lintian-overrides" "$root/usr/share/lintian/overrides/mvpn-client"

# Control area.
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/conffiles"

# Shared libraries the embedded runtime links against, as dpkg computes them.
mkdir -p "$work/shlibs/debian"
printf 'Source: mvpn-client\n\nPackage: mvpn-client\nArchitecture: any\n' > "$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e "$root/usr/bin/mvpn-client" 2>"$work/shlibs.err") ||
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
