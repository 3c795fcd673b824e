#!/bin/bash
# Real Xen domain dumps: Debian 12's Xen 4.17 booted in QEMU (TCG) with the Debian 12 amd64
# kernel as PV dom0, which starts a small PV domU and then a PVH domU (same kernel) and takes
# of each (NAME = domu, domu-pvh)
#   NAME.save   `xl save -p` (xl header, libxl stream, libxc migration stream v2)
#   NAME.core   `xl dump-core` right after (ELF xc_core; PV: .xen_p2m, PVH: .xen_pfn)
# plus the guest's console (uname, /proc/kallsyms as gzip+base64) and xl's own logs.
#
# Usage (as root, Debian 12 x86_64 host): bash xen-dumps.sh
# Environment: OUT (default /work/evidence-build/xen-out), WORK (default
#   /work/evidence-build/xen), KVER (default 6.1.0-56-amd64), RAM (MiB, default 1024),
#   DOMU_MB (default 96), CPU_PIN (default 1), TMO (seconds, default 3600), XEN_CPU
#   (QEMU -cpu, default max,la57=off,-smap,-smep,-rdtscp), GUESTS (default domu,domu-pvh),
#   CORE_FIRST (1: dump-core of the paused guest, then xl save; default 0: xl save -p first).
# Time (2 shared cores, TCG): Xen + dom0 ~1 min, PV guest ~2 min, PVH guest ~6 min to boot;
# the PVH dump-core maps each of its ~1M guest frames (up to 4 GiB) one by one: ~30+ min.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/work/evidence-build/xen-out}
WORK=${WORK:-/work/evidence-build/xen}
KVER=${KVER:-6.1.0-56-amd64}
RAM=${RAM:-1024}
DOMU_MB=${DOMU_MB:-96}
CPU_PIN=${CPU_PIN:-1}
TMO=${TMO:-3600}
GUESTS=${GUESTS:-domu,domu-pvh}   # (QEMU's -initrd separates modules by commas: doubled)
XV=4.17
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
command -v qemu-system-x86_64 >/dev/null || apt-get install -y --no-install-recommends qemu-system-x86
command -v debugfs >/dev/null || apt-get install -y e2fsprogs
command -v depmod >/dev/null || apt-get install -y kmod

# ---- packages (unpacked, never installed on the host) ---------------------------------------
PKGS="xen-hypervisor-$XV-amd64 xen-utils-$XV xen-utils-common xenstore-utils libxenmisc$XV
libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenstore4 libxentoollog1
libxendevicemodel1 libxentoolcore1 libxenhypfs1 libyajl2 linux-image-$KVER-unsigned busybox-static"
mkdir -p "$WORK/debs"; cd "$WORK/debs"
for p in $PKGS; do ls "${p}_"*_amd64.deb >/dev/null 2>&1 || apt-get download "$p"; done
rm -rf "$WORK/root" "$WORK/kpkg"; mkdir -p "$WORK/root" "$WORK/kpkg"
for d in *.deb; do
  case $d in linux-image-*) dpkg -x "$d" "$WORK/kpkg" ;; *) dpkg -x "$d" "$WORK/root" ;; esac
done
depmod -b "$WORK/kpkg" "$KVER"
ROOT=$WORK/root; MOD=$WORK/kpkg/lib/modules/$KVER
zcat "$ROOT/boot/xen-$XV-amd64.gz" > "$WORK/xen.elf"     # ELF32 multiboot image
VMLINUZ=$WORK/kpkg/boot/vmlinuz-$KVER
LIBPATH=$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/xen-$XV/lib/x86_64-linux-gnu

