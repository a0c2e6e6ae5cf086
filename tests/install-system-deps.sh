#!/usr/bin/env bash
# Install the real servers the tests and benchmarks talk to, when missing:
# Dovecot (IMAP), Postfix (a real MTA in front, and smtp-source/smtp-sink), systemd-analyze,
# PostgreSQL (tests/pg.py starts a private cluster; the system service is not used). Needs root; without it,
# says what is missing and the tests that need it are skipped with that reason.
set -u
need=()
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
[ -x /usr/sbin/smtp-source ] || need+=(postfix)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # verify/security of the shipped unit
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot install ${need[*]}; tests that need them will be skipped" >&2
  exit 0
fi
echo "installing ${need[*]}" >&2
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
