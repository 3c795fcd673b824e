#!/bin/sh
# /init of the Xen dom0 (Debian 12 amd64 kernel on Debian's Xen 4.17, busybox).  Used by
# xen-dumps.sh.  Starts xenstored and xenconsoled, then for a small PV domU ("domu") and a
# PVH one ("domu-pvh"; kernel and initramfs from /boot, no disk, no network): creates it,
# waits until it prints KDT-DOMU-READY on its console, then
#   xl save -p NAME     -> /mnt/out/NAME.save  (xl header + libxl/libxc migration v2 stream)
#   xl dump-core NAME   -> /mnt/out/NAME.core  (same memory: the domain stays paused)
# and writes what xl and the guest's console said next to them; then powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts; mount -t devpts -o ptmxmode=666 devpts /dev/pts   # xenconsoled's ptys
mkdir -p /tmp /run /var/run /var/lib/xen /var/lib/xenstored /var/log/xen/console /mnt/out
mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /var/run
mkdir -p /var/run/xen /var/run/xenstored
KVER=$(uname -r)
say() { echo "[kdt-dom0] $*"; }
say "kernel $KVER cmdline: $(cat /proc/cmdline)"
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$KVER/$m.ko" 2>/dev/null && say "insmod $m ok" || say "insmod $m FAILED"
done
finish() { sync; umount /mnt/out 2>/dev/null; say "powering off"; sleep 1; poweroff -f; sleep 10; echo o > /proc/sysrq-trigger; }
mount -t xenfs xenfs /proc/xen || { say "no xenfs: not running on Xen?"; finish; }
say "xen capabilities: $(cat /proc/xen/capabilities)"
i=0; while [ $i -lt 50 ] && ! [ -b /dev/vda ]; do sleep 0.2; i=$((i+1)); done
mount -t ext4 /dev/vda /mnt/out || { say "no output disk"; finish; }
O=/mnt/out
xenstored --pid-file=/var/run/xenstored.pid || { say "xenstored failed"; finish; }
sleep 1
xen-init-dom0 > $O/xen-init-dom0.txt 2>&1; say "xen-init-dom0 rc=$?"
xenconsoled --pid-file=/var/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
xl info > $O/xl-info.txt 2>&1
# one guest at a time: NAME, the config file; "xl save -p" suspends the guest (it
# acknowledges over xenstore), writes the stream and leaves the domain paused, so the
# dump-core that follows holds the very memory the save stream holds.
dump_guest() {
  n=$1
  xl -vvv create /etc/xen/$n.cfg > $O/$n-xl-create.txt 2>&1; rc=$?
  say "xl create $n rc=$rc"; tail -3 $O/$n-xl-create.txt
  [ $rc = 0 ] || return 1
  LOG=/var/log/xen/console/guest-$n.log
  t=0
  while [ $t -lt 1200 ] && ! grep -q KDT-DOMU-READY $LOG 2>/dev/null; do sleep 5; t=$((t+5)); done
  say "$n ready after ${t}s"; xl list > $O/$n-xl-list.txt 2>&1
  sleep 5
  cp $LOG $O/$n-console.log
  if [ "$CORE_FIRST" = 1 ]; then
    # dump-core of a running (paused) guest, then save: memory moves a little in between
    xl pause $n
    xl vcpu-list $n > $O/$n-xl-vcpu-list.txt 2>&1
    xl -v dump-core $n $O/$n.core > $O/$n-xl-dump-core.txt 2>&1; say "xl dump-core $n rc=$?"
    xl unpause $n
    xl -v save $n $O/$n.save > $O/$n-xl-save.txt 2>&1; say "xl save $n rc=$?"
  else
    xl -v save -p $n $O/$n.save > $O/$n-xl-save.txt 2>&1; say "xl save $n rc=$?"
    xl vcpu-list $n > $O/$n-xl-vcpu-list.txt 2>&1
    xl -v dump-core $n $O/$n.core > $O/$n-xl-dump-core.txt 2>&1; say "xl dump-core $n rc=$?"
  fi
  xl destroy $n 2>/dev/null
}
# kdt_guests=a,b on the command line picks the guests (default: both)
GUESTS=$(sed -n 's/.*kdt_guests=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
# kdt_core_first=1: dump-core before the save (a PVH guest's dump-core after "xl save -p"
# stalled at 80 MiB for more than 10 minutes, twice)
CORE_FIRST=$(sed -n 's/.*kdt_core_first=\([01]\).*/\1/p' /proc/cmdline)
for g in ${GUESTS:-domu domu-pvh}; do dump_guest $g; done
xl dmesg > $O/xl-dmesg.txt 2>&1
ls -la $O > $O/ls.txt
say "KDT-DOM0-DONE"
finish
