#!/usr/bin/env bash
# Make sure the container test suite (tests/containers) has its engine and tools: Debian's
# podman with the runc runtime and netavark networks (name resolution between containers;
# netavark sets up each network's NAT with iptables, which Debian only suggests),
# debootstrap for the base images, and docker-compose (Compose v1) as the client of
# podman's Docker-compatible API. Installs them with apt-get where they are missing and this
# runs as root; otherwise fails clearly (the container tests never skip for want of them).
set -euo pipefail

PACKAGES=(podman runc netavark aardvark-dns iptables debootstrap docker-compose tar)
COMMANDS=(podman runc debootstrap docker-compose /usr/lib/podman/netavark iptables)

missing() {
  local command
  for command in "${COMMANDS[@]}"; do
    command -v "$command" >/dev/null 2>&1 || return 0
  done
  return 1
}

if missing; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  fi
fi
if missing; then
  echo "error: the container tests need ${COMMANDS[*]}." >&2
  echo "       Install them as root: apt-get install --no-install-recommends ${PACKAGES[*]}" >&2
  exit 1
fi
