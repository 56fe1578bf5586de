# Sourced before the README's compose commands: `docker compose ...` becomes Compose v1
# (`docker-compose`) against podman's Docker-compatible API (DOCKER_HOST), and `--wait`,
# which v1 lacks, becomes what v2 does: wait until every container of the project is
# running and, where it has a health check, healthy (the tests run the checks).
docker() {
	if [ "${1:-}" != compose ]; then
		echo "the container tests run only 'docker compose', not: docker $*" >&2
		return 2
	fi
	shift
	local args=() wait=0 arg
	for arg in "$@"; do
		if [ "$arg" = --wait ]; then wait=1; else args+=("$arg"); fi
	done
	local started
	started="$(date +%s.%N)"
	docker-compose "${args[@]}"
	if [ "$wait" = 1 ]; then
		compose_wait "${CHARNN_TEST_WAIT_SECONDS:-300}"
	fi
	if [ -n "${CHARNN_TEST_TIMINGS:-}" ]; then  # "<subcommand> <seconds>" per command
		echo "${args[0]} $(awk "BEGIN { print $(date +%s.%N) - $started }")" >>"$CHARNN_TEST_TIMINGS"
	fi
}

compose_wait() {
	local deadline=$((SECONDS + $1)) statuses
	while :; do
		statuses="$(podman ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
			--format '{{.Names}} {{.Status}}')"
		if [ -n "$statuses" ] && ! grep -qvE '^\S+ Up .*\(healthy\)$|^\S+ Up [^(]*$' <<<"$statuses"; then
			return 0
		fi
		if grep -qE '^\S+ Exited' <<<"$statuses" || [ "$SECONDS" -ge "$deadline" ]; then
			echo "docker compose up --wait: not healthy:" >&2
			echo "$statuses" >&2
			return 1
		fi
		sleep 1
	done
}
