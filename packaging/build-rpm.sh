#!/bin/sh
# Build the RPM of mvpn-client from an already built executable with
# rpmbuild (Debian's `rpm` package); see rpm/mvpn-client.spec.in.
#
#   packaging/build-rpm.sh [BINARY [OUTDIR]]     default: dist/mvpn-client dist
#
# Prints the path of the .rpm on stdout. Reuses the man page and copyright
# file build-deb.sh made when they are there (MVPN_DEB_WORKDIR), else makes them.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=${1:-$repo/dist/mvpn-client}
outdir=${2:-$repo/dist}
node=${NODE:-$repo/node_modules/.bin/node}

fail() { printf 'build-rpm: %s\n' "$*" >&2; exit 1; }
say() { printf 'build-rpm: %s\n' "$*" >&2; }

[ -x "$bin" ] || fail "no executable at $bin (run ./build.sh first)"
command -v rpmbuild >/dev/null 2>&1 || fail "rpmbuild is missing: apt-get install rpm"
work=${MVPN_RPM_WORKDIR:-$repo/build/rpm}
rm -rf "$work"
# The package's architecture is the executable's (x86_64 or aarch64), see target.sh.
# shellcheck source=packaging/target.sh
. "$here/target.sh"
target_setup "$bin" "$work"
arch=$target_elf
version=$(env -i "$run_bin" --version) || fail "$bin --version failed"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

mkdir -p "$work/SOURCES" "$work/SPECS" "$work/BUILD" "$work/RPMS" "$work/tmp"
umask 022

src=$work/SOURCES
cp "$bin" "$src/mvpn-client"
cp "$repo/systemd/mvpn-client.service" "$repo/systemd/mvpn-server.service" "$here/config.json.example" "$here/mvpn-alerts.yml" "$src/"
"$node" "$here/gen-copyright.mjs" "$repo" > "$src/copyright"
"$here/gen-man.sh" "$run_bin" "$here/mvpn-client.1.in" "$version" "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" | gzip -9n > "$src/mvpn-client.1.gz"
# RPM versions may not contain "-"; a pre-release like 1.0.0-rc.1 becomes 1.0.0~rc.1.
rpm_version=$(printf '%s' "$version" | tr '-' '~')
sed -e "s/@VERSION@/$rpm_version/" -e "s/@ARCH@/$arch/" "$here/rpm/mvpn-client.spec.in" > "$work/SPECS/mvpn-client.spec"
# rpmbuild refuses a BuildArch this machine cannot build for; a prebuilt
# foreign executable needs none: --target alone names the package's architecture.
if [ "$target_foreign" = 1 ]; then sed -i '/^BuildArch:/d' "$work/SPECS/mvpn-client.spec"; fi

rpmbuild -bb --quiet \
	--define "_topdir $work" --define "_tmppath $work/tmp" \
	--define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
	--target "$arch" "$work/SPECS/mvpn-client.spec" >"$work/rpmbuild.log" 2>&1 ||
	{ cat "$work/rpmbuild.log" >&2; fail "rpmbuild failed"; }
built=$(find "$work/RPMS" -name '*.rpm' | head -n 1)
[ -n "$built" ] || fail "rpmbuild made no package"
mkdir -p "$outdir"
rpm_out=$outdir/$(basename "$built")
mv -f "$built" "$rpm_out"
say "$rpm_out ($(du -h "$rpm_out" | cut -f1))"
printf '%s\n' "$rpm_out"
