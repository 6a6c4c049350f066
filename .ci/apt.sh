# Sourced by the .ci/setup-*.sh scripts: which Debian packages are missing,
# and installing them as root, noninteractive, without starting their services.

# missing_packages PKG...: prints those of PKG that are not installed
missing_packages() {
    for pkg in "$@"; do
        case "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" in
            *" installed") ;;
            *) printf '%s ' "$pkg" ;;
        esac
    done
}

# install_packages PKG...: a temporary policy-rc.d keeps the packages' services
# from starting (the tests run private instances); a fresh image's missing
# package lists and stale lists that point at superseded .debs are refreshed;
# apt waits for a dpkg lock held by another install instead of failing.
install_packages() {
    export DEBIAN_FRONTEND=noninteractive
    _policy=/usr/sbin/policy-rc.d
    _created_policy=no
    if [ ! -e "$_policy" ]; then
        printf '#!/bin/sh\n# temporary, from probed .ci/apt.sh\nexit 101\n' >"$_policy"
        chmod 0755 "$_policy"
        _created_policy=yes
    fi
    # leave the machine as found, even when apt fails
    trap 'if [ "$_created_policy" = yes ]; then rm -f "$_policy"; fi' EXIT INT TERM
    for pkg in "$@"; do
        if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            apt-get -o DPkg::Lock::Timeout=300 update -q
            break
        fi
    done
    if ! apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"; then
        apt-get -o DPkg::Lock::Timeout=300 update -q
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"
    fi
    if [ "$_created_policy" = yes ]; then rm -f "$_policy"; fi
    trap - EXIT INT TERM
}
