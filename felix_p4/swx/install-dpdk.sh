#!/usr/bin/env bash
# Install what the SWX engine needs on Debian 12 (as root): DPDK's development packages, a C
# compiler, and deb-src entries plus dpkg-dev so fetch-dpdk-headers.sh can fetch the internal
# headers from Debian's source package. Idempotent and quiet; exits non-zero when it cannot.
set -euo pipefail

need_update=0
if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	if [ "$(id -u)" != 0 ]; then
		echo "not root: cannot add deb-src entries for the DPDK source package" >&2
		exit 1
	fi
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
			>/etc/apt/sources.list.d/felix-p4-deb-src.sources
	elif [ -f /etc/apt/sources.list ]; then
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list \
			>/etc/apt/sources.list.d/felix-p4-deb-src.list
	else
		echo "no Debian apt sources to derive deb-src entries from" >&2
		exit 1
	fi
	need_update=1
fi

packages=(dpdk-dev libdpdk-dev dpkg-dev gcc pkg-config xz-utils)
missing=()
for pkg in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ] || [ $need_update = 1 ] || ! apt-cache showsrc dpdk 2>/dev/null |
	grep -q '^Package: dpdk'; then
	if [ "$(id -u)" != 0 ]; then
		echo "not root: cannot install ${missing[*]:-the deb-src indexes}" >&2
		exit 1
	fi
	apt-get update -qq >/dev/null
fi

if [ ${#missing[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi
