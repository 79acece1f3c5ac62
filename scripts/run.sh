#!/usr/bin/env bash
# Installs what is missing, then starts the product on its embedded defaults (Milvus Lite, SQLite, the local
# LLM served by FastChat). Ctrl-C stops all of it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
HOST="${KBQA_API_HOST:-127.0.0.1}"
PORT="${KBQA_API_PORT:-7861}"
echo
echo "  web UI:        http://${KBQA_UI_HOST:-127.0.0.1}:${KBQA_UI_PORT:-8501}"
echo "  kbqa API:      http://$HOST:$PORT"
echo "  OpenAPI docs:  http://$HOST:$PORT/docs"
echo "  CLI:           .venv/bin/kbqa --help   (e.g. .venv/bin/kbqa kb create 合同库)"
echo
exec env KBQA_API_HOST="$HOST" KBQA_API_PORT="$PORT" .venv/bin/kbqa up
