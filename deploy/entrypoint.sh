#!/bin/sh
# Render exabgp.conf from the announcer configuration and run ExaBGP, which runs 'announcer run' as its API
# process (with this environment: NODE_NAME, ROUTER_ID, KUBECONFIG, passwords' variables).
#
# Stopping (SIGTERM or SIGINT): the announcer first, then ExaBGP. The announcer either withdraws every route and
# waits for ExaBGP's acks (the node stops serving), or, with graceful restart when its DaemonSet's next pod comes to
# this node (rollout restart, deleted pod: speaker.stop, docs/operations.md), hands them over: it writes nothing, and
# ExaBGP, stopped by SIGTERM, closes its sessions without a NOTIFICATION, so the peers keep the routes as stale
# until the next pod's End-of-RIB. Stopping ExaBGP first would close the sessions with the withdraws unsent; with
# graceful restart the peers would keep every route, as stale, for the restart time, whether or not a next pod
# comes. ExaBGP respawns an API process that exits: the stop creates $ANNOUNCER_RUN_DIR/stopping
# (ANNOUNCER_STOPPING_FILE in ExaBGP's environment) before it stops the announcer, and an `announcer run` started
# while it exists announces nothing and waits for ExaBGP's end.
#
#   ANNOUNCER_CONFIG         the announcer configuration (default /etc/announcer/announcer.yaml)
#   ANNOUNCER_RUN_DIR        where exabgp.conf is rendered (default /run/announcer)
#   ANNOUNCER_STOP_TIMEOUT   whole seconds the announcer gets to withdraw (or hand over) and exit (default 10; above
#                            speaker.shutdown_timeout and well below terminationGracePeriodSeconds)
#   ANNOUNCER_FLUSH_SECONDS  pause between the announcer's exit and stopping ExaBGP, so ExaBGP sends the last
#                            UPDATEs it acknowledged (default 0.3)
set -eu

config="${ANNOUNCER_CONFIG:-/etc/announcer/announcer.yaml}"
run_dir="${ANNOUNCER_RUN_DIR:-/run/announcer}"
stop_timeout="${ANNOUNCER_STOP_TIMEOUT:-10}"
flush_seconds="${ANNOUNCER_FLUSH_SECONDS:-0.3}"

log() {
    echo "announcer-entrypoint: $*" >&2
}

trap 'exit 143' TERM INT  # until ExaBGP runs: nothing to withdraw yet

case "$stop_timeout" in
    '' | *[!0-9]*) log "ANNOUNCER_STOP_TIMEOUT must be whole seconds, not '$stop_timeout'"; exit 2 ;;
esac

umask 077  # exabgp.conf holds the TCP MD5 passwords
mkdir -p "$run_dir"
ANNOUNCER_STOPPING_FILE="$run_dir/stopping"  # exists from the start of a stop: a respawned announcer stays idle
export ANNOUNCER_STOPPING_FILE
rm -f "$ANNOUNCER_STOPPING_FILE"
announcer exabgp-conf --config "$config" > "$run_dir/exabgp.conf"
announcer exabgp-env --config "$config" > "$run_dir/exabgp-env.sh"

# exabgp-env prints shell-quoted exabgp_section_key=value lines: export each one.
set -a
. "$run_dir/exabgp-env.sh"
set +a

# Whether process $1 is running (a zombie is not): /proc, as the image has no procps.
running() {
    read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
    set -- ${stat##*) }  # the fields after "pid (name) ": state, parent, ...
    [ "$1" != Z ]
}

# The running processes whose parent is $1: ExaBGP's API processes.
children_of() {
    parent=$1
    for file in /proc/[0-9]*/stat; do
        read -r stat 2>/dev/null < "$file" || continue
        set -- ${stat##*) }
        if [ "${2:-}" = "$parent" ] && [ "$1" != Z ]; then
            pid=${file#/proc/}
            echo "${pid%/stat}"
        fi
    done
}

stopping=
stop() {
    [ -z "$stopping" ] || return 0
    stopping=1
    trap '' TERM INT
    touch "$ANNOUNCER_STOPPING_FILE" || log "cannot create $ANNOUNCER_STOPPING_FILE: a respawned announcer may announce"
    pids=$(children_of "$exabgp_pid")
    log "stopping: the announcer first (pid ${pids:-none}: it withdraws its routes or hands them over), then ExaBGP"
    # shellcheck disable=SC2086  # one word per pid
    [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
    tenths=0
    while [ -n "$pids" ]; do
        alive=
        for pid in $pids; do
            if running "$pid"; then alive="$alive $pid"; fi
        done
        pids=$alive
        [ -n "$pids" ] || break
        if [ "$tenths" -ge $((stop_timeout * 10)) ]; then
            log "the announcer did not exit within $stop_timeout s; stopping ExaBGP anyway"
            break
        fi
        sleep 0.1
        tenths=$((tenths + 1))
    done
    sleep "$flush_seconds" || true
    kill -TERM "$exabgp_pid" 2>/dev/null || true
}

log "starting ExaBGP with $run_dir/exabgp.conf for node ${NODE_NAME:-?}"
# ExaBGP runs as a child, not with 'exec exabgp', so that this shell can stop the announcer before ExaBGP.
exabgp "$run_dir/exabgp.conf" &
exabgp_pid=$!
trap stop TERM INT

# 'wait' returns early when a trapped signal arrives: wait again while ExaBGP is still there.
while :; do
    status=0
    wait "$exabgp_pid" || status=$?
    if [ "$status" -gt 128 ] && kill -0 "$exabgp_pid" 2>/dev/null; then
        continue
    fi
    break
done
log "ExaBGP exited with status $status"
exit "$status"
