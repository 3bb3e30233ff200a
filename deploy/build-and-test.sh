#!/usr/bin/env bash
# Builds the document viewer's image and converts a document in it, under
# deploy/seccomp.json, as a non-root user with a read-only root and no
# capabilities; then starts `serve` in it and checks /healthz (a renderer
# spawned and locked, every layer in force) and the Host check. Prints
# every command it runs.
#
#   deploy/build-and-test.sh            (from anywhere in the repository)
#
# ENGINE=podman|docker picks the engine (default: podman, else docker).
# When the Containerfile's base images cannot be pulled (no registry), it
# builds local stand-ins for them with deploy/local-base-images.sh (root and
# debootstrap needed; LOCAL_BASE=0 turns that off) and builds the real
# Containerfile on those. Failing that too, it builds a last-resort image:
# FROM scratch, with the docviewer built on this machine and exactly the
# shared libraries it links (ldd); OFFLINE=0 turns that off. It also works
# around two host settings it detects: crun refuses hybrid cgroups (v1 +
# v2), so runc is used there; podman's default RLIMIT_NOFILE/NPROC may
# exceed the host's hard limits, so they are set explicitly.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run() { printf '+ %s\n' "$*" >&2; "$@"; }

engine=${ENGINE:-}
if [ -z "$engine" ]; then
	if command -v podman >/dev/null; then engine=podman
	elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
	else echo "build-and-test: neither podman nor a running docker found (apt-get install podman)" >&2; exit 2
	fi
fi
image=sandkit-docviewer
run_flags=(--rm --read-only --cap-drop ALL --security-opt no-new-privileges
	--security-opt "seccomp=$root/deploy/seccomp.json"
	--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
engine_flags=()
if [ "$engine" = podman ] && [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
	if command -v runc >/dev/null; then
		echo "build-and-test: cgroups are not unified (v2 only) here; crun refuses them, using runc" >&2
		engine_flags+=(--runtime runc)
	else
		echo "build-and-test: cgroups are not unified here and crun refuses them: apt-get install runc" >&2
	fi
fi
# The container's /proc stays masked the way the runtime masks it:
# renderers mount no procfs of their own.

built=
if run "$engine" "${engine_flags[@]}" build -f deploy/Containerfile -t "$image" .; then
	built=Containerfile
elif [ "${LOCAL_BASE:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
	echo "build-and-test: the Containerfile's build failed (above; usually: no registry to pull the base images from)." >&2
	echo "build-and-test: building local stand-ins for its base images, then the Containerfile on them." >&2
	if ENGINE=$engine run deploy/local-base-images.sh &&
		run "$engine" "${engine_flags[@]}" build --pull=never --network host -f deploy/Containerfile -t "$image" .; then
		built="Containerfile, on local base images (deploy/local-base-images.sh)"
	fi
fi
if [ -z "$built" ]; then
	if [ "${OFFLINE:-1}" != 1 ]; then
		exit 1
	fi
	echo "build-and-test: the Containerfile's build failed (above)." >&2
	echo "build-and-test: building the last-resort image from this machine's docviewer and its libraries instead." >&2
	image=sandkit-docviewer-local
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT
	mkdir -p "$ctx/root/usr/local/bin" "$ctx/root/docs" "$ctx/root/out"
	(cd examples/docviewer && run go build -trimpath -o "$ctx/root/usr/local/bin/docviewer" .)
	for lib in $(ldd "$ctx/root/usr/local/bin/docviewer" | grep -oE '/[^ ]+'); do
		mkdir -p "$ctx/root$(dirname "$lib")"
		cp -L "$lib" "$ctx/root$lib"
	done
	printf '%s\n' 'FROM scratch' 'COPY root/ /' 'USER 65532:65532' 'WORKDIR /out' \
		'ENTRYPOINT ["/usr/local/bin/docviewer"]' >"$ctx/Containerfile"
	run cat "$ctx/Containerfile"
	run "$engine" "${engine_flags[@]}" build -t "$image" "$ctx"
	built="last-resort image (FROM scratch, this machine's binary)"
fi

out=$(mktemp -d)
chmod 0777 "$out" # the container's uid 65532 writes here
run "$engine" "${engine_flags[@]}" run "${run_flags[@]}" \
	-v "$root/examples/docviewer/testdata/valid:/docs:ro" -v "$out:/out" \
	"$image" convert /docs/multipage.pdf /out/multipage.safe.pdf
if ! head -c 5 "$out/multipage.safe.pdf" | grep -q '^%PDF-'; then
	echo "build-and-test: FAIL: no PDF in $out" >&2
	exit 1
fi
echo "build-and-test: converted: $out/multipage.safe.pdf ($(stat -c %s "$out/multipage.safe.pdf") bytes)"

name=sandkit-docviewer-test-$$
run "$engine" "${engine_flags[@]}" run -d --name "$name" "${run_flags[@]}" -p 127.0.0.1::8080 \
	-v "$root/examples/docviewer/testdata/valid:/docs:ro" \
	"$image" serve -addr 0.0.0.0:8080 -allowed-hosts docviewer /docs >/dev/null
stop() { "$engine" "${engine_flags[@]}" rm -f "$name" >/dev/null 2>&1 || true; }
trap 'stop; rm -rf "${ctx:-}"' EXIT
port=$("$engine" "${engine_flags[@]}" port "$name" 8080 | head -1 | sed 's/.*://')
health=
for _ in $(seq 50); do
	if health=$(curl -fsS -H 'Host: docviewer' "http://127.0.0.1:$port/healthz" 2>/dev/null); then
		break
	fi
	sleep 0.2
done
case $health in
ok:*seccomp-monitor*) echo "build-and-test: /healthz: $health" ;;
*)
	echo "build-and-test: FAIL: /healthz answered: ${health:-nothing}" >&2
	"$engine" "${engine_flags[@]}" logs "$name" >&2 || true
	exit 1
	;;
esac
foreign=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Host: attacker.example' "http://127.0.0.1:$port/")
if [ "$foreign" != 421 ]; then
	echo "build-and-test: FAIL: a foreign Host got $foreign, want 421" >&2
	exit 1
fi
echo "build-and-test: ok: $image built from the $built; convert and serve work in it"
