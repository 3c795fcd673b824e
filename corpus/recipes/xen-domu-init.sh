#!/bin/sh
# /init of the small PV domU (Debian 12 amd64 kernel, busybox) started by xen-dom0-init.sh.
# Makes known content (tmpfs text, a user process holding text), fills free memory once with
# marker text and frees it, prints its uname and /proc/kallsyms (gzip + base64, between
# marker lines) on the console (hvc0, logged by xenconsoled in dom0), then KDT-DOMU-READY,
# and idles until dom0 dumps and saves it.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /mnt/tmpfs /mnt/fill; mount -t tmpfs tmpfs /tmp
echo "[kdt-domu] kernel $(uname -r) cmdline: $(cat /proc/cmdline)"
mount -t tmpfs -o size=16m tmpfs /mnt/tmpfs
yes "KDT-XEN-DOMU-TMPFS-MARKER-0123456789abcdef" | head -c 2097152 > /mnt/tmpfs/marker.txt
sh -c 'X=$(yes KDT-XEN-DOMU-USER-MARKER | head -c 1000000); touch /tmp/user.done; while :; do sleep 100000; done' &
i=0; while [ $i -lt 120 ] && ! [ -e /tmp/user.done ]; do sleep 1; i=$((i+1)); done
free_kb=$(awk '/^MemFree:/{print $2}' /proc/meminfo); n_kb=$(( free_kb - 8192 ))
if [ $n_kb -gt 0 ]; then
  mount -t tmpfs -o size=$(( n_kb + 1024 ))k tmpfs /mnt/fill
  yes "KDT-XEN-DOMU-FREED-MARKER-5a5a5a5a" | head -c $(( n_kb * 1024 )) > /mnt/fill/fill.txt
  rm -f /mnt/fill/fill.txt; umount /mnt/fill
fi
dmesg -n 1   # no kernel messages inside the base64 block below
echo "KDT-DOMU-UNAME-R $(uname -r)"
echo "KDT-DOMU-UNAME-A $(uname -a)"
echo "KDT-DOMU-KALLSYMS-BEGIN"
gzip -c /proc/kallsyms | base64
echo "KDT-DOMU-KALLSYMS-END"
echo "KDT-DOMU-READY"
while :; do sleep 3600; done
