#!/bin/bash
# makedumpfile outputs at the single dump levels 1, 2, 4, 8, 16 of the arm64 vmcore made by
# arm64-kdump.sh: Debian's arm64 makedumpfile 1.7.2 (the binary the capture kernel ran), run
# on the host under qemu-aarch64-static with the arm64 sysroot of arm64-kdump.sh.  First
# proves the method: its -d 31 output must be byte-identical to the capture kernel's.
# Usage: bash arm64-derive.sh   (OUT and WORK as for arm64-kdump.sh)
set -euo pipefail
OUT=${OUT:-/work/evidence-build/arm64-out}
WORK=${WORK:-/work/evidence-build/arm64}
SYS=$WORK/sysroot
D=$OUT/derived; rm -rf "$D"; mkdir -p "$D"
mdf() { nice -n 10 taskset -c "${CPU_PIN:-1}" qemu-aarch64-static -L "$SYS" "$SYS/usr/bin/makedumpfile" "$@"; }
mdf --message-level 31 -d 31 "$OUT/capture/vmcore.elf" "$D/d31.kdump" > "$D/d31.out" 2>&1
cmp "$D/d31.kdump" "$OUT/capture/d31.kdump"    # stops here if the method is not faithful
rm "$D/d31.kdump"
for lv in 1 2 4 8 16; do
  mdf --message-level 31 -d $lv "$OUT/capture/vmcore.elf" "$D/d$lv.kdump" > "$D/d$lv.out" 2>&1
done
ls -la "$D"
