#!/usr/bin/env bash
# Parser fuzzing (issue 8): runs every cargo-fuzz target in fuzz/ for SECONDS each
# (default 30) with libFuzzer, then stops. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Exits non-zero if any target crashed, leaked,
# ran out of memory (-rss_limit_mb=2048) or took over 10 s on one input (-timeout=10).
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# Each target starts from fuzz/corpus/<target> (grown by earlier runs, not committed),
# seeds made from the repository's examples (tests/fuzz/seed.py), and the committed
# regressions in fuzz/regressions/<target>, which are all re-run first. A failing input
# is saved under fuzz/artifacts/<target>/; logs go to fuzz/artifacts/<target>.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-30}"
shift || true
export CARGO_TERM_COLOR=never

cargo +nightly fuzz build || exit 2
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
python3 tests/fuzz/seed.py fuzz/corpus >/dev/null || exit 2
mkdir -p fuzz/artifacts

failed=()
printf '%-18s %8s %12s %8s  %s\n' target seconds executions corpus result
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t.log"
  start=$(date +%s)
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  size=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc): $(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+|ERROR: AddressSanitizer: [a-z-]+' "$log" || echo 'see log')"
    failed+=("$t")
  fi
  printf '%-18s %8s %12s %8s  %s\n' "$t" "$took" "${execs:-?}" "$size" "$result"
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]} (inputs in fuzz/artifacts/<target>/, logs beside them)" >&2
  exit 1
fi
echo "every target ran ${secs}s without a finding"
