# The lab node's test workload: lab/images/cmd/web (HTTP on 8080, readiness the test sets) on the Debian base.
# Built by lab/node_images.py from a context holding the binary; not part of the product.
FROM debian:bookworm-slim
LABEL io.github.service-announcer.lab-node-image="true"
COPY web /usr/local/bin/lab-web
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/lab-web"]
