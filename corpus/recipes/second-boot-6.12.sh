#!/bin/bash
# A second boot of the corpus 6.12 kernel (384 MiB instead of 320, so another KASLR offset and
# another memory layout), crashed the same way (sysrq-c), for the crash-signature test.
# Uses the shared corpus tools (../shared/corpus-tools, Debian packages only, QEMU TCG).
# Then: zstd -19 --long=31 capture-kernel/capture-E-d31.elf -> corpus/x86_64-kdump-384m-6.12-boot2/
set -euo pipefail
export CORPUS=${CORPUS:-./boot2-out} PKG=linux-image-6.12.118+deb12-amd64 SKIP_DBG=1
T=${TOOLS:-$(dirname "$0")/../../../shared/corpus-tools}
bash $T/00-install-deps.sh || true
bash $T/10-fetch-kernel.sh
bash $T/20-build-initramfs.sh
GUEST_APPEND=corpus_size=small nice -n 10 taskset -c 0 bash $T/30-kdump-x86.sh x86_64-kdump-384m-6.12 384 96M
echo BOOT2-DONE
