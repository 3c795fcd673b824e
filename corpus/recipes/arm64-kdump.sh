#!/bin/bash
# Real arm64 crash dumps of the Debian 12 arm64 kernel (4 KiB pages, 48-bit VA) under QEMU TCG.
#
# One boot of a small guest (qemu-system-aarch64 -machine virt, cortex-a72, 2 vCPUs) gives:
#   qemu-elf.vmcore        QEMU `dump-guest-memory` (format elf, no paging) of the running,
#                          stopped guest, with -device vmcoreinfo;
#   qemu-kdump-zlib.flat   the same, format kdump-zlib (QEMU 7.2 writes it flattened and with
#                          64 KiB blocks);
#   capture/vmcore.elf     /proc/vmcore of the capture kernel after the guest crashed itself
#                          (kexec -p + echo c > /proc/sysrq-trigger), copied with dd;
#   capture/*.kdump|.elf   Debian's arm64 makedumpfile 1.7.2 run inside the capture kernel;
#   guest-info/            the guest's uname, /proc/kallsyms (gz), VMCOREINFO, dmesg.
# Then samples for the repository are packed by pack-arm64.sh.
#
# Usage (as root, Debian 12 x86_64 host): bash arm64-kdump.sh
# Environment: OUT (default /work/evidence-build/arm64-out), WORK (default
#   /work/evidence-build/arm64), AKVER (default 6.1.0-56-arm64), RAM (MiB, default 384),
#   CK (crashkernel=, default 128M), CPU_PIN (default 1: the host core QEMU runs on).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/work/evidence-build/arm64-out}
WORK=${WORK:-/work/evidence-build/arm64}
AKVER=${AKVER:-6.1.0-56-arm64}
RAM=${RAM:-384}
CK=${CK:-128M}
CPU_PIN=${CPU_PIN:-1}
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

# ---- packages -------------------------------------------------------------------------------
command -v qemu-system-aarch64 >/dev/null || apt-get install -y --no-install-recommends qemu-system-arm
command -v qemu-aarch64-static >/dev/null || apt-get install -y --no-install-recommends qemu-user-static
command -v debugfs >/dev/null || apt-get install -y e2fsprogs
command -v depmod >/dev/null || apt-get install -y kmod
dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update; }
PKGS="linux-image-$AKVER-unsigned busybox-static kexec-tools makedumpfile libc6 zlib1g libdw1
libelf1 liblzo2-2 liblzma5 libbz2-1.0 libzstd1 libgcc-s1 libxenmisc4.17 libxentoollog1
libxencall1 libxenevtchn1 libxengnttab1 libxenforeignmemory1 libxendevicemodel1 libxentoolcore1"
mkdir -p "$WORK/debs"; cd "$WORK/debs"
for p in $PKGS; do
  ls "${p}_"*_arm64.deb >/dev/null 2>&1 || apt-get download "$p:arm64"
done
rm -rf "$WORK/kpkg" "$WORK/sysroot"; mkdir -p "$WORK/kpkg" "$WORK/sysroot"
dpkg -x linux-image-"$AKVER"-unsigned_*.deb "$WORK/kpkg"
for d in *.deb; do case $d in linux-image-*) ;; *) dpkg -x "$d" "$WORK/sysroot" ;; esac; done
depmod -b "$WORK/kpkg" "$AKVER"
SYS=$WORK/sysroot; MOD=$WORK/kpkg/lib/modules/$AKVER

