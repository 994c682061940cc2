#!/usr/bin/env bash
# Schema-driven API testing: schemathesis against the served /openapi.json, once per role
# (admin, dpo, auditor, ingest, esp), every check on, a fixed seed. See run.py.
#   tests/schemathesis/run.sh              short run on SQLite (CI)
#   tests/schemathesis/run.sh --long       more cases per operation
#   tests/schemathesis/run.sh --pg         on a fresh PostgreSQL database (127.0.0.1:5432)
# Extra arguments go to run.py (--seed N, --max-examples N, --role ROLE, --keep).
set -euo pipefail
cd "$(dirname "$0")/../.."
SCHEMATHESIS_VERSION=4.32.5
if ! python3 -m pip show schemathesis 2>/dev/null | grep -qx "Version: $SCHEMATHESIS_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build --quiet --bin consentry
exec python3 tests/schemathesis/run.py target/debug/consentry "$@"