# ---- initramfs images -----------------------------------------------------------------------
# copy_bin SRC STAGE DEST: a binary and its shared libraries (ldd, with the unpacked Xen
# libraries first in the search path; host libraries for the rest, same Debian release)
copy_bin() {
  local src=$1 st=$2 dst=$3 l
  mkdir -p "$st$(dirname "$dst")"; cp -L "$src" "$st$dst"
  for l in $(LD_LIBRARY_PATH=$LIBPATH ldd "$src" | awk '/=> \//{print $3} $1 ~ /^\//{print $1}'); do
    case $l in
      "$ROOT"/*) mkdir -p "$st$(dirname "${l#$ROOT}")"; cp -L "$l" "$st${l#$ROOT}" ;;
      *) mkdir -p "$st$(dirname "$l")"; cp -L "$l" "$st$l" ;;
    esac
  done
}
base_stage() {  # base_stage DIR INIT MODULE...
  local st=$1 init=$2 m f; shift 2
  rm -rf "$st"; mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,"lib/modules/$KVER"}
  cp "$ROOT/bin/busybox" "$st/bin/busybox"
  for a in $("$st/bin/busybox" --list-full); do [ -e "$st/$a" ] || ln -s /bin/busybox "$st/$a"; done
  : > "$st/etc/modules.order"
  for m in "$@"; do
    f=$(grep -E "(^|/)$m\.ko:" "$MOD/modules.dep" | cut -d: -f1 || true)
    [ -n "$f" ] || { grep -qE "/$m\.ko$" "$MOD/modules.builtin" && continue; log "module $m missing"; exit 1; }
    cp "$MOD/$f" "$st/lib/modules/$KVER/$m.ko"; echo "$m" >> "$st/etc/modules.order"
  done
  cp "$HERE/$init" "$st/init"; chmod 755 "$st/init"
}
cpio_gz() { (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -9); }
# domU: busybox only (hvc0 and xenbus are built into the kernel)
base_stage "$WORK/stage-domu" xen-domu-init.sh
cpio_gz "$WORK/stage-domu" > "$WORK/domu.cpio.gz"
# dom0: Xen tools, the Xen device modules, virtio + ext4 for the output disk, the domU payload
base_stage "$WORK/stage-dom0" xen-dom0-init.sh xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc \
  virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
  crc16 mbcache jbd2 crc32c_generic libcrc32c ext4
S=$WORK/stage-dom0
for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
  copy_bin "$ROOT/usr/lib/xen-$XV/bin/$b" "$S" "/usr/lib/xen-$XV/bin/$b"
done
for b in xenstore-write xenstore-read xenstore-ls; do
  [ -e "$ROOT/usr/bin/$b" ] && copy_bin "$ROOT/usr/bin/$b" "$S" "/usr/bin/$b"
done
# glibc dlopens libgcc_s for pthread_cancel (xl aborts without it; ldd does not list it)
mkdir -p "$S/lib/x86_64-linux-gnu"; cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$S/lib/x86_64-linux-gnu/"
mkdir -p "$S/etc/xen" "$S/boot" "$S/var/lib/xen" "$S/var/log/xen"
cp "$VMLINUZ" "$S/boot/vmlinuz"; cp "$WORK/domu.cpio.gz" "$S/boot/domu.cpio.gz"
cat > "$S/etc/xen/domu.cfg" <<EOF
name = "domu"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/domu.cpio.gz"
extra = "console=hvc0 loglevel=7"
memory = $DOMU_MB
maxmem = $DOMU_MB
vcpus = 1
on_crash = "preserve"
EOF
sed -e 's/^name = "domu"/name = "domu-pvh"/' -e 's/^type = "pv"/type = "pvh"/' \
  "$S/etc/xen/domu.cfg" > "$S/etc/xen/domu-pvh.cfg"
cp "$ROOT/etc/xen/xl.conf" "$S/etc/xen/xl.conf"
cpio_gz "$S" > "$WORK/dom0.cpio.gz"
ls -la "$WORK"/*.cpio.gz >&2

# ---- run ------------------------------------------------------------------------------------
R=$WORK/run; rm -rf "$R" "$OUT"; mkdir -p "$R" "$OUT"
mke2fs -q -F -t ext4 -O ^has_journal,^metadata_csum -L KDTXEN "$R/out.img" $(( DOMU_MB * 3 + 256 ))M
# Without -smap,-smep: Xen faults writing the exception bounce frame onto the PV dom0
# kernel's stack (a guest user page, PV kernels run in ring 3) in create_bounce_frame and
# crashes dom0 at its first exception ("#PF[0001] ... domain_crash_sync called from entry.S").
# Without -rdtscp: TCG's SVM has no NRIP save, Xen cannot work out the length of an
# intercepted RDTSCP ("SVM Insn len emulation failed") and the PVH guest loops on it.
XEN_CPU=${XEN_CPU:-max,la57=off,-smap,-smep,-rdtscp}
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1 loglvl=all guest_loglvl=all"
CMD=(nice -n 10 taskset -c "$CPU_PIN" timeout "$TMO" qemu-system-x86_64 -machine pc -accel tcg
  -cpu "$XEN_CPU" -m "$RAM" -smp 1
  -kernel "$WORK/xen.elf" -append "$XEN_ARGS"
  -initrd "$VMLINUZ console=hvc0 earlyprintk=xen kdt_guests=${GUESTS//,/,,} kdt_core_first=${CORE_FIRST:-0},$WORK/dom0.cpio.gz"
  -drive "file=$R/out.img,format=raw,if=virtio"
  -display none -serial "file:$R/serial.log" -monitor none -no-reboot)
echo "${CMD[*]}" > "$OUT/qemu-cmdline.txt"
log "running: ${CMD[*]}"
t0=$(date +%s)
set +e; "${CMD[@]}" > "$R/qemu.stdout" 2>&1; rc=$?; set -e
log "qemu exit status $rc after $(( $(date +%s) - t0 )) s"
cp "$R/serial.log" "$OUT/serial.log"
grep -q KDT-DOM0-DONE "$R/serial.log" || { log "dom0 did not finish"; tail -40 "$R/serial.log"; exit 1; }
rm -rf "$R/x"; mkdir -p "$R/x"
debugfs -R "rdump / $R/x" "$R/out.img" 2>/dev/null
cp -r "$R/x/." "$OUT/"
rm -f "$R/out.img"
ls -la "$OUT" >&2
