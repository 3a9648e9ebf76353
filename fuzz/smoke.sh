#!/usr/bin/env bash
# Fuzz smoke run, called by .ci/run: builds every target, then runs each one
# for a short fixed time on a scratch copy of its committed seed corpus (so
# CI never grows corpus/). Any crash, panic, leak or timeout fails the run;
# the reproducer is left in fuzz/artifacts/<target>/.
#
#   bash fuzz/smoke.sh            # 20 s per target
#   FUZZ_SECONDS=600 bash fuzz/smoke.sh cbor_roundtrip   # one target, longer
set -euo pipefail
cd "$(dirname "$0")"

# cargo-fuzz needs nightly-only flags (-Zsanitizer, -Cpasses); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "==> building fuzz targets"
cargo fuzz build

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  if [ -d "corpus/$target" ]; then
    cp -R "corpus/$target/." "$scratch/$target/"
  fi
  echo "==> fuzzing $target for ${seconds}s"
  status=0
  cargo fuzz run "$target" "$scratch/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$scratch/$target.log" 2>&1 || status=$?
  grep -E 'DONE|stat::number_of_executed_units|stat::average_exec_per_sec|panicked|ERROR|SUMMARY|Test unit written' \
    "$scratch/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$scratch/$target.log" >&2
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz smoke run failed for: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz smoke run: ${#targets[@]} targets, no crash"
