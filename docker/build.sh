#!/usr/bin/env bash
# Builds the Floret images from binaries built on this machine:
#   floret/superlink:TAG and floret/supernode:TAG
#
#   docker/build.sh [--bin-dir DIR] [--tag TAG] [--base IMAGE]
#
# --bin-dir  where flower-superlink and flower-supernode are (default: target/release;
#            run `cargo build --release --bin flower-superlink --bin flower-supernode`)
# --tag      the images' tag (default: latest)
# --base     an image to build on, e.g. gcr.io/distroless/cc-debian12:nonroot (needs a
#            registry, and glibc at least as new as this machine's). Default: `local`, a base
#            made here, offline, FROM scratch plus the shared libraries `ldd` finds for
#            the binaries, CA certificates, /etc/passwd with user 65532 and /tmp; it is
#            tagged floret/base:TAG.
#
# The binaries are stripped as they are copied (the originals are left alone), so debug
# builds make images too. Prints each image's size.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=target/release
tag=latest
base=local
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
        --tag) tag=${2:?--tag needs a tag}; shift 2 ;;
        --base) base=${2:?--base needs an image, or local}; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1: see docker/build.sh --help" >&2; exit 2 ;;
    esac
done

daemons=(flower-superlink flower-supernode)
for bin in "${daemons[@]}"; do
    if [ ! -x "$bin_dir/$bin" ]; then
        echo "error: $bin_dir/$bin not found: run \`cargo build --release --bin flower-superlink --bin flower-supernode\` or pass --bin-dir" >&2
        exit 2
    fi
done
if ! docker info >/dev/null 2>&1; then
    echo "error: no Docker daemon answers \`docker info\`: start it, or set DOCKER_HOST" >&2
    exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# The application context: the stripped binaries and an empty /data for the SuperLink.
mkdir -p "$ctx/app/data"
for bin in "${daemons[@]}"; do
    if command -v strip >/dev/null; then
        strip -o "$ctx/app/$bin" "$bin_dir/$bin"
    else
        cp "$bin_dir/$bin" "$ctx/app/$bin"
    fi
done

if [ "$base" = local ]; then
    base=floret/base:$tag
    root=$ctx/base/rootfs
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$ctx/base/home"
    chmod 1777 "$root/tmp"
    # Every library the binaries load, at the path the loader looks for it (ldd prints
    # `name => /path (addr)` or, for the loader itself, `/path (addr)`).
    for lib in $(for bin in "${daemons[@]}"; do ldd "$ctx/app/$bin"; done \
            | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
        cp -L --parents "$lib" "$root/"
    done
    # Debian's /lib64 and /lib are links into /usr; a plain directory works as well.
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    # Container names (`superlink`) resolve through Docker's DNS; glibc reads this file.
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    fi
    docker build --quiet -t "$base" -f docker/base.Dockerfile "$ctx/base" >/dev/null
fi

for bin in "${daemons[@]}"; do
    name=${bin#flower-}
    docker build --quiet --build-arg "BASE=$base" -t "floret/$name:$tag" \
        -f "docker/$name.Dockerfile" "$ctx/app" >/dev/null
    size=$(docker image inspect -f '{{.Size}}' "floret/$name:$tag")
    echo "floret/$name:$tag $((size / 1000000)) MB ($size bytes, base $base)"
done
