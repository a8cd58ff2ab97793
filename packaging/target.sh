# Sourced by build-deb.sh and build-rpm.sh: which architecture the executable
# being packaged is for, and how to ask it for --version and --help.
#
#   target_setup BINARY WORKDIR   sets target_elf (x86_64|aarch64),
#                                 target_deb (amd64|arm64), target_foreign (0|1)
#                                 and run_bin, a path that answers --version
#                                 and --help for BINARY
#
# The architecture comes from the ELF header (e_machine), never from the
# build host: build.sh packages the linux-arm64 executable on x86-64.
#
# A foreign executable cannot run here: qemu-user could emulate it, but it
# links against its own architecture's C and C++ libraries, which this host
# does not have. Its --version and --help (the package version, the man
# page) then come from MVPN_TWIN, the host executable build.sh made from
# the same JavaScript bundle in the same build: both embed the same code, so
# both print the same. That the arm64 executable itself runs is proven by
# test/integration/arm64.test.ts, under qemu with an arm64 Debian root.

target_setup() {
	_bin=$1 _work=$2
	# e_machine: 2 bytes little-endian at offset 18 of an ELF64 header.
	_machine=$(od -An -tu2 -j18 -N2 "$_bin" | tr -d ' ')
	case $_machine in
	62) target_elf=x86_64 target_deb=amd64 ;;
	183) target_elf=aarch64 target_deb=arm64 ;;
	*) fail "$_bin is not an x86-64 or aarch64 executable (ELF machine '$_machine')" ;;
	esac
	target_foreign=0
	[ "$target_elf" = "$(uname -m)" ] || target_foreign=1
	_runs=$_bin
	if [ "$target_foreign" = 1 ]; then
		[ -n "${MVPN_TWIN:-}" ] && [ -x "$MVPN_TWIN" ] ||
			fail "$_bin is a $target_elf executable that cannot run here: set MVPN_TWIN to the $(uname -m) executable built from the same bundle (build.sh does)"
		_runs=$MVPN_TWIN
	fi
	mkdir -p "$_work"
	run_bin=$_work/run-target
	printf '#!/bin/sh\nexec '"'%s'"' "$@"\n' "$(readlink -f "$_runs")" > "$run_bin"
	chmod 0755 "$run_bin"
}
