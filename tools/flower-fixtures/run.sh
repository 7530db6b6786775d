#!/usr/bin/env bash
# Regenerate the Flower strategy fixtures from Flower's own code.
#
#   tools/flower-fixtures/run.sh [VENV_DIR]
#
# Creates (or reuses) a scratch virtual environment at VENV_DIR (default: a new temp
# dir), installs flwr==1.42.0 and numpy from PyPI, and writes the JSON fixtures to
# strategies/tests/fixtures/flower/. Seeded: a rerun gives byte-identical files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$(mktemp -d -t flwr-fixtures-venv.XXXXXX)}"
out="$repo/strategies/tests/fixtures/flower"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# numpy is pinned too: its dtype promotion and partition/median code decide
# the last bits of several results (see README.md).
"$venv/bin/pip" install --quiet "flwr==1.42.0" "numpy==2.4.6"

export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
"$venv/bin/python" "$here/generate.py" "$out"

echo
echo "Fixtures written to $out"
echo "Review with 'git diff --stat strategies/tests/fixtures/flower' and commit them."
