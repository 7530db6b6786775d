# The local base image `docker/build.sh` makes when no registry is reachable: nothing but
# what the Floret daemons need at run time, taken from the machine that built them (the
# shared libraries `ldd` lists, CA certificates, a non-root user, /tmp). Its context is the
# root filesystem build.sh assembles; modes are kept, owners are root.
FROM scratch
COPY rootfs/ /
# The user the daemons run as (uid 65532, as distroless's `nonroot`), and its home for
# the SuperNode's FAB cache.
COPY --chown=65532:65532 home/ /home/nonroot/
ENV HOME=/home/nonroot \
    PATH=/usr/local/bin
