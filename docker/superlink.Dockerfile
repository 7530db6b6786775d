# floret/superlink: `flower-superlink` alone, as user 65532, its SQLite state on /data.
# BASE: any image with glibc and a user 65532; `docker/build.sh` passes a local one made
# from this machine's libraries when there is no registry.
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
FROM ${BASE}
COPY flower-superlink /usr/local/bin/flower-superlink
# Owned by the daemon's user, so a new named volume mounted here starts writable.
COPY --chown=65532:65532 data/ /data/
USER 65532:65532
WORKDIR /data
# State on the volume; the metrics endpoint, on loopback only, is what HEALTHCHECK asks.
# The Control API stays on loopback with TLS unless `--control-api-address 0.0.0.0:9093`
# is given (see the README's "Docker").
ENV FLWR_HOME=/data \
    FLWR_DATABASE=/data/state.db \
    FLWR_METRICS_ADDRESS=127.0.0.1:9464
VOLUME ["/data"]
# Fleet API (gRPC over TCP and QUIC over UDP), Control API, ServerAppIo API.
EXPOSE 9092/tcp 9092/udp 9093/tcp 9093/udp 9091/tcp
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/flower-superlink", "healthcheck"]
# SIGTERM (docker stop) stops it cleanly and leaves unfinished runs to resume.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/flower-superlink"]
