#!/usr/bin/env bash
# Runs the job-queue benchmark behind docs/PERFORMANCE.md: `station bench`
# (release build) on SQLite and PostgreSQL, then the graphile-worker baseline on
# the same PostgreSQL, and prints one markdown table.
#
#   bench/run.sh [JOBS] [WORKERS] [BATCH] [GRAPHILE_CONCURRENCY]
#
# PostgreSQL comes from $STATION_TEST_POSTGRES_URL (default: the local trust-auth
# server at postgres://postgres@127.0.0.1:5432/test). Both tools work in
# throwaway schemas and drop them afterwards.
set -euo pipefail

jobs=${1:-20000}
workers=${2:-4}
batch=${3:-64}
graphile_concurrency=${4:-10}
pg_url=${STATION_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
root=$(cd "$(dirname "$0")/.." && pwd)

cd "$root"
cargo build --release -p station >&2
station_table=$(./target/release/station bench --jobs "$jobs" --workers "$workers" --batch "$batch" --database-url "$pg_url")

cd "$root/bench/graphile"
[ -d node_modules ] || npm install --no-audit --no-fund >&2
graphile_row=$(node bench.mjs --jobs "$jobs" --concurrency "$graphile_concurrency" --database-url "$pg_url")

echo
echo "$(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "$station_table"
echo "$graphile_row"
