#!/usr/bin/env bash
# CPU that `mlflow server` costs with and without its server-side job execution
# (MLFLOW_SERVER_ENABLE_JOB_EXECUTION; docs/measurements.md, tenth session). For each setting:
# a sqlite-backed server on a free port, until /health answers, then 30 s idle; CPU-seconds of
# this machine (all processes, from /proc/stat: run it on a quiet machine), medians not taken.
#   bash benchmarks/bench_mlflow_server.sh [repeats]
set -euo pipefail
cd "$(dirname "$0")/.."
MLFLOW=${MLFLOW:-.venv/bin/mlflow}
cpu() { awk '/^cpu /{print ($2+$3+$4)}' /proc/stat; }
tick=$(getconf CLK_TCK)
for _ in $(seq "${1:-2}"); do
  for jobs in true false; do
    tmp=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    c0=$(cpu); t0=$(date +%s.%N)
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$jobs setsid "$MLFLOW" server --host 127.0.0.1 --port "$port" \
      --backend-store-uri "sqlite:///$tmp/s.db" --serve-artifacts --artifacts-destination "$tmp/a" --workers 1 \
      > "$tmp/log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do sleep 0.2; done
    c1=$(cpu); t1=$(date +%s.%N); sleep 30; c2=$(cpu)
    kill -TERM -- "-$pid"; sleep 3; kill -KILL -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    rm -rf "$tmp"
    echo "job execution $jobs: up in $(echo "$t1 - $t0" | bc) s, $(( (c1 - c0) / tick )) CPU-s until up, $(( (c2 - c1) / tick )) CPU-s in the next 30 s"
  done
done
