#!/bin/sh
# Install kdumptool on a Debian/Ubuntu machine with Python >= 3.11:
#   system packages (apt-get; as root, or through sudo when not root) and a virtualenv in
#   <repo>/.venv with kdumptool installed in editable mode.
#
# Usage: sh scripts/install.sh [--test]
#   --test  also install the peer tools the tests use as judges (makedumpfile,
#           python3-libkdumpfile, crash) and the test extras (pytest, hypothesis, drgn, ruff).
# Environment: PYTHON (interpreter for the venv, default python3).
# Idempotent: packages already installed are not reinstalled, an existing .venv is reused.
set -eu

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
say() { echo "install.sh: $*"; }

# ---- system packages --------------------------------------------------------------------
PKGS="liblzo2-dev python3-venv python3-dev gcc zstd"
TEST_PKGS="makedumpfile python3-libkdumpfile crash qemu-system-x86 lz4 xz-utils bpftool chromium"
[ "$WITH_TEST" = 1 ] && PKGS="$PKGS $TEST_PKGS"

if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  SUDO="none"
fi

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

if [ -z "$missing" ]; then
  say "system packages already installed"
elif ! command -v apt-get >/dev/null 2>&1; then
  say "apt-get not found; install these packages yourself:$missing" >&2
  exit 1
elif [ "$SUDO" = none ]; then
  say "not root and sudo not found; as root run: apt-get install -y$missing" >&2
  exit 1
else
  say "installing system packages:$missing"
  apt_get update -qq
  # shellcheck disable=SC2086  # word splitting of the package list is wanted
  if ! apt_get install -y -qq --no-install-recommends $missing >/dev/null; then
    # e.g. a release without python3-libkdumpfile: install what exists, report the rest
    failed=""
    for p in $missing; do
      apt_get install -y -qq --no-install-recommends "$p" >/dev/null || failed="$failed $p"
    done
    for p in $failed; do
      case " $TEST_PKGS " in
        *" $p "*) say "WARNING: could not install $p (tests needing it will be skipped, or fail under CI)" >&2 ;;
        *) say "could not install required package $p" >&2; exit 1 ;;
      esac
    done
  fi
fi

# ---- Python virtualenv ------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  say "$PYTHON is missing or older than 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  say "reusing .venv"
else
  say "creating .venv with $("$PYTHON" --version 2>&1)"
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
.venv/bin/python -m pip install -q --upgrade pip
if [ "$WITH_TEST" = 1 ]; then
  say "installing kdumptool (editable) with test extras"
  .venv/bin/python -m pip install -q -e '.[test]'
else
  say "installing kdumptool (editable)"
  .venv/bin/python -m pip install -q -e .
fi
say "done: $REPO/.venv/bin/kdumptool"
