#!/usr/bin/env bash
# Builds local stand-ins for the two base images deploy/Containerfile names,
# for machines that reach a Debian mirror and the Go module proxy but no
# container registry:
#
#   docker.io/library/debian:bookworm-slim  debootstrap --variant=minbase bookworm
#   docker.io/library/golang:1.26-bookworm  the same, plus ca-certificates and
#                                           this machine's Go in /usr/local/go
#
# With them in the local store, `podman build --pull=never -f deploy/Containerfile`
# builds the real Containerfile, every step of it. Certificates this machine
# trusts beyond Debian's (/usr/local/share/ca-certificates, e.g. a TLS proxy's
# on the way to the module proxy) are trusted in the build stage too; the
# runtime stage gets none of them.
#
# Needs root, debootstrap and podman (ENGINE=docker works too).
set -euo pipefail

engine=${ENGINE:-podman}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
goroot=$(go env GOROOT)
run() { printf '+ %s\n' "$*" >&2; "$@"; }

if [ "$(id -u)" != 0 ]; then
	echo "local-base-images: debootstrap needs root: sudo $0" >&2
	exit 2
fi
for cmd in debootstrap "$engine"; do
	if ! command -v "$cmd" >/dev/null; then
		echo "local-base-images: $cmd not found: apt-get install $cmd" >&2
		exit 2
	fi
done

work=$(mktemp -d /var/tmp/sandkit-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

run debootstrap --variant=minbase bookworm "$work/slim" "$mirror" >"$work/debootstrap.log" ||
	{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work/slim/var/lib/apt/lists/"* "$work/slim/var/cache/apt/archives/"*.deb

run cp -a "$work/slim" "$work/golang"
cp /etc/resolv.conf "$work/golang/etc/resolv.conf"
run chroot "$work/golang" sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates' >"$work/apt.log" ||
	{ tail -20 "$work/apt.log" >&2; exit 1; }
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	run cp /usr/local/share/ca-certificates/*.crt "$work/golang/usr/local/share/ca-certificates/"
fi
run chroot "$work/golang" update-ca-certificates >/dev/null
rm -rf "$work/golang/var/lib/apt/lists/"* "$work/golang/etc/resolv.conf"
run cp -a "$goroot" "$work/golang/usr/local/go"

tar -C "$work/slim" -c . | run "$engine" import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim
tar -C "$work/golang" -c . | run "$engine" import \
	--change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV GOPATH=/go' --change 'WORKDIR /go' \
	- docker.io/library/golang:1.26-bookworm
echo "local-base-images: ok: debian:bookworm-slim and golang:1.26-bookworm ($("$goroot/bin/go" version | cut -d' ' -f3)) are in $engine's local store"
