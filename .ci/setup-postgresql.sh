#!/bin/sh
# Install PostgreSQL (Debian 12's `postgresql`, i.e. PostgreSQL 15) for the
# store tests, as root, noninteractive. The tests (tests/pgcluster.py) run
# their own private cluster (initdb into a temp dir, a free loopback port, the
# socket in that dir, as the `postgres` user); they only need the binaries.
#
# So no system cluster is created (createcluster.conf: create_main_cluster =
# false) and none is started now or at the next boot; a cluster that already
# exists (e.g. made by an earlier install) is stopped and set to manual.
#
# Idempotent: packages already present are not reinstalled, and a second run
# does nothing but checks and stopping strays.
set -eu
. "$(dirname "$0")/apt.sh"

PACKAGES="postgresql postgresql-client"
CREATECLUSTER_D=/etc/postgresql-common/createcluster.d

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-postgresql: must run as root" >&2
    exit 1
fi

missing=$(missing_packages $PACKAGES)

if [ -z "$missing" ]; then
    echo "setup-postgresql: already installed:$(printf ' %s' $PACKAGES)"
else
    # postgresql-common reads this before its postinst would create "15 main"
    mkdir -p "$CREATECLUSTER_D"
    printf '# from probed .ci/setup-postgresql.sh: tests run private clusters\ncreate_main_cluster = false\n' \
        >"$CREATECLUSTER_D/50-probed-ci.conf"


    # shellcheck disable=SC2086 # word splitting of the package list is intended
    install_packages $missing
fi

# Whatever exists from before, no system cluster may run now or start at boot:
# the tests never use it, and it would hold port 5432.
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r version name _rest; do
        [ -n "$version" ] || continue
        pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
        conf="/etc/postgresql/$version/$name/start.conf"
        if [ -f "$conf" ] && ! grep -qx 'manual' "$conf"; then
            echo manual >"$conf"
        fi
    done
fi
if [ -d /run/systemd/system ]; then
    systemctl stop postgresql >/dev/null 2>&1 || true
fi
systemctl disable postgresql >/dev/null 2>&1 || true

bindir=$(pg_config --bindir 2>/dev/null || true)
for tool in initdb pg_ctl postgres psql; do
    if [ ! -x "$bindir/$tool" ] && ! ls /usr/lib/postgresql/*/bin/"$tool" >/dev/null 2>&1; then
        echo "setup-postgresql: $tool not found after install" >&2
        exit 1
    fi
done
if ! getent passwd postgres >/dev/null; then
    echo "setup-postgresql: no postgres user after install (the tests run the server as it)" >&2
    exit 1
fi
postgres_bin=$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)
echo "setup-postgresql: ok ($("$postgres_bin" --version))"
