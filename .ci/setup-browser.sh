#!/bin/sh
# Install what the browser tests (tests/test_browser_*.py) need on Debian 12,
# as root, noninteractive:
#   chromium, chromium-driver  - headless Chromium driven by Selenium
#   npm                        - to fetch axe-core (the accessibility checker);
#                                only when no npm is on PATH (a nodejs package
#                                from elsewhere ships its own and conflicts)
# and axe-core itself from the npm registry into .ci/node/ (repo-local,
# .gitignored), where the tests read node_modules/axe-core/axe.min.js.
#
# Idempotent: packages already present are not reinstalled, and axe-core is
# installed only when its file is missing.
set -eu
. "$(dirname "$0")/apt.sh"

PACKAGES="chromium chromium-driver"
command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES npm"
AXE_VERSION="4.10.2"
HERE=$(cd "$(dirname "$0")" && pwd)
NODE_DIR="$HERE/node"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-browser: must run as root" >&2
    exit 1
fi

missing=$(missing_packages $PACKAGES)

if [ -z "$missing" ]; then
    echo "setup-browser: already installed:$(printf ' %s' $PACKAGES)"
else
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    install_packages $missing
fi

if [ ! -f "$NODE_DIR/node_modules/axe-core/axe.min.js" ]; then
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --no-save --silent "axe-core@$AXE_VERSION"
fi

for tool in chromium chromedriver; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup-browser: $tool not found after install" >&2
        exit 1
    fi
done
test -f "$NODE_DIR/node_modules/axe-core/axe.min.js" || {
    echo "setup-browser: axe-core not found after npm install" >&2
    exit 1
}
echo "setup-browser: ok ($(chromium --version 2>/dev/null | head -n 1), axe-core $AXE_VERSION)"
