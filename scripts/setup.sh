#!/usr/bin/env bash
# Installs what is missing, idempotently: system packages, the .venv with the project, the prepared models.
# A second run does nothing but checks (the venv is reused while pyproject.toml is unchanged; models stay
# under the data folder).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="$ROOT/.venv"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing system packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
    return 0
  fi
  log "installing system packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# CJK (Droid Sans Fallback) and Latin (DejaVu) fonts let the tests generate Chinese PDFs with fpdf2.
apt_install fonts-droid-fallback fonts-dejavu-core
# OCR (app/kb/loaders/ocr.py): Tesseract 5 with its Simplified Chinese and English models, all Debian packages.
apt_install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng
# Debian's Chromium: the browser the end-to-end UI test drives through Playwright (executable_path=/usr/bin/chromium).
apt_install chromium
# PostgreSQL's server binaries (initdb, pg_ctl under /usr/lib/postgresql/<version>/bin): the tests start a private
# server on 127.0.0.1 to run the catalog on PostgreSQL too. Debian's package also starts a system cluster; the
# tests never use it.
apt_install postgresql
# Debian's docker-compose (1.29): tests/test_deploy.py validates docker-compose.yml with `docker-compose config`,
# which needs no Docker engine.
apt_install docker-compose

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.kbqa-installed"
WANT="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  log "installing Python packages (pip's cache makes this quick the second time)"
  "$VENV/bin/pip" install -q --upgrade "pip>=24" "setuptools<81" wheel
  # llama-cpp-python compiles llama.cpp on its first install (minutes); pip caches the wheel for the next one.
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" "$VENV/bin/pip" install -q -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi

log "preparing models"
"$VENV/bin/kbqa" models prepare
