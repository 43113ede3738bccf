# The announcer image: ExaBGP with the announcer as its API process, one container per node. The product only:
# the lab's stand-in API server is docker/lab.Dockerfile, FRR docker/frr.Dockerfile.
#
# Runs as an unprivileged user and needs no capabilities for the usual active peers (outgoing TCP to
# port 179 from an ephemeral port; TCP MD5 passwords need none either). Only a passive peer listening
# on port 179 needs NET_BIND_SERVICE (or a listen port of 1024 and up). In Kubernetes run it with
# hostNetwork: true so BGP leaves from the node's address.
#
# Debian 12's own Python 3.11, with the announcer, ExaBGP and the Kubernetes client from PyPI in a virtual
# environment (/opt/announcer) built in a first stage: the image carries neither pip nor the sources. The base is one
# every Debian mirror can rebuild (scripts/docker-base).
FROM debian:bookworm-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/announcer

WORKDIR /src
# The dependencies first, pinned and hashed (requirements/image.txt, pip-compile's lock of pyproject.toml's
# dependencies): two builds of one commit install the same files, and a change to the code reuses this layer.
COPY requirements/image.txt ./requirements.txt
RUN /opt/announcer/bin/pip install --require-hashes --no-deps -r requirements.txt
COPY pyproject.toml ./
# README.m[d]: copied when present (pyproject.toml names it), without failing when it is not.
COPY README.m[d] ./
COPY announcer ./announcer
# kubernetes.aio (the asyncio client, 68 MB) is never imported: tests/test_image_lock.py runs the announcer with it
# made unimportable, and the compose lab runs this image.
RUN /opt/announcer/bin/pip install --no-deps . \
    && /opt/announcer/bin/pip uninstall --yes --quiet pip setuptools \
    && rm -rf /opt/announcer/lib/python3*/site-packages/kubernetes/aio

FROM debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/announcer/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin announcer \
    && install -d -o announcer -g announcer -m 0750 /run/announcer

COPY --from=build /opt/announcer /opt/announcer
COPY deploy/entrypoint.sh /usr/local/bin/announcer-entrypoint
RUN chmod 0755 /usr/local/bin/announcer-entrypoint

ENV ANNOUNCER_CONFIG=/etc/announcer/announcer.yaml \
    ANNOUNCER_RUN_DIR=/run/announcer
WORKDIR /run/announcer
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/announcer-entrypoint"]
