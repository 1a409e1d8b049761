#!/usr/bin/env bash
# Shared setup for scripts/start.sh and scripts/test.sh: a virtual environment in .venv
# with the platform installed, and the Debian packages named as arguments when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_updated=0
install_debian() {
  if ! command -v apt-get >/dev/null; then
    echo "install the packages $* with your system's package manager" >&2; return 1
  fi
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

need_debian() {
  # need_debian COMMAND-OR-PATH PACKAGE...: install the packages when the first is absent.
  local probe=$1; shift
  if command -v "$probe" >/dev/null 2>&1 || [ -e "$probe" ]; then return 0; fi
  install_debian "$@"
}

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    install_debian python3-venv
    "$PYTHON" -m venv .venv
  fi
fi
extras=${YUNYING_EXTRAS:-}
stamp=.venv/.installed${extras:+-$extras}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
  touch "$stamp"
fi

for spec in "$@"; do
  # each argument is PROBE:PACKAGE[,PACKAGE...]
  probe=${spec%%:*}; packages=${spec#*:}
  need_debian "$probe" ${packages//,/ }
done
