#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite (lint first). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export KBQA_DATA_DIR="${KBQA_DATA_DIR:-$ROOT/data}"
.venv/bin/ruff check app kbqa_client webui webui_st.py tests scripts
# pytest exits 5 when it collected no test: that is a failure here too, not a pass.
.venv/bin/pytest -q -ra --durations=15 "$@"
