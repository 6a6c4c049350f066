#!/bin/sh
# Tools the test suite drives directly, on Debian 12, as root, noninteractive:
#   faketime (libfaketime) - moves the daemon's wall clock to test clock steps
# Idempotent: nothing is reinstalled when present.
set -eu

PACKAGES="faketime"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-test-tools: must run as root" >&2
    exit 1
fi

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $missing
fi
