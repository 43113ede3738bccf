#!/bin/bash
# FRR in a container: watchfrr stays in the foreground, starts the daemons /etc/frr/daemons enables (zebra and
# staticd always) and restarts any that dies; SIGTERM stops watchfrr and them.
# No 'set -eu': Debian's frrcommon.sh reads unset variables and its functions end on a failed test.
# shellcheck source=/dev/null  # Debian's frr package: the daemon list and the runtime folder, as frrinit.sh uses them
. /usr/lib/frr/frrcommon.sh || exit 1
install -d -o frr -g frr -m 0755 "$V_PATH"  # /run/frr: made by systemd-tmpfiles on a host, by nobody here
daemons=$(daemon_list)
[ -n "$daemons" ] || { echo "frr-start: no daemon enabled in /etc/frr/daemons" >&2; exit 1; }
echo "frr-start: watchfrr $daemons" >&2
# shellcheck disable=SC2086  # one word per daemon
exec /usr/lib/frr/watchfrr $daemons
