#!/usr/bin/env bash
# Installs the system tools the tests drive for real: headless Chromium for the web pages,
# Dovecot (a throwaway IMAP server the email tests start), swaks (an SMTP client) and
# libfaketime (tests/chaos/test_doctor_cluster.py runs one RabbitMQ node with its clock ahead).
# Needs root and Debian's packages; elsewhere it says what is missing and the browser test
# skips (under CI=true it fails instead).
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v dovecot || test -x /usr/sbin/dovecot; } >/dev/null 2>&1 || missing+=(dovecot-imapd)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
test -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 || missing+=(libfaketime)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} from Debian's packages ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null \
    && exit 0
fi
echo "could not install ${missing[*]}: install it to run the browser tests" >&2
[ "${CI:-}" = "true" ] && exit 1
exit 0