# ---- initramfs ------------------------------------------------------------------------------
# copy_elf FILE DEST: a binary and, recursively, every shared library it needs (readelf NEEDED,
# looked up in the arm64 sysroot; the host cannot run ldd on arm64 binaries)
copy_elf() {
  local f=$1 st=$2 lib p
  mkdir -p "$st$(dirname "$f")"; cp -L "$SYS$f" "$st$f"
  for lib in $(readelf -d "$SYS$f" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
    p=
    for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
      [ -e "$SYS/$d/$lib" ] && { p=$d/$lib; break; }
    done
    [ -n "$p" ] || { log "library $lib (needed by $f) not in the sysroot"; exit 1; }
    [ -e "$st/$p" ] || copy_elf "/$p" "$st"
  done
}
build_stage() {  # build_stage DIR TOOL...
  local st=$1; shift
  rm -rf "$st"; mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,lib,"lib/modules/$AKVER"}
  cp "$SYS/bin/busybox" "$st/bin/busybox"
  for a in $(qemu-aarch64-static "$SYS/bin/busybox" --list-full); do
    [ -e "$st/$a" ] || ln -s /bin/busybox "$st/$a"
  done
  mkdir -p "$st/lib/aarch64-linux-gnu" "$st/usr/lib/aarch64-linux-gnu"
  cp -L "$SYS/lib/ld-linux-aarch64.so.1" "$st/lib/"
  for t in "$@"; do copy_elf "$t" "$st"; done
  : > "$st/etc/modules.order"
  for m in virtio_mmio virtio_blk qemu_fw_cfg crc16 mbcache jbd2 crc32c_generic libcrc32c ext4; do
    f=$(grep -E "(^|/)$m\.ko:" "$MOD/modules.dep" | cut -d: -f1)
    cp "$MOD/$f" "$st/lib/modules/$AKVER/$m.ko"; echo "$m" >> "$st/etc/modules.order"
  done
  cp "$HERE/arm64-init.sh" "$st/init"; chmod 755 "$st/init"
}
cpio_gz() { (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -9); }
build_stage "$WORK/stage-capture" /usr/bin/makedumpfile
cpio_gz "$WORK/stage-capture" > "$WORK/capture.cpio.gz"
build_stage "$WORK/stage-main" /usr/bin/makedumpfile /sbin/kexec
mkdir -p "$WORK/stage-main/boot"
cp "$WORK/kpkg/boot/vmlinuz-$AKVER" "$WORK/stage-main/boot/Image"   # arm64 vmlinuz = plain Image
cp "$WORK/capture.cpio.gz" "$WORK/stage-main/boot/capture.cpio.gz"
cpio_gz "$WORK/stage-main" > "$WORK/main.cpio.gz"
ls -la "$WORK"/*.cpio.gz >&2

# ---- guest run ------------------------------------------------------------------------------
R=$WORK/run; rm -rf "$R" "$OUT"; mkdir -p "$R" "$OUT"
mke2fs -q -F -t ext4 -O ^has_journal,^metadata_csum -L KDTOUT "$R/out.img" $(( RAM * 3 + 256 ))M
CMD=(nice -n 10 taskset -c "$CPU_PIN" timeout 3600 qemu-system-aarch64
  -machine virt,gic-version=3 -accel tcg,thread=multi -cpu cortex-a72 -m "$RAM" -smp 2
  -kernel "$WORK/kpkg/boot/vmlinuz-$AKVER" -initrd "$WORK/main.cpio.gz"
  -append "console=ttyAMA0 crashkernel=$CK corpus=crash corpus_wait=40 panic=5"
  -device vmcoreinfo
  -drive "file=$R/out.img,format=raw,if=none,id=d0" -device virtio-blk-device,drive=d0
  -display none -serial "file:$R/serial.log" -monitor none
  -qmp "unix:$R/qmp.sock,server=on,wait=off" -no-reboot)
echo "${CMD[*]}" > "$OUT/qemu-cmdline.txt"
log "running: ${CMD[*]}"
t0=$(date +%s)
"${CMD[@]}" > "$R/qemu.stdout" 2>&1 &
QPID=$!
until grep -q KDT-READY "$R/serial.log" 2>/dev/null; do
  sleep 1
  kill -0 $QPID 2>/dev/null || { log "qemu ended early"; tail -40 "$R/serial.log"; exit 1; }
  [ $(( $(date +%s) - t0 )) -lt 2400 ] || { log "timeout"; kill $QPID; exit 1; }
done
log "guest ready after $(( $(date +%s) - t0 )) s"
QMP="python3 $HERE/qmp.py $R/qmp.sock"
J=$OUT/qmp-log.jsonl
$QMP '{"execute":"stop"}' '{"execute":"query-version"}' >> "$J"
for spec in "qemu-elf.vmcore|elf" "qemu-kdump-zlib.flat|kdump-zlib"; do
  f=${spec%%|*}; fmt=${spec#*|}
  $QMP "{\"execute\":\"dump-guest-memory\",\"arguments\":{\"protocol\":\"file:$OUT/$f\",\"paging\":false,\"format\":\"$fmt\"}}" >> "$J"
done
$QMP '{"execute":"cont"}' >> "$J"
log "QEMU dumps taken; waiting for the crash and the capture kernel"
set +e; wait $QPID; rc=$?; set -e
log "qemu exit status $rc after $(( $(date +%s) - t0 )) s"
cp "$R/serial.log" "$OUT/serial.log"
grep -q KDT-CAPTURE-DONE "$R/serial.log" || { log "capture did not finish"; tail -40 "$R/serial.log"; exit 1; }
rm -rf "$R/x"; mkdir -p "$R/x"
debugfs -R "rdump / $R/x" "$R/out.img" 2>/dev/null
mv "$R/x/capture" "$R/x/guest-info" "$OUT/"
rm -f "$R/out.img"
cp "$WORK/kpkg/boot/config-$AKVER" "$OUT/"
ls -la "$OUT" "$OUT/capture" >&2
