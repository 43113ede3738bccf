#!/bin/sh
# Render exabgp.conf from the announcer configuration, then exec ExaBGP with the announcer's settings.
# ExaBGP runs 'announcer run --config ...' (the rendered process line) and passes it this environment
# (NODE_NAME, ROUTER_ID, KUBECONFIG).
set -eu

config="${ANNOUNCER_CONFIG:-/etc/announcer/announcer.yaml}"
run_dir="${ANNOUNCER_RUN_DIR:-/run/announcer}"
mkdir -p "$run_dir"

announcer exabgp-conf --config "$config" > "$run_dir/exabgp.conf"
announcer exabgp-env --config "$config" > "$run_dir/exabgp-env.sh"

# exabgp-env prints shell-quoted exabgp_section_key=value lines: export each one.
set -a
. "$run_dir/exabgp-env.sh"
set +a

echo "announcer-entrypoint: starting ExaBGP with $run_dir/exabgp.conf for node ${NODE_NAME:-?}" >&2
exec exabgp "$run_dir/exabgp.conf"
