#!/bin/bash
# The planted-secrets guest of corpus/x86_64-kdump-320m-secrets: the corpus's 6.1 kdump guest
# (320 MiB, crashkernel=96M, sysrq-c) whose /init, before the crash, sets a random hostname and
# domain name, adds a user and a logon key (add_key(2)), starts a process with --password=...
# on its command line and writes a line to /dev/kmsg; the values go only to the output disk
# (guest-info/crash/secrets.txt). Uses a copy of the shared corpus tools with the two patches
# next to this file. Run QEMU only when no other qemu-system process runs (shared machine).
# Then: zstd -19 --long=31 capture-kernel/capture-E-d31.elf -> corpus/x86_64-kdump-320m-secrets/
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export W=${W:-/tmp/scrub-guest}
mkdir -p "$W"
rm -rf "$W/tools"; cp -r "${TOOLS:-$HERE/../../../shared/corpus-tools}" "$W/tools"
(cd "$W/tools" && patch -p0 guest-init.sh < "$HERE/scrub-secrets-guest/guest-init.patch" \
  && patch -p0 20-build-initramfs.sh < "$HERE/scrub-secrets-guest/20-build-initramfs.patch")
gcc -O2 -static -o "$W/scrub-addkey" "$HERE/scrub-secrets-guest/addkey.c"
gcc -O2 -static -o "$W/scrub-holdpw" "$HERE/scrub-secrets-guest/holdpw.c"
export CORPUS=$W/out PKG=linux-image-6.1.0-56-amd64 SKIP_DBG=1 GUEST_APPEND=corpus_size=small
bash "$W/tools/10-fetch-kernel.sh"
CAPTURE_XZ=1 bash "$W/tools/20-build-initramfs.sh"
if pgrep qemu-system >/dev/null; then echo "another QEMU is running: not starting" >&2; exit 1; fi
nice -n 10 taskset -c 1 bash "$W/tools/30-kdump-x86.sh" x86_64-kdump-320m-secrets 320 96M
echo SECRETS-GUEST-DONE
