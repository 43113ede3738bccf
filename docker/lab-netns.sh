#!/bin/sh
# Holds one compose lab container's network namespace, as Kubernetes' pause container does: the service itself
# joins it (network_mode: service:...). First removes the default routes Docker installs even on an internal network
# (towards the bridge on the host), so a lab container reaches the lab's own subnets and nothing else.
set -eu
ip -4 route del default 2>/dev/null || true
ip -6 route del default 2>/dev/null || true
if [ -n "$(ip -4 route show default)$(ip -6 route show default)" ]; then
    echo "lab-netns: a default route is still there" >&2
    exit 1
fi
echo "lab-netns: $(ip -brief address show scope global | tr -s ' ')" >&2
exec sleep infinity
