# The lab node's pod sandbox image (containerd's sandbox_image): lab/images/cmd/pause, a static binary, alone.
# Built by lab/node_images.py from a context holding the binary; not part of the product.
FROM scratch
LABEL io.github.service-announcer.lab-node-image="true"
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
