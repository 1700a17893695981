#!/usr/bin/env bash
# Runs every fuzz target of every fuzz crate (proto, http, engine, tee, verifier, peer) for SECONDS each
# (default 60), one after the other, on nightly with cargo-fuzz, and prints one line per target:
# executions and crashes. Exits non-zero if any target crashed or failed to build or run.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # TARGETs: only these (names as in fuzz/Cargo.toml)
#
# Each target's seeds (<crate>/fuzz/seeds/<target>/, committed) are copied into its corpus
# (<crate>/fuzz/corpus/<target>/, git-ignored, kept between runs) first; libFuzzer reads the
# corpus, the seeds and the committed crash inputs (<crate>/fuzz/regressions/<target>/) and
# writes new inputs to the corpus only. Crash inputs land in <crate>/fuzz/artifacts/<target>/:
# fix the bug, then copy the input to regressions/<target>/ (tests/fuzz_corpus.rs replays it on
# stable) and name a unit test after it. Full logs: <crate>/fuzz/target/logs/<target>.log.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail

secs=${1:-60}
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(($# > 0 ? 1 : 0))
only=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
crates=(proto http engine tee verifier peer)

wanted() {
    [[ ${#only[@]} -eq 0 ]] && return 0
    local t
    for t in "${only[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}

summary=()
failed=0
for crate in "${crates[@]}"; do
    dir=$root/$crate
    logs=$dir/fuzz/target/logs
    mkdir -p "$logs"
    targets=()
    for t in $(cd "$dir" && cargo +nightly fuzz list); do
        if wanted "$t"; then targets+=("$t"); fi
    done
    [[ ${#targets[@]} -eq 0 ]] && continue
    echo "== $crate: building ${#targets[@]} target(s)" >&2
    if ! (cd "$dir" && cargo +nightly fuzz build --debug-assertions) >"$logs/build.log" 2>&1; then
        tail -n 30 "$logs/build.log" >&2
        summary+=("$(printf '%-9s %-18s build failed (see %s)' "$crate" '*' "$logs/build.log")")
        failed=1
        continue
    fi
    for t in "${targets[@]}"; do
        corpus=$dir/fuzz/corpus/$t
        seeds=$dir/fuzz/seeds/$t
        regressions=$dir/fuzz/regressions/$t
        log=$logs/$t.log
        mkdir -p "$corpus" "$dir/fuzz/artifacts/$t"
        if [[ -d $seeds ]]; then cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true; fi
        inputs=("$corpus")
        [[ -d $seeds ]] && inputs+=("$seeds")
        [[ -d $regressions ]] && inputs+=("$regressions")
        echo "== $crate/$t: ${secs}s" >&2
        set +e
        (cd "$dir" && cargo +nightly fuzz run --debug-assertions "$t" "${inputs[@]}" -- \
            -max_total_time="$secs" -print_final_stats=1) >"$log" 2>&1
        rc=$?
        set -e
        execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -n 1 |
            grep -Eo '[0-9]+$' || true)
        if [[ -z $execs ]]; then
            execs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -n 1 | grep -Eo '[0-9]+' || true)
        fi
        crashes=$(grep -c 'Test unit written to' "$log" || true)
        line=$(printf '%-9s %-18s %12s execs  %s crashes' "$crate" "$t" "${execs:-?}" "$crashes")
        if [[ $crashes -gt 0 ]]; then
            line+="  $(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' |
                tr '\n' ' ')"
            failed=1
        elif [[ $rc -ne 0 ]]; then
            line+="  (exit $rc, see $log)"
            failed=1
        fi
        echo "$line" >&2
        summary+=("$line")
    done
done

echo
printf '%-9s %-18s %12s\n' crate target executions
printf '%s\n' "${summary[@]}"
exit "$failed"
