#!/usr/bin/env bash
# Install and start, on loopback only, the real services the test suite and the
# local demo need: RabbitMQ (a vhost and a non-guest user), Redis (with a
# password), and the mongoeco wire-protocol *emulator* environment (a MongoDB
# stand-in: no mongod can be installed here, see README). Idempotent.
#
# Writes the connection settings to $QUEUESVC_DEV_ENV (default
# /var/lib/queuesvc-dev/test.env, mode 0600), which tests and scripts source.
set -euo pipefail

STATE_DIR=${QUEUESVC_DEV_STATE:-/var/lib/queuesvc-dev}
ENV_FILE=${QUEUESVC_DEV_ENV:-$STATE_DIR/test.env}
REPO=$(cd "$(dirname "$0")/.." && pwd)
MONGOECO_VENV=${MONGOECO_VENV:-$REPO/.venv-mongoeco}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[dev-services] %s\n' "$*"; }

install_packages() {
    local missing=()
    for pkg in rabbitmq-server redis-server wrk; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
    fi
}

secret() {  # a random secret, created once and kept in the state directory
    local file=$STATE_DIR/$1
    [[ -s $file ]] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$file")
    cat "$file"
}

start_rabbitmq() {
    # Loopback only; the host has no systemd, so use the package's init script.
    cat > /etc/rabbitmq/rabbitmq-env.conf <<'CONF'
NODE_IP_ADDRESS=127.0.0.1
CONF
    cat > /etc/rabbitmq/rabbitmq.conf <<'CONF'
loopback_users.guest = true
management.tcp.ip = 127.0.0.1
# Above the longest task's hard time limit (see app settings).
consumer_timeout = 3600000
CONF
    if ! rabbitmqctl -q status >/dev/null 2>&1; then
        log "starting rabbitmq-server"
        /etc/init.d/rabbitmq-server start >/dev/null
    fi
    rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || rabbitmqctl -q wait --timeout 60 /var/run/rabbitmq/pid
    rabbitmqctl -q start_app >/dev/null 2>&1 || true
    local password; password=$(secret rabbitmq.password)
    rabbitmqctl -q list_vhosts | grep -qx queuesvc || rabbitmqctl -q add_vhost queuesvc
    if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx queuesvc; then
        rabbitmqctl -q change_password queuesvc "$password" >/dev/null
    else
        rabbitmqctl -q add_user queuesvc "$password" >/dev/null
    fi
    rabbitmqctl -q set_permissions -p queuesvc queuesvc '.*' '.*' '.*' >/dev/null
    rabbitmqctl -q list_users | awk '{print $1}' | grep -qx guest && rabbitmqctl -q delete_user guest >/dev/null
    return 0
}

start_redis() {
    local password; password=$(secret redis.password)
    local conf=$STATE_DIR/redis.conf
    (umask 077; cat > "$conf" <<CONF
bind 127.0.0.1
port 6379
protected-mode yes
requirepass $password
daemonize yes
pidfile $STATE_DIR/redis.pid
dir $STATE_DIR
appendonly yes
maxmemory-policy noeviction
logfile $STATE_DIR/redis.log
CONF
    )
    if ! redis-cli -a "$password" --no-auth-warning ping >/dev/null 2>&1; then
        log "starting redis-server"
        # Debian's init script would start the packaged instance without a
        # password; run our own configuration instead.
        /etc/init.d/redis-server stop >/dev/null 2>&1 || true
        redis-server "$conf"
        for _ in $(seq 50); do
            redis-cli -a "$password" --no-auth-warning ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
}

setup_mongoeco() {
    # The MongoDB stand-in needs Python >= 3.13 (pyenv's on this machine).
    local py=""
    # Run each candidate: pyenv's shims exist even where they cannot run.
    for candidate in python3.13 python3 /root/.pyenv/versions/3.1[3-9]*/bin/python3; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
            py=$(command -v "$candidate"); break
        fi
    done
    if [[ -z $py ]]; then
        log "no Python 3.13: MongoDB tests will be skipped unless APP_TEST_MONGODB_URI names a mongod"
        return 0
    fi
    if [[ ! -x $MONGOECO_VENV/bin/python ]] || ! "$MONGOECO_VENV/bin/python" -c 'import mongoeco.wire' 2>/dev/null; then
        log "installing mongoeco[wire] into $MONGOECO_VENV"
        "$py" -m venv "$MONGOECO_VENV"
        "$MONGOECO_VENV/bin/pip" install -q 'mongoeco[wire]==4.11.0'
    fi
    echo "APP_TEST_MONGOECO_PYTHON=$MONGOECO_VENV/bin/python" >> "$ENV_FILE.new"
}

mkdir -p "$STATE_DIR"; chmod 700 "$STATE_DIR"
install_packages
start_rabbitmq
start_redis
(umask 077; cat > "$ENV_FILE.new" <<ENV
APP_TEST_BROKER_URL=amqp://queuesvc:$(secret rabbitmq.password)@127.0.0.1:5672/queuesvc
APP_TEST_REDIS_URL=redis://:$(secret redis.password)@127.0.0.1:6379/0
APP_TEST_REDIS_CONF=$STATE_DIR/redis.conf
APP_TEST_RABBITMQCTL=rabbitmqctl
ENV
)
setup_mongoeco
mv "$ENV_FILE.new" "$ENV_FILE"
log "services up; settings in $ENV_FILE"
