#!/usr/bin/env bash
# Waits until every container of a compose project reports healthy (the image's health check
# asks GET /health), for at most TIMEOUT seconds; prints the unhealthy ones' logs on failure.
#
#   deploy/wait-healthy.sh PROJECT [TIMEOUT]
set -euo pipefail
project=${1:?usage: wait-healthy.sh PROJECT [TIMEOUT_SECONDS]}
timeout=${2:-180}
deadline=$((SECONDS + timeout))
while :; do
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
    if [ -z "$ids" ]; then
        echo "wait-healthy: project $project has no containers" >&2
        exit 1
    fi
    pending=$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' $ids \
        | awk '$2 != "healthy" { sub("^/", "", $1); print $1 "(" $2 ")" }')
    if [ -z "$pending" ]; then
        echo "wait-healthy: every node of $project is healthy"
        exit 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "wait-healthy: not healthy after ${timeout}s: $pending" >&2
        for name in $pending; do
            echo "--- last log lines of ${name%%(*}" >&2
            docker logs --tail 30 "${name%%(*}" >&2 || true
        done
        exit 1
    fi
    sleep 2
done
