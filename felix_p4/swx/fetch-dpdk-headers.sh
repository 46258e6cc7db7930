#!/usr/bin/env bash
# Put DPDK's two internal SWX headers (rte_swx_pipeline_internal.h, rte_swx_pipeline_spec.h) for
# the installed libdpdk-dev into DEST: the C that rte_swx_pipeline_codegen writes includes them
# and Debian's libdpdk-dev does not ship them. They come from Debian's source package of exactly
# the installed version (needs deb-src entries: felix_p4/swx/install-dpdk.sh adds them), are
# checked against the installed public headers, and stay out of git (DEST is under build/).
set -euo pipefail

dest=${1:?usage: $0 DEST}
version=$(dpkg-query -W -f='${Version}' libdpdk-dev 2>/dev/null) || {
	echo "libdpdk-dev is not installed (felix_p4/swx/install-dpdk.sh installs it)" >&2
	exit 1
}
upstream=${version%%-*}
src=$(dirname "$dest")/dpdk-src
tarball=$src/dpdk_$upstream.orig.tar.xz
mkdir -p "$src"

if [ ! -f "$tarball" ]; then
	if ! (cd "$src" && apt-get -qq -o APT::Sandbox::User=root source --download-only \
		"dpdk=$version" >/dev/null); then
		echo "cannot download Debian's source of dpdk $version: add deb-src entries and run" \
			"apt-get update (felix_p4/swx/install-dpdk.sh does both)" >&2
		exit 1
	fi
fi

work=$(mktemp -d "$src/extract.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xJf "$tarball" -C "$work" --strip-components=1 --wildcards '*/lib/pipeline/*.h'

# The internal headers describe the library's private structs: they must come from the very
# version that is installed, which the public headers of the same directory confirm.
for header in "$work"/lib/pipeline/rte_swx_*.h; do
	installed=/usr/include/dpdk/$(basename "$header")
	if [ -f "$installed" ] && ! cmp -s "$header" "$installed"; then
		echo "$(basename "$header") in dpdk $version's source differs from $installed" >&2
		exit 1
	fi
done

mkdir -p "$dest"
cp "$work"/lib/pipeline/rte_swx_pipeline_internal.h "$work"/lib/pipeline/rte_swx_pipeline_spec.h \
	"$dest"/
echo "$upstream" >"$dest"/VERSION
