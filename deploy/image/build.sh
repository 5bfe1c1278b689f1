#!/usr/bin/env bash
# Builds agent-server's OCI image offline, from goreleaser's linux tarballs
# (static binaries) on an empty base, and pushes it with crane:
#   REF-<arch> for each tarball found, and REF, an index of them all.
#
#   deploy/image/build.sh DIST REF   e.g. dist registry.example/agent-server:1.2.3
#   deploy/image/build.sh DIST       into DIST/agent-server_<version>_oci, an
#                                    OCI layout (`crane push` takes it), through
#                                    a registry of its own on 127.0.0.1
#
# CRANE names the crane binary (default: crane on PATH). The image holds:
#   /usr/bin/agent-server, /usr/lib/agent-server/plugins/auth-<name>
#   /etc/agent-server/config.yaml (deploy/image/config.yaml: 0.0.0.0:8000)
#   /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates, for TLS)
#   /etc/passwd, /etc/group with agent-server (65532), the user it runs as
#   /tmp (1777: go-plugin makes its sockets there)
#   /var/lib/agent-server (0750, owned by agent-server: the data)
# and runs `agent-server serve --config /etc/agent-server/config.yaml`.
set -euo pipefail
umask 022

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 DIST [REF]" >&2
	exit 2
fi
dist=$1 ref=${2:-}
case ${ref##*/} in
*:*) ;;
"") ;;
*)
	echo "$0: $ref has no tag (registry/name:tag)" >&2
	exit 2
	;;
esac
crane=${CRANE:-crane}
here=$(cd "$(dirname "$0")" && pwd)
ca=/etc/ssl/certs/ca-certificates.crt
if [ ! -r "$ca" ]; then
	echo "$0: $ca is missing: apt-get install ca-certificates" >&2
	exit 1
fi
uid=65532
# Reproducible layers: every file gets the commit's time.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
version=$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' "$dist/metadata.json" 2>/dev/null || true)
version=${version:-snapshot}
# A tag takes letters, digits, _ . and -.
tag=$(printf %s "$version" | tr -c 'A-Za-z0-9_.-' '-')

work=$(mktemp -d)
registry=
cleanup() {
	if [ -n "$registry" ]; then kill "$registry" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

layout=
if [ -z "$ref" ]; then
	layout=$dist/agent-server_${version}_oci
	"$crane" registry serve --address 127.0.0.1:0 2>"$work/registry.log" &
	registry=$!
	for _ in $(seq 100); do
		port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")
		if [ -n "$port" ]; then break; fi
		sleep 0.1
	done
	if [ -z "$port" ]; then
		echo "$0: crane registry serve did not start:" >&2
		cat "$work/registry.log" >&2
		exit 1
	fi
	ref=127.0.0.1:$port/agent-server:$tag
fi

manifests=()
shopt -s nullglob
for archive in "$dist"/agent-server_*_linux_*.tar.gz; do
	arch=${archive%.tar.gz}
	arch=${arch##*_}
	root=$work/$arch/root
	mkdir -p "$work/$arch/unpacked" "$root"/usr/bin "$root"/usr/lib/agent-server \
		"$root"/etc/agent-server "$root"/etc/ssl/certs "$root"/tmp "$root"/var/lib
	tar -xzf "$archive" -C "$work/$arch/unpacked"
	unpacked=("$work/$arch"/unpacked/*)
	install -m 0755 "${unpacked[0]}/agent-server" "$root/usr/bin/agent-server"
	cp -R "${unpacked[0]}/plugins" "$root/usr/lib/agent-server/plugins"
	chmod 0755 "$root"/usr/lib/agent-server/plugins "$root"/usr/lib/agent-server/plugins/*
	install -m 0644 "$here/config.yaml" "$root/etc/agent-server/config.yaml"
	install -m 0644 "$here/passwd" "$root/etc/passwd"
	install -m 0644 "$here/group" "$root/etc/group"
	install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
	chmod 1777 "$root/tmp"

	# Two layers: the system, owned by root, and the data directory, owned
	# by the user (tar sets one owner per archive).
	tarflags=(--sort=name --mtime="@$epoch" --numeric-owner --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
	tar -C "$root" -cf "$work/$arch/system.tar" "${tarflags[@]}" --owner=0 --group=0 etc tmp usr var
	mkdir -m 0750 "$work/$arch/data" "$work/$arch/data/var" "$work/$arch/data/var/lib" "$work/$arch/data/var/lib/agent-server"
	tar -C "$work/$arch/data" -cf "$work/$arch/data.tar" "${tarflags[@]}" --owner=$uid --group=$uid --no-recursion var/lib/agent-server

	"$crane" append --oci-empty-base -f "$work/$arch/system.tar" -f "$work/$arch/data.tar" -t "$ref-$arch" >/dev/null
	"$crane" mutate "$ref-$arch" --set-platform "linux/$arch" \
		--entrypoint /usr/bin/agent-server,serve,--config,/etc/agent-server/config.yaml \
		--user "$uid:$uid" --workdir /var/lib/agent-server --exposed-ports 8000/tcp,8001/tcp \
		--env PATH=/usr/bin \
		-l org.opencontainers.image.title=agent-server \
		-l "org.opencontainers.image.version=$version" \
		-t "$ref-$arch" >/dev/null
	manifests+=(-m "$ref-$arch")
done
if [ ${#manifests[@]} -eq 0 ]; then
	echo "$0: no agent-server_*_linux_*.tar.gz in $dist: run goreleaser first" >&2
	exit 1
fi
"$crane" index append "${manifests[@]}" -t "$ref" >/dev/null
if [ -n "$layout" ]; then
	rm -rf "$layout"
	"$crane" pull --format=oci "$ref" "$layout"
	echo "$layout"
else
	echo "$ref"
fi
