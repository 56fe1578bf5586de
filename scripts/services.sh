#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that the tests use are up on 127.0.0.1.
# Starts them where they are installed but not running; fails clearly where they
# cannot be had (the tests never skip for want of them).
#   CHARNN_TEST_PG_URL     admin URL the tests create their databases with
#   CHARNN_TEST_REDIS_URL  a Redis the tests may use (each test picks its own db or server)
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT="${CHARNN_TEST_PG_PORT:-5432}"
REDIS_PORT="${CHARNN_TEST_REDIS_PORT:-6379}"

have() { command -v "$1" >/dev/null 2>&1; }

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if have pg_ctlcluster && [ -d /etc/postgresql ]; then
    echo "==> starting PostgreSQL"
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
fi
if ! pg_up; then
  echo "error: PostgreSQL is not reachable on $PG_HOST:$PG_PORT and could not be started." >&2
  echo "       Install it (apt-get install postgresql) or point CHARNN_TEST_PG_PORT at one." >&2
  exit 1
fi

if ! redis_up; then
  if have redis-server; then
    echo "==> starting Redis"
    mkdir -p /tmp/charnn-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /tmp/charnn-redis --logfile /tmp/charnn-redis/redis.log
    for _ in $(seq 1 30); do redis_up && break; sleep 0.2; done
  fi
fi
if ! redis_up; then
  echo "error: Redis is not reachable on 127.0.0.1:$REDIS_PORT and could not be started." >&2
  echo "       Install it (apt-get install redis-server) or point CHARNN_TEST_REDIS_PORT at one." >&2
  exit 1
fi
