#!/bin/sh
# As the official image does: Redis listens on every interface of its container without
# protected mode, which would refuse the other containers' connections.
set -e
if [ "$1" = "redis-server" ]; then
	shift
	exec redis-server --protected-mode no "$@"
fi
exec "$@"
