#!/usr/bin/env bash
# Fetches the benchmark corpus: the Linux 6.1 source tree from Debian's linux-source-6.1 package
# (78,579 files, 5,096 directories, 56 symlinks, 30 empty files, ~1.5 GB), extracted once.
# Usage: bench/get-linux-source.sh [DEST]; prints the tree's path.
set -euo pipefail
dest=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/treecast-corpus}
tree="$dest/linux-source-6.1"
if [ -f "$tree/Makefile" ]; then echo "$tree"; exit 0; fi
mkdir -p "$dest"
cd "$dest"
if ! ls linux-source-6.1_*.deb >/dev/null 2>&1; then
  apt-get download linux-source-6.1 >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download linux-source-6.1 >/dev/null; }
fi
rm -rf deb && dpkg-deb -x linux-source-6.1_*.deb deb
tar -xJf deb/usr/src/linux-source-6.1.tar.xz
rm -rf deb
echo "$tree"
