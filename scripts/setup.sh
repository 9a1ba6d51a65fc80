#!/usr/bin/env bash
# Set up .venv for ptune: CPU torch, then ptune (editable) with its test extras.
# Idempotent: a second run only checks a stamp and returns. Needs python3 (3.10+) and a
# reachable pip registry the first time. PYTHON=... picks another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.ptune-setup

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# the stamp records what was installed; reinstall when pyproject.toml changes
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$PY" --version 2>&1)"
installed() {  # are these modules importable? (found, not imported: fast)
    "$PY" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in sys.argv[1:]))" "$@"
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && installed ptune torch pytest; then
    exit 0
fi

LOG=$VENV/setup.log
pip_install() {  # pip's output goes to the log, shown only when pip fails
    if ! "$PY" -m pip install --disable-pip-version-check "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "setup: pip install $* failed (log: $LOG)" >&2
        exit 1
    fi
}
if ! installed torch; then
    echo "setup: installing torch 2.13.0 (CPU)"
    pip_install torch==2.13.0
fi
echo "setup: installing ptune (editable) with test extras"
pip_install -e '.[test]'
echo "$want" > "$STAMP"
echo "setup: done ($("$PY" -c 'import ptune, torch; print("ptune", ptune.__version__, "torch", torch.__version__)'))"
