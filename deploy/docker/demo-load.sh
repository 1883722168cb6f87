#!/bin/sh
# Demo traffic for "docker compose --profile demo up" (deploy/compose.yaml):
# WORKERS workers share the limit "demo" of capacity 3, each holding a slot
# for 1-4 s; one hold in ten is never released, as if its worker crashed, so
# the lease expires after its TTL. The dashboard then shows slots in use,
# waiters, wait times, and expirations beside releases.
set -u
URL=${LIMITD_URL:-http://limitd:7070}
WORKERS=${WORKERS:-8}

# sh is PID 1 in its container and would ignore "docker compose stop".
trap 'kill 0; exit 0' TERM INT

until curl -fsS -o /dev/null "$URL/readyz"; do sleep 1; done
curl -fsS -o /dev/null -X PUT "$URL/v1/limits/demo" -d '{"capacity": 3, "description": "compose demo traffic"}' || exit 1

rand() { echo $(( $(od -An -N1 -tu1 /dev/urandom) % $1 )); }

worker() {
	while :; do
		lease=$(curl -sS -X POST "$URL/v1/limits/demo/acquire" \
			-d "{\"holder\": \"demo-$1\", \"wait_seconds\": 30, \"ttl_seconds\": 10}")
		id=$(printf '%s' "$lease" | sed -n 's/.*"id": *"\([0-9A-Z]\{26\}\)".*/\1/p')
		if [ -z "$id" ]; then
			sleep 1 # limitd restarting: 503 or no connection
			continue
		fi
		sleep $(( $(rand 4) + 1 ))
		if [ "$(rand 10)" -ne 0 ]; then
			curl -sS -o /dev/null -X DELETE "$URL/v1/leases/$id"
		fi
	done
}

i=0
while [ "$i" -lt "$WORKERS" ]; do
	worker "$i" &
	i=$((i + 1))
done
wait
