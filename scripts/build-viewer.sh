#!/usr/bin/env bash
# Builds the browser viewer (frontend/, Cornerstone3D with vite) into static/viewer/.
# npm ci runs only when package-lock.json changed since the last install, and vite only
# when a source is newer than the last build (its manifest.json); the built files are not committed.
set -euo pipefail
cd "$(dirname "$0")/../frontend"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "Node.js 20 or newer (with npm) is needed to build the viewer: install it and run again" >&2
  exit 1
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || {
  echo "Node.js 20 or newer is needed to build the viewer (found $(node --version))" >&2
  exit 1
}

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

built=../static/viewer/manifest.json
if [ ! -f "$built" ] || [ -n "$(find src package.json package-lock.json vite.config.js -newer "$built" -print -quit)" ]; then
  npx vite build --logLevel error
fi
