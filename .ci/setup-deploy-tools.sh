#!/bin/sh
# Install the tools the deploy tests need on Debian 12, as root, noninteractive:
#   promtool        (package prometheus)              - rule/config/metrics checks
#   amtool          (package prometheus-alertmanager) - alertmanager example check
#   systemd-analyze (package systemd)                 - unit file verification
#   libfaketime     (package faketime)                - clock-step tests of the daemon
#
# Idempotent: packages already present are not reinstalled, and a second run
# does nothing but checks. Debian's postinst scripts would start the
# prometheus and alertmanager daemons; CI wants the binaries only, so service
# starts are refused through policy-rc.d while we install (an existing
# policy-rc.d, e.g. Docker's, is left alone) and any instance that still came
# up is stopped and disabled afterwards.
set -eu
. "$(dirname "$0")/apt.sh"

PACKAGES="prometheus prometheus-alertmanager systemd faketime"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-deploy-tools: must run as root" >&2
    exit 1
fi

missing=$(missing_packages $PACKAGES)

if [ -z "$missing" ]; then
    echo "setup-deploy-tools: already installed:$(printf ' %s' $PACKAGES)"
else

    # shellcheck disable=SC2086 # word splitting of the package list is intended
    install_packages $missing
fi

# Whatever the postinst did, CI must not be left with a daemon listening on
# :9090 / :9093, nor one that comes up at the next boot. Only the packages this
# run installed are touched: an operator's existing Prometheus is not ours to stop.
for pkg in $missing; do
    case "$pkg" in
        prometheus | prometheus-alertmanager) svc=$pkg ;;
        *) continue ;;
    esac
    if [ -d /run/systemd/system ]; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
    # works offline too (no running systemd): it only removes the wants/ symlink
    systemctl disable "$svc" >/dev/null 2>&1 || true
done

for tool in promtool amtool systemd-analyze; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup-deploy-tools: $tool not found after install" >&2
        exit 1
    fi
done
echo "setup-deploy-tools: ok ($(promtool --version 2>&1 | head -n 1))"
