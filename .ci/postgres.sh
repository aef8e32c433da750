#!/usr/bin/env bash
# Makes a local PostgreSQL ready for the PostgreSQL store's tests (internal/store/pg), idempotently:
# installs Debian's postgresql package if no server is installed, creates a cluster if none exists, starts it,
# creates the role and database for tests, waits until they accept connections, and prints (or writes to the
# file given as $1) the line that points the tests at them:
#
#	export CAIRN_TEST_PG=postgres://cairn:…@127.0.0.1:5432/cairn_test?sslmode=disable
#
# Usage: .ci/postgres.sh [env-file]. Needs root (apt-get, pg_ctlcluster, runuser). Environment knobs:
# CAIRN_PG_ROLE (cairn), CAIRN_PG_PASSWORD (cairn-test), CAIRN_PG_DB (cairn_test).
set -euo pipefail

role="${CAIRN_PG_ROLE:-cairn}"
password="${CAIRN_PG_PASSWORD:-cairn-test}"
db="${CAIRN_PG_DB:-cairn_test}"
out="${1:-}"

log() { echo "postgres.sh: $*" >&2; }

# 1. The server: Debian's packages, installed only when no server binary is present.
if ! command -v pg_lsclusters >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q postgresql
fi

# 2. The cluster: the first one pg_lsclusters lists, or a new "main" for the newest installed major version.
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1, $2}')
if [ -z "$cluster" ]; then
  major=$(ls /usr/lib/postgresql | sort -n | tail -1)
  log "no cluster: creating $major/main"
  pg_createcluster "$major" main >&2
  cluster="$major main"
fi
read -r major name <<<"$cluster"
port=$(pg_lsclusters --no-header | awk -v v="$major" -v c="$name" '$1==v && $2==c {print $3}')
status=$(pg_lsclusters --no-header | awk -v v="$major" -v c="$name" '$1==v && $2==c {print $4}')
if [ "$status" != "online" ]; then
  log "starting cluster $major/$name on port $port"
  pg_ctlcluster "$major" "$name" start
fi

# 3. Wait until it accepts connections (on TCP, as the tests will connect).
for i in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$port"; then
    break
  fi
  if [ "$i" = 60 ]; then
    log "PostgreSQL $major/$name is not accepting connections on 127.0.0.1:$port after 30 s"
    exit 1
  fi
  sleep 0.5
done

# 4. The role and database for tests. The password is set on every run, so a changed CAIRN_PG_PASSWORD applies.
psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$port" "$@"; }
psql_admin -v role="$role" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'password') \gexec
SQL
psql_admin -v role="$role" -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL

# 5. Check the way the tests connect: TCP to 127.0.0.1 with the password.
url="postgres://$role:$password@127.0.0.1:$port/$db?sslmode=disable"
for i in $(seq 1 20); do
  if psql -X -q -d "$url" -c 'SELECT 1' >/dev/null 2>&1; then
    break
  fi
  if [ "$i" = 20 ]; then
    psql -X -d "$url" -c 'SELECT 1' # show why
    exit 1
  fi
  sleep 0.5
done
log "PostgreSQL $major/$name ready: database $db, role $role, 127.0.0.1:$port"

line="export CAIRN_TEST_PG='$url'"
if [ -n "$out" ]; then
  echo "$line" >"$out"
else
  echo "$line"
fi
