#!/bin/sh
# Builds the `medtech-chain` image without a registry: a root filesystem holding only the
# release binary and the shared libraries it links (glibc, GMP, libgcc), imported with
# `docker import`. On a machine with a registry the same layout works `FROM scratch` with
# `COPY` of these files; see docs/operations.md.
set -eu
cd "$(dirname "$0")/.."
TAG="${1:-medtech-chain:latest}"
cargo build --release --locked -q -p medtech-federation --bin medtech
BIN=target/release/medtech
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/data" "$root/committee"
cp "$BIN" "$root/usr/local/bin/medtech"
strip --strip-debug "$root/usr/local/bin/medtech" 2>/dev/null || true
for lib in $(ldd "$BIN" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
printf 'root:x:0:0::/:/nonexistent\nmedtech:x:10001:10001::/data:/nonexistent\n' > "$root/etc/passwd"
printf 'root:x:0:\nmedtech:x:10001:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
# New named volumes take the ownership of the image's directories: the node runs as 10001.
chown 10001:10001 "$root/data" "$root/committee"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/medtech"]' \
  --change 'USER 10001:10001' \
  --change 'WORKDIR /data' \
  --change 'ENV RUST_LOG=info' \
  - "$TAG" >/dev/null
docker image inspect "$TAG" --format "built $TAG: {{.Size}} bytes"
