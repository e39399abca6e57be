#!/usr/bin/env bash
# The replication benchmarks of docs/benchmarks.md: a 3-replica gantry-schedd group on
# 127.0.0.1 (separate processes, one data directory each).
#   - acknowledged submits/s and commit latency (p50/p99) with 1, 8 and 64 clients
#     (`gantry bench submit`; no node is registered, so the jobs stay queued)
#   - leader failover: kill -9 of the leader to the first new scheduling decision (a job
#     submitted right after the kill is allocated by the new leader)
# Usage: ctl/bench/replication-bench.sh [SUBMITS]   (build first: cargo build --release)
set -euo pipefail
N=${1:-4000}
bin=${GANTRY_BIN_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
G=$bin/gantry
work=$(mktemp -d)
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

read -r p1 p2 p3 < <(python3 -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
ports=("$p1" "$p2" "$p3")
peers="1=127.0.0.1:$p1,2=127.0.0.1:$p2,3=127.0.0.1:$p3"
export GANTRY_SERVER="127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$p3"
for id in 1 2 3; do
  "$bin/gantry-schedd" --id "$id" --peers "$peers" --listen "127.0.0.1:${ports[$((id - 1))]}" \
    --data-dir "$work/r$id" >"$work/r$id.out" 2>"$work/r$id.log" &
  pids[id]=$!
done
# Bounded: a replica that cannot start (its port taken since it was picked) ends the run.
for _ in $(seq 300); do
  "$G" queue >/dev/null 2>&1 && break
  for id in 1 2 3; do
    if ! kill -0 "${pids[id]}" 2>/dev/null; then
      echo "replica $id did not start: $(tail -1 "$work/r$id.log")" >&2
      exit 1
    fi
  done
  sleep 0.1
done
"$G" queue >/dev/null

for clients in 1 8 64; do
  "$G" bench submit --clients "$clients" --count "$N"
done

# Failover: a node, then kill -9 of the leader and time a fresh job to RUNNING. The queue
# holds the jobs submitted above; cancel them first so that the new job is next.
"$G" queue -o json | python3 -c 'import json,sys; print("\n".join(str(j["id"]) for j in json.load(sys.stdin)))' \
  | xargs -r -n 500 "$G" cancel >/dev/null
"$bin/gantry-noded" --name bench-node --data-dir "$work/node" --gpus 1 --cpus 2 --mem 2G \
  >"$work/node.out" 2>"$work/node.log" &
pids[9]=$!
until "$G" nodes 2>/dev/null | grep -q bench-node; do sleep 0.1; done
leader=$("$G" admin replicas -o json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin) if r["role"]=="leader"][0])')
t0=$(date +%s.%N)
kill -9 "${pids[$leader]}"
id=$("$G" submit --parsable -- true)
until [ "$("$G" show "$id" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" != PENDING ]; do
  sleep 0.02
done
t1=$(date +%s.%N)
echo "failover: replica $leader killed; job $id allocated by the new leader after $(echo "$t1 - $t0" | bc) s"
