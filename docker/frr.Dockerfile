# The lab router for docker-compose: Debian 12's own FRR (8.4, the FRR the namespace lab runs), zebra and bgpd
# under watchfrr in the foreground. Configuration comes from bind mounts: /etc/frr/frr.conf, daemons, vtysh.conf.
#   docker compose exec frr vtysh -c 'show bgp summary'
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends frr \
    && rm -rf /var/lib/apt/lists/*

COPY docker/frr-start.sh /usr/local/bin/frr-start
RUN chmod 0755 /usr/local/bin/frr-start
ENTRYPOINT ["/usr/local/bin/frr-start"]
