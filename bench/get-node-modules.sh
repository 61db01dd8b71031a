#!/usr/bin/env bash
# Fetches the node_modules benchmark corpus: the pinned dependencies of a mid-size web app
# (bench/node-modules-app: next, react, jest, eslint, webpack, typescript, babel), installed by
# pnpm 9 from the npm registry with its lockfile, as a CI job would. The result is a real pnpm
# layout: a content-addressed pnpm store plus node_modules made of hardlinks into it and symlinks
# between packages.
# Usage: bench/get-node-modules.sh [DEST]; prints the app folder, which holds package.json,
# pnpm-lock.yaml and node_modules; the pnpm store is "$DEST/pnpm-store".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/treecast-corpus/node-modules}
app="$dest/app"
if [ -f "$app/node_modules/.modules.yaml" ] && cmp -s "$here/node-modules-app/pnpm-lock.yaml" "$app/pnpm-lock.yaml"; then
  echo "$app"; exit 0
fi
rm -rf "$app"
mkdir -p "$app"
cp "$here/node-modules-app/package.json" "$here/node-modules-app/pnpm-lock.yaml" "$app/"
cd "$app"
npx --yes pnpm@9.15.9 install --frozen-lockfile --ignore-scripts --store-dir "$dest/pnpm-store" \
  --config.confirmModulesPurge=false --reporter=silent >&2
echo "$app"
