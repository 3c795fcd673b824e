#!/bin/sh
# /init of the arm64 sample guest (busybox, Debian arm64 kernel).  Used by arm64-kdump.sh.
#
# corpus=crash   first kernel: small known workload, `kexec -p` of the capture kernel, the
#                guest's own facts (uname, /proc/kallsyms, VMCOREINFO, dmesg) saved to the
#                disk labelled KDTOUT, free memory filled once with marker text and freed,
#                then "KDT-READY" on the console.  The host stops the VM and takes its QEMU
#                dumps; after corpus_wait seconds of guest time the guest crashes itself
#                (echo c > /proc/sysrq-trigger) and the capture kernel boots.
# corpus=capture capture kernel: copies /proc/vmcore, runs makedumpfile on it, powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /mnt/out /mnt/work /run
mount -t tmpfs tmpfs /tmp
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
MODE=$(arg corpus)
WAIT=$(arg corpus_wait); WAIT=${WAIT:-40}
KVER=$(uname -r)
say() { echo "[kdt-init $MODE] $*"; }
say "kernel $KVER $(uname -v) cmdline: $(cat /proc/cmdline)"
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$KVER/$m.ko" 2>/dev/null && say "insmod $m ok" || say "insmod $m FAILED"
done
i=0; while [ $i -lt 50 ] && ! ls /dev/vd? >/dev/null 2>&1; do sleep 0.2; i=$((i+1)); done
OUTDEV=$(findfs LABEL=KDTOUT 2>/dev/null || true)
say "out disk: ${OUTDEV:-none}"
finish() { sync; say "powering off"; sleep 1; poweroff -f; sleep 10; echo o > /proc/sysrq-trigger; }

# Known content: tmpfs text (shmem), a user process holding text in its heap.
workload() {
  mkdir -p /mnt/tmpfs; mount -t tmpfs -o size=32m tmpfs /mnt/tmpfs
  yes "KDT-ARM64-TMPFS-MARKER-0123456789abcdef" | head -c 4194304 > /mnt/tmpfs/marker.txt
  head -c 1048576 /dev/zero > /mnt/tmpfs/zero.bin
  sh -c 'X=$(yes KDT-ARM64-USER-MARKER | head -c 2000000); touch /tmp/user.done; while :; do sleep 100000; done' &
  i=0; while [ $i -lt 120 ] && ! [ -e /tmp/user.done ]; do sleep 1; i=$((i+1)); done
  say "workload ready"; free
}

save_info() {
  [ -n "$OUTDEV" ] || return 0
  mount -t ext4 "$OUTDEV" /mnt/out || return 0
  D=/mnt/out/guest-info; mkdir -p $D
  uname -r > $D/uname-r.txt; uname -a > $D/uname-a.txt
  cat /proc/cmdline > $D/cmdline.txt; cat /proc/iomem > $D/iomem.txt
  cat /proc/meminfo > $D/meminfo.txt
  cat /sys/kernel/vmcoreinfo > $D/sys-kernel-vmcoreinfo.txt 2>/dev/null
  gzip -c /proc/kallsyms > $D/kallsyms.gz
  dmesg > $D/dmesg-precrash.txt
  sync; umount /mnt/out
}

# Free pages hold marker text instead of stale data: drop what is no longer needed, fill
# all but 8 MiB of MemFree with text in a tmpfs file, delete it.
fill_free() {
  rm -rf /boot /lib/modules /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu /sbin/kexec \
         /usr/bin/makedumpfile
  free_kb=$(awk '/^MemFree:/{print $2}' /proc/meminfo); n_kb=$(( free_kb - 8192 ))
  if [ $n_kb -gt 0 ]; then
    mkdir -p /mnt/fill; mount -t tmpfs -o size=$(( n_kb + 1024 ))k tmpfs /mnt/fill
    yes "KDT-ARM64-FREED-MARKER-5a5a5a5a" | head -c $(( n_kb * 1024 )) > /mnt/fill/fill.txt
    rm -f /mnt/fill/fill.txt; umount /mnt/fill
    say "filled and freed $(( n_kb / 1024 )) MiB"
  fi
}

case "$MODE" in
crash)
  workload
  # kexec-tools 2.0.25 (Debian 12) derives PAGE_OFFSET, hence the virtual addresses of the
  # vmcore's linear-map PT_LOADs, from the address of "_text" in /proc/kallsyms; this
  # kernel's kallsyms has no "_text" line ("Can't get the symbol of _text to calculate
  # page_offset", then a vmcore whose PT_LOADs map garbage).  Only the half of the kernel
  # VA space the symbol lies in matters, so kexec is shown the _stext address as _text.
  faked=0
  if ! grep -q ' _text$' /proc/kallsyms; then
    awk '$3 == "_stext" { print $1 " T _text" }' /proc/kallsyms > /tmp/kallsyms
    cat /proc/kallsyms >> /tmp/kallsyms
    mount --bind /tmp/kallsyms /proc/kallsyms && faked=1
    say "kallsyms has no _text: kexec sees $(head -1 /proc/kallsyms)"
  fi
  kexec -p /boot/Image --initrd=/boot/capture.cpio.gz \
    --append="console=ttyAMA0 corpus=capture nr_cpus=1 reset_devices panic=10"
  say "kexec -p rc=$? loaded=$(cat /sys/kernel/kexec_crash_loaded)"
  [ $faked = 1 ] && umount /proc/kallsyms
  save_info
  [ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || { say "kexec load failed"; finish; }
  fill_free
  sync
  say "KDT-READY (crashing in $WAIT s of guest time)"
  sleep "$WAIT"
  echo 1 > /proc/sys/kernel/sysrq
  say "KDT-CRASHING now"
  echo c > /proc/sysrq-trigger
  finish
  ;;
capture)
  [ -n "$OUTDEV" ] || { say "no output disk"; finish; }
  mount -t ext4 "$OUTDEV" /mnt/out || finish
  O=/mnt/out/capture; mkdir -p $O
  cat /proc/cmdline > $O/capture-cmdline.txt; cat /proc/iomem > $O/capture-iomem.txt
  run() { n=$1; shift; say "run $n: $*"; echo "$*" > $O/$n.cmd
          "$@" > $O/$n.out 2>&1; echo "rc=$?" > $O/$n.rc; say "  $n $(cat $O/$n.rc)"; sync; }
  run copy-vmcore dd if=/proc/vmcore of=$O/vmcore.elf bs=1M
  run sha256-vmcore sha256sum /proc/vmcore $O/vmcore.elf
  run mdf-dmesg makedumpfile --dump-dmesg /proc/vmcore $O/dmesg.txt
  run mdf-c-d31 makedumpfile --message-level 31 -c -d 31 /proc/vmcore $O/c-d31.kdump
  run mdf-d31 makedumpfile --message-level 31 -d 31 /proc/vmcore $O/d31.kdump
  run mdf-E-d31 makedumpfile --message-level 31 -E -d 31 /proc/vmcore $O/E-d31.elf
  dmesg > $O/capture-dmesg.txt
  ls -la $O > $O/ls.txt
  sync; umount /mnt/out
  say "KDT-CAPTURE-DONE"
  finish
  ;;
*)
  say "unknown mode '$MODE'"; exec sh ;;
esac
