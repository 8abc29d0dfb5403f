#!/usr/bin/env bash
# Side-by-side benchmark: ThingsBoard IoT Gateway and EduGate on the shared harness,
# interleaved point by point (same sitting, same noise), results in bench/results/{tbgw,edugate}/.
#
#   bash bench/compare_suite.sh                 # the points behind issue 6's targets (~75 min)
#   bash bench/compare_suite.sh idle w1         # only some parts: idle w1 w1-block w2 w2-heavy overload repeat
#   /tmp/bench-venv/bin/python /work/shared/bench/report.py tbgw edugate --results bench/results
#
# Needs the harness set up (/work/shared/bench/setup.sh: $BENCH_VENV, $TBGW_VENV, mosquitto).
# One benchmark at a time; the harness owns 127.0.0.1:1883 and :5020 while it runs.
# (The harness's run_suite.sh appends --out after the subcommand, where bench.py does not
# accept it, and passes "tbgw" by name, which load() cannot import; so this script calls
# bench.py itself.)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_DIR:-/work/shared/bench}
py=${BENCH_VENV:-/tmp/bench-venv}/bin/python
out=${BENCH_OUT:-$repo/bench/results}
edugate=$repo/bench/edugate_adapter.py
# The ThingsBoard adapter by path: gateways/__init__.py's load() fails for a plain name
# ("tbgw": UnboundLocalError on importlib, the name is bound only in its path branch).
tbgw=$harness/gateways/tbgw.py
parts=${*:-idle w1 w1-block w2 w2-heavy overload}
cd "$harness"

run() {  # run GATEWAY ARGS...: one bench.py run
  local gw=$1; shift
  echo "### $(date +%H:%M:%S) $gw $*"
  "$py" bench.py --out "$out" "$@" --gateway "$gw" || echo "### FAILED: $gw $*"
}
both() { run "$tbgw" "$@"; run "$edugate" "$@"; }

for part in $parts; do
  case $part in
    idle)
      both idle --duration 30 ;;
    w1)
      for spec in "100 1000" "100 250" "100 100" "10 1000"; do
        set -- $spec
        both w1 --devices "$1" --registers 10 --poll-ms "$2"
      done ;;
    w1-block)
      for poll in 1000 250 100; do
        both w1 --devices 100 --registers 10 --poll-ms "$poll" --layout block
      done ;;
    w2)
      bp=--broker-persistence
      both w2 --devices 10 --registers 10 --poll-ms 1000 --outage 60 --storage sqlite --kill-during-outage $bp
      run "$tbgw" w2 --devices 10 --registers 10 --poll-ms 1000 --outage 60 --storage memory --kill-during-outage $bp ;;
    w2-heavy)
      bp=--broker-persistence
      both w2 --devices 100 --registers 10 --poll-ms 1000 --outage 60 --storage sqlite $bp
      run "$tbgw" w2 --devices 100 --registers 10 --poll-ms 1000 --outage 60 --storage memory $bp ;;
    overload)
      # EduGate alone, 20 000 and 40 000 dp/s asked over one Modbus connection (ThingsBoard's limit is ~4 000)
      run "$edugate" w1 --devices 200 --registers 10 --poll-ms 100
      run "$edugate" w1 --devices 200 --registers 10 --poll-ms 50 ;;
    repeat)
      for n in 2 3; do
        for poll in 1000 100; do
          both w1 --devices 100 --registers 10 --poll-ms "$poll" \
            --label "w1-d100-r10-p$poll-per-register-memory-rep$n"
        done
      done ;;
    *) echo "unknown part $part" ;;
  esac
done
