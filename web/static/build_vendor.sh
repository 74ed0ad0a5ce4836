#!/usr/bin/env bash
# Bundles the softphone's SIP stack (JsSIP, from npm) into web/static/vendor/jssip.js.
#
# The npm tarball of JsSIP ships only CommonJS modules (lib/), no browser bundle, so
# esbuild turns it into one file that sets window.JsSIP. node_modules live in a cache
# folder outside the clone: no third-party code is committed, and a fresh clone or a
# second work tree reuses what an earlier build fetched. Idempotent: when the bundle
# already comes from the pinned versions, it does nothing (a few milliseconds).
#
#   SWITCHBOARD_NPM_CACHE  where node_modules go (default ~/.cache/switchboard/npm)
set -euo pipefail

JSSIP_VERSION="3.13.8"
ESBUILD_VERSION="0.28.2"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="$here/vendor"
bundle="$out_dir/jssip.js"
stamp="$out_dir/.versions"
cache="${SWITCHBOARD_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/npm}"
wanted="jssip@$JSSIP_VERSION esbuild@$ESBUILD_VERSION"

if [[ -s "$bundle" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
  exit 0
fi
for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "build_vendor.sh: $tool is missing (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
done

mkdir -p "$cache" "$out_dir"
if [[ ! -f "$cache/node_modules/jssip/package.json" \
      || ! -x "$cache/node_modules/.bin/esbuild" \
      || "$(node -p "require('$cache/node_modules/jssip/package.json').version")" != "$JSSIP_VERSION" \
      || "$(node -p "require('$cache/node_modules/esbuild/package.json').version")" != "$ESBUILD_VERSION" ]]; then
  echo "fetching $wanted from npm into $cache"
  # --no-save: the cache folder has no package.json of ours to keep up to date. npm's
  # few lines (what it added, any error) are shown as they come.
  if ! npm install --prefix "$cache" --no-save --no-audit --no-fund --loglevel=error \
      --progress=false "jssip@$JSSIP_VERSION" "esbuild@$ESBUILD_VERSION" 2>&1 | sed -u '/^$/d; s/^/  npm: /'; then
    echo "build_vendor.sh: npm install failed (its errors are above): check the network or" \
      "npm's registry (npm config get registry), then run make again" >&2
    exit 1
  fi
fi

entry="$(mktemp "$cache/entry-XXXXXX.js")"
trap 'rm -f "$entry" "$bundle.tmp"' EXIT
echo 'window.JsSIP = require("jssip");' >"$entry"
# Resolve `jssip` from the cache's node_modules; the output goes to a temporary file
# first so an interrupted build never leaves half a bundle that looks finished.
echo "bundling JsSIP for the softphone into $bundle"
if ! NODE_PATH="$cache/node_modules" "$cache/node_modules/.bin/esbuild" "$entry" \
  --bundle --minify --format=iife --target=es2019 --log-level=warning \
  --outfile="$bundle.tmp"; then
  echo "build_vendor.sh: esbuild could not bundle JsSIP (its errors are above): delete" \
    "$cache and run make again" >&2
  exit 1
fi
mv "$bundle.tmp" "$bundle"
echo "$wanted" >"$stamp"
echo "built $bundle ($(wc -c <"$bundle") bytes)"
