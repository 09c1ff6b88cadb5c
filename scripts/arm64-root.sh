#!/usr/bin/env bash
# The ARM64 emulation root for `fat-export --arm64` (README, "ARM64 kernels under emulation"): Debian's arm64
# python3.11 and its libraries unpacked (no chroot, no maintainer scripts), the aarch64 wheels of the runtimes pinned
# in arm64-requirements.txt, and an ARM /proc/cpuinfo (qemu-user shows the host's x86 one otherwise, and the
# aarch64 onnxruntime segfaults reading it). Packages by name from Debian and PyPI; nothing else is downloaded.
# Usage: scripts/arm64-root.sh ROOT PIP   (needs root and apt: it installs qemu-user-static and adds arm64)
set -euo pipefail
root=$1
pip=$2
here=$(cd "$(dirname "$0")/.." && pwd)
stamp="$root/.complete-$(sha256sum "$here/arm64-requirements.txt" "$0" | sha256sum | cut -c1-16)"
[ -e "$stamp" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    echo "arm64-root: skipped (needs root and apt-get); fat-export --arm64 and its tests need it" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
command -v qemu-aarch64-static > /dev/null || { apt-get update -qq && apt-get install -y -qq qemu-user-static > /dev/null; }
dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && apt-get update -qq; }
rm -rf "$root" && mkdir -p "$root/debs" "$root/proc"
packages="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g libexpat1
          libffi8 libssl3 libbz2-1.0 liblzma5 libcrypt1 libuuid1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8
          libtirpc3 libnsl2 libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1"
(cd "$root/debs" && apt-get download -qq $(for p in $packages; do echo "$p:arm64"; done) 2> /dev/null)
for deb in "$root"/debs/*.deb; do dpkg -x "$deb" "$root"; done
rm -rf "$root/debs"
# Cortex-A76 (Armv8.2-A: fp16 arithmetic, dot product), the CPU emulated by fat-export --arm64 (-cpu cortex-a76).
cat > "$root/proc/cpuinfo" <<'CPU'
processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

CPU
"$pip" install -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    --target "$root/site" -r "$here/arm64-requirements.txt"
touch "$stamp"
