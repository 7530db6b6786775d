#!/usr/bin/env bash
# Flower 1.42 + Ray vs Floret on the same Flower app (examples/flower-numpy: 10 float32
# arrays, 100k params, every ClientApp adds seeded noise, FedAvg from
# flwr.serverapp.strategy, 3 rounds, no federated evaluation), back to back.
#
#   tools/python-bench/compare.sh FEDERATION [REPEATS]    # simulation-200 or simulation-1k
#
# Floret runs examples/flower-numpy itself (history files in a scratch --output-dir).
# Needs target/release/flwr (cargo build --release --bin flwr), a venv with flwr==1.42.0
# (FLORET_PYTHON, default target/flwr-venv/bin/python) and one with flwr[simulation]==1.42.0
# and ray==2.55.1 (FLOWER_VENV, default target/flwr-ray-venv). Flower's run uses a copy of
# the app (Flower rewrites pyproject.toml's federations into its own config) and a warm
# local SuperLink (started by a first, unmeasured run), so Flower's figure is its run, not
# its SuperLink's start; the SuperLink, SuperExec, simulation and Ray processes all count
# toward its memory. Floret's figure is everything: `flwr` and its Python processes.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
fed=${1:?federation: simulation-200 or simulation-1k}
repeats=${2:-1}
floret_python=${FLORET_PYTHON:-$root/target/flwr-venv/bin/python}
flower_venv=${FLOWER_VENV:-$root/target/flwr-ray-venv}
flower_bin=$flower_venv/bin
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 RAY_USAGE_STATS_ENABLED=0
cfg="fraction-evaluate=0.0"
work=$(mktemp -d)
flower_home="$work/flower-home"
stop_flower() {
    # Only the local SuperLink (and its children) that this script's Flower runs started.
    for pid in $(pgrep -f -- "$flower_home" || true); do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_flower; rm -rf "$work"' EXIT
cp -r examples/flower-numpy "$work/app"
rm -rf "$work/app/runs"
flower() {
    (cd "$work/app" && FLWR_HOME="$flower_home" PATH="$flower_bin:$PATH" "$@")
}
echo "warming Flower's local SuperLink (not measured)" >&2
flower flwr run . local-simulation --run-config "$cfg num-server-rounds=1" --stream >/dev/null 2>&1
for i in $(seq "$repeats"); do
    echo "== Flower 1.42 + Ray, $fed, run $i (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    flower python3 "$root/tools/python-bench/peak_rss.py" --match "$flower_home" --match "ray::" \
        --match "$flower_venv" -- flwr run . "$fed" --run-config "$cfg" --stream \
        >"$work/flower.log" 2>&1 || true
    grep -h "peak RSS" "$work/flower.log" >&2 || tail -5 "$work/flower.log" >&2
    echo "== Floret, $fed, run $i (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    FLWR_HOME="$work/floret-home" python3 tools/python-bench/peak_rss.py --cpu -- \
        target/release/flwr run examples/flower-numpy "$fed" --python "$floret_python" --run-config "$cfg" \
        --output-dir "$work/floret-out" >"$work/floret.log" 2>&1 || true
    grep -h "peak RSS\|finished\|CPU seconds" "$work/floret.log" >&2
done
