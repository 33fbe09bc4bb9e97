#!/usr/bin/env bash
# Bring the product up on this machine, on loopback, and show it working:
# RabbitMQ, Redis and the MongoDB emulator, a Celery worker for both queues and
# the API under gunicorn at http://127.0.0.1:8000; then the tutorial's requests.
#
#   scripts/local-demo.sh          start (idempotent) and run the smoke check
#   scripts/local-demo.sh stop     stop what this script started (by PID)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${QUEUESVC_DEMO_STATE:-/var/lib/queuesvc-dev/demo}
API=http://127.0.0.1:8000
cd "$REPO"

log() { printf '\n== %s\n' "$*"; }

running() { [[ -s $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

stop_all() {
    for name in api worker mongo; do
        if running "$name"; then
            kill -TERM "$(cat "$STATE/$name.pid")"
            for _ in $(seq 100); do running "$name" || break; sleep 0.2; done
            echo "stopped $name"
        fi
        rm -f "$STATE/$name.pid"
    done
}

start() {  # start NAME COMMAND...: in the background, logging to $STATE/NAME.log
    local name=$1; shift
    if running "$name"; then echo "$name already running"; return; fi
    setsid "$@" >>"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

if [[ ${1:-} == stop ]]; then stop_all; exit 0; fi

log "services"
bash scripts/dev-services.sh
bash scripts/python-env.sh
mkdir -p "$STATE"; chmod 700 "$STATE"
set -a; . /var/lib/queuesvc-dev/test.env; set +a
[[ -n ${APP_TEST_MONGOECO_PYTHON:-} ]] || { echo "the demo needs Python 3.13 for the MongoDB emulator" >&2; exit 1; }

mongo_password_file=$STATE/mongo.password
[[ -s $mongo_password_file ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$mongo_password_file")
mongo_password=$(cat "$mongo_password_file")
(umask 077; printf '[{"username": "queuesvc", "password": "%s"}]\n' "$mongo_password" >"$STATE/mongo-users.json")
(umask 077; cat >"$STATE/queuesvc.env" <<ENV
APP_ENV=production
APP_MONGODB_URI='mongodb://queuesvc:$mongo_password@127.0.0.1:27017/queuesvc?authSource=admin&authMechanism=SCRAM-SHA-256&directConnection=true'
APP_REDIS_URL='$APP_TEST_REDIS_URL'
APP_BROKER_URL='$APP_TEST_BROKER_URL'
APP_BIND=127.0.0.1:8000
APP_WORKERS=2
PROMETHEUS_MULTIPROC_DIR='$STATE/metrics'
ENV
)
set -a; . "$STATE/queuesvc.env"; set +a

log "MongoDB emulator (mongoeco: a stand-in, not MongoDB), worker, API"
start mongo "$APP_TEST_MONGOECO_PYTHON" scripts/mongoeco_server.py --port 27017 \
    --engine sqlite --path "$STATE/mongo.sqlite3" --users-file "$STATE/mongo-users.json"
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/27017) 2>/dev/null && break; sleep 0.2; done
start worker .venv/bin/celery -A app.celery_app worker -Q default,imports -c 2 -l INFO
if ! running api; then rm -rf "$PROMETHEUS_MULTIPROC_DIR"; mkdir -p "$PROMETHEUS_MULTIPROC_DIR"; fi
start api .venv/bin/gunicorn -c python:app.gunicorn_conf 'app.main:create_app()'
for _ in $(seq 150); do curl -sf "$API/health/live" >/dev/null && break; sleep 0.2; done
if ! curl -sf "$API/health/live" >/dev/null; then
    echo "the API did not start; last lines of $STATE/api.log:" >&2
    tail -n 20 "$STATE/api.log" >&2
    exit 1
fi

bash scripts/smoke.sh "$API"
log "up: API $API (docs at $API/docs); logs in $STATE; stop with: scripts/local-demo.sh stop"
