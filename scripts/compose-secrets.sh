#!/usr/bin/env bash
# The compose deployment's secrets, as files under secrets/ (never in .env or an
# environment): the PostgreSQL password and the API keys, each random. Keeps files that
# already exist, so running it again changes nothing.
#   secrets/postgres_password   the registry database's password
#   secrets/api_keys            admin:<key>,predict:<key> (CHARNN_API_KEYS's format)
# A key for curl: grep -o 'admin:[^,]*' secrets/api_keys | cut -d: -f2
set -euo pipefail
cd "$(dirname "$0")/.."

random_secret() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40; }

umask 077
mkdir -p secrets
# The folder is the owner's alone; the files in it must be readable by the containers'
# unprivileged users (Compose mounts them as they are).
chmod 700 secrets
if [ ! -s secrets/postgres_password ]; then
  random_secret > secrets/postgres_password
fi
if [ ! -s secrets/api_keys ]; then
  printf 'admin:%s,predict:%s' "$(random_secret)" "$(random_secret)" > secrets/api_keys
fi
chmod 644 secrets/postgres_password secrets/api_keys
echo "secrets/postgres_password and secrets/api_keys are ready"
