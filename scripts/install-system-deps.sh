#!/usr/bin/env bash
# Debian packages some tests need: chromium (the UI screenshot test, driven by Playwright, which
# never downloads a browser) and the PostgreSQL server (the instance-on-PostgreSQL test).
# Installs only what is missing, only as root (or with passwordless sudo) on a machine with
# apt-get; otherwise says so and exits 0, and the tests that need them skip with a reason.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get, not installing ${missing[*]} (the tests that need them will skip)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install-system-deps: not root and no passwordless sudo, not installing ${missing[*]} (the tests that need them will skip)"
    exit 0
fi

echo "install-system-deps: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update -q \
    || ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    echo "install-system-deps: apt-get could not install ${missing[*]} (the tests that need them will skip)"
    exit 0
fi
