# The announcer image: ExaBGP with the announcer as its API process, one container per node.
#
# Runs as an unprivileged user and needs no capabilities for the usual active peers (outgoing TCP to
# port 179 from an ephemeral port; TCP MD5 passwords need none either). Only a passive peer listening
# on port 179 needs NET_BIND_SERVICE (or a listen port of 1024 and up). In Kubernetes run it with
# hostNetwork: true so BGP leaves from the node's address.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README.m[d]: copied when present (pyproject.toml names it), without failing when it is not.
COPY pyproject.toml README.m[d] ./
COPY announcer ./announcer
RUN pip install . \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin announcer \
    && install -d -o announcer -g announcer -m 0750 /run/announcer

COPY deploy/entrypoint.sh /usr/local/bin/announcer-entrypoint
RUN chmod 0755 /usr/local/bin/announcer-entrypoint

ENV ANNOUNCER_CONFIG=/etc/announcer/announcer.yaml \
    ANNOUNCER_RUN_DIR=/run/announcer
WORKDIR /run/announcer
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/announcer-entrypoint"]
