#!/usr/bin/env bash
# The CLI benchmarks of docs/benchmarks.md, against a fresh `gantry dev --gpus 8 --cpus 64`.
#   (a) a serial loop of N `gantry submit` calls, one process each: acknowledged submits/s
#   (b) N trivial jobs (`true`) from the first submit until all have ended: jobs/s
#       (serial submits, and with P submitting processes at once)
#   (c) `gantry queue` latency with N pending jobs (hyperfine, if installed)
# Usage: ctl/bench/cli-bench.sh [N] [P]   (build first: cargo build --release)
set -euo pipefail
N=${1:-2000}
P=${2:-4}
G=${GANTRY_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/gantry}
work=$(mktemp -d)
trap 'kill "$dev" 2>/dev/null; wait "$dev" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"

start_dev() {
  rm -rf "$work/dev"
  "$G" dev --listen 127.0.0.1:0 --data-dir "$work/dev" --gpus 8 --cpus 64 >"$work/dev.out" 2>"$work/dev.err" &
  dev=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/dev.out" 2>/dev/null && break
    sleep 0.1
  done
  GANTRY_SERVER=$(sed -n 's/.*listening on \(http:[^;]*\);.*/\1/p' "$work/dev.out")
  export GANTRY_SERVER
  until "$G" nodes 2>/dev/null | grep -q dev-node-1; do sleep 0.1; done
}
stop_dev() { kill "$dev"; wait "$dev" 2>/dev/null || true; }
now() { date +%s.%N; }
rate() { echo "scale=1; $1 / ($3 - $2)" | bc; }
active() { "$G" queue -o json | grep -c '"id"' || true; }
wait_idle() { while [ "$(active)" != 0 ]; do sleep 0.05; done; }

start_dev
t0=$(now)
for _ in $(seq "$N"); do "$G" submit --parsable -- true >/dev/null; done
t1=$(now)
wait_idle
t2=$(now)
echo "(a) serial submits (jobs running meanwhile): $(rate "$N" "$t0" "$t1") submits/s"
echo "(b) $N jobs, serial submits, first submit to all ended: $(rate "$N" "$t0" "$t2") jobs/s"
stop_dev

start_dev
t0=$(now)
seq "$N" | xargs -P "$P" -I{} "$G" submit --parsable -- true >/dev/null
wait_idle
t1=$(now)
echo "(b) $N jobs, $P submitting processes, first submit to all ended: $(rate "$N" "$t0" "$t1") jobs/s"

"$G" drain dev-node-1 --reason benchmark >/dev/null
t0=$(now)
for _ in $(seq "$N"); do "$G" submit --parsable -- true >/dev/null; done
t1=$(now)
echo "(a') serial submits, node drained (no job runs): $(rate "$N" "$t0" "$t1") submits/s"
echo "    pending now: $(active)"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs 100 "$G queue" "$G queue -o json" 2>&1 | grep -E "Benchmark|Time|Range" | sed 's/^/(c) /'
fi
stop_dev
