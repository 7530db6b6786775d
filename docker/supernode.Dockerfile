# floret/supernode: `flower-supernode` alone, as user 65532. Built-in apps (quickstart,
# digits) run inside it; a FAB's app binary runs from the FAB cache in $HOME when it
# needs no library beyond glibc's (see the README's "Docker").
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
FROM ${BASE}
COPY flower-supernode /usr/local/bin/flower-supernode
USER 65532:65532
WORKDIR /home/nonroot
ENV HOME=/home/nonroot \
    FLWR_METRICS_ADDRESS=127.0.0.1:9465
# ClientAppIo API, for `--isolation process` ClientApps in other containers.
EXPOSE 9094/tcp
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/flower-supernode", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/flower-supernode"]
