#!/usr/bin/env bash
# Reruns every benchmark; each prints its figures and rewrites its own section of docs/benchmarks.md.
# Needs ../shared/eval and the prepared models (scripts/setup.sh). Takes about 50 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
for bench in bench_ingest bench_llm bench_chat bench_memory bench_eval bench_preview; do
  echo "== $bench"
  .venv/bin/python "scripts/$bench.py"
done
