#!/bin/sh
# Install the real mail servers the probe tests run against, on Debian 12, as
# root, noninteractive:
#   dovecot  (dovecot-core, dovecot-imapd, dovecot-pop3d) - IMAP/POP3 + SASL auth
#   postfix                                               - SMTP/submission
#
# The tests (tests/mailservers.py) start their own private instances on
# 127.0.0.1, high ports, with config, queue and mail under a tmp dir; they
# only need the binaries. So Postfix is preseeded to "No configuration", and
# the system instances must neither run now (ports 25/110/143/993/995) nor
# come up at the next boot.
#
# Idempotent: packages already present are not reinstalled, and a second run
# does nothing but checks and stopping strays.
set -eu
. "$(dirname "$0")/apt.sh"

PACKAGES="dovecot-core dovecot-imapd dovecot-pop3d postfix"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-mail-servers: must run as root" >&2
    exit 1
fi

missing=$(missing_packages $PACKAGES)

if [ -z "$missing" ]; then
    echo "setup-mail-servers: already installed:$(printf ' %s' $PACKAGES)"
else
    # Postfix asks what kind of mail system this is; the tests configure
    # their own instance, so the system one gets no configuration at all.
    printf '%s\n' \
        'postfix postfix/main_mailer_type select No configuration' \
        'postfix postfix/mailname string localhost' |
        debconf-set-selections

    # shellcheck disable=SC2086 # word splitting of the package list is intended
    install_packages $missing
fi

# Whatever the postinst did (or a previous run left), no system instance may
# keep the standard mail ports, nor start at boot. The test instances run
# from their own config dirs and are not touched here: they are identified by
# a base_dir / config_directory under a tmp dir, not by the system paths.
for svc in dovecot postfix; do
    if [ -d /run/systemd/system ]; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
    # works offline too (no running systemd): it only removes the wants/ symlink
    systemctl disable "$svc" >/dev/null 2>&1 || true
done
# Without systemd or init scripts, stop them through their own tools, aimed at
# the system configuration only.
if [ -S /run/dovecot/master-pid ] || [ -f /run/dovecot/master.pid ]; then
    doveadm -c /etc/dovecot/dovecot.conf stop >/dev/null 2>&1 || true
fi
if [ -f /etc/postfix/main.cf ]; then
    postfix -c /etc/postfix status >/dev/null 2>&1 && postfix -c /etc/postfix stop >/dev/null 2>&1 || true
fi

for tool in dovecot doveadm postfix postconf postqueue; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "setup-mail-servers: $tool not found after install" >&2
        exit 1
    fi
done

# No system Dovecot or Postfix may keep a standard mail port afterwards. (Other
# software on those ports is not ours: the tests use high ports, so it only
# gets a warning.)
if command -v ss >/dev/null 2>&1; then
    busy=$(ss -Hltnp '( sport = :25 or sport = :110 or sport = :143 or sport = :465 or sport = :587 or sport = :993 or sport = :995 )' 2>/dev/null || true)
    if printf '%s\n' "$busy" | grep -Eq '"(dovecot|master)"'; then
        echo "setup-mail-servers: a system dovecot/postfix still listens on a standard mail port:" >&2
        echo "$busy" >&2
        exit 1
    elif [ -n "$busy" ]; then
        echo "setup-mail-servers: warning: standard mail ports in use (not by dovecot/postfix):" >&2
        echo "$busy" >&2
    fi
fi
echo "setup-mail-servers: ok ($(dovecot --version 2>&1 | head -n 1), postfix $(postconf -dh mail_version 2>/dev/null))"
