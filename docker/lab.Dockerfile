# The compose lab's own image, never part of the product image: the stand-in Kubernetes API server
# (python -m lab.fakeapi, the default command) and /usr/local/bin/lab-netns, which holds each lab container's network
# namespace without Docker's default routes. The whole lab/ folder is copied, so the module's layout inside lab/ does
# not matter here.
#   docker run --rm service-announcer-lab:lab --help
FROM debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 python3 python3-yaml \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --user-group --no-create-home --shell /usr/sbin/nologin lab

COPY docker/lab-netns.sh /usr/local/bin/lab-netns
RUN chmod 0755 /usr/local/bin/lab-netns

WORKDIR /opt/service-announcer
COPY lab ./lab
USER 10002:10002
ENTRYPOINT ["python3", "-m", "lab.fakeapi"]
