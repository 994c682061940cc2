#!/usr/bin/env bash
# The long runs of issue 8, items 3-4: `consentry serve` killed with SIGKILL at random
# moments while it ingests, erases and exports (SQLite in production mode, i.e.
# synchronous=FULL, then PostgreSQL), and a private PostgreSQL cluster stopped under load.
# Prints one figures line per test (the lines BENCHMARKS.md quotes); the whole output is
# kept in target/crash-run.log.
#
#   tests/crash/run.sh                     # 10,000 events, 20 kills per test
#   CONSENTRY_CRASH_KILLS=40 tests/crash/run.sh
#   CONSENTRY_CRASH_SEED=123 tests/crash/run.sh   # replay the random moments of a run
#
# PostgreSQL: CONSENTRY_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# each test makes its own fresh database there. The database-fault test never touches that
# server: it runs its own cluster (initdb) on a free high port.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONSENTRY_CRASH_EVENTS="${CONSENTRY_CRASH_EVENTS:-10000}"
export CONSENTRY_CRASH_KILLS="${CONSENTRY_CRASH_KILLS:-20}"
PG_URL="${CONSENTRY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
unset CONSENTRY_TEST_DATABASE_URL
LOG=target/crash-run.log
mkdir -p target
: >"$LOG"

run() {
  local label=$1
  shift
  printf '\n== %s (%s)\n' "$label" "$(date -u +%FT%TZ)"
  local part
  part=$(mktemp)
  if ! cargo test --test api "$@" -- --nocapture --test-threads=1 >"$part" 2>&1; then
    cat "$part" >>"$LOG"
    grep -E 'CRASH_SEED|panicked|left:|right:|FAILED' "$part" | tail -20
    echo "FAILED: $label (full output in $LOG)"
    exit 1
  fi
  cat "$part" >>"$LOG"
  # The figures line of each test (the harness may print "test ... " before it).
  grep -oE '(crash_loss|db_faults) [a-z]* ?\[.*' "$part" || true
  rm -f "$part"
}

run "SQLite, production mode (synchronous=FULL)" crash_loss::
CONSENTRY_TEST_DATABASE_URL="$PG_URL" run "PostgreSQL" crash_loss::
run "PostgreSQL stopped under load (private cluster)" db_faults::
echo "all passed: $CONSENTRY_CRASH_EVENTS events, $CONSENTRY_CRASH_KILLS kills per test"
