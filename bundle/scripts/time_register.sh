#!/usr/bin/env bash
# Whole-command time of one `samir register` run with a cold embedding cache (an empty XDG_CACHE_HOME):
#   bundle/scripts/time_register.sh FIXED MOVING [MOVING_LABEL FIXED_LABEL] [--key value ...]
# Prints one line: wall seconds (start-up, loading, registration, scoring, writing), the registration's
# own seconds, method, Dice before -> after, folding, the guard's choice, per-stage seconds and the
# 1-minute load (run it on a quiet machine, one pair after the other).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
[[ $# -ge 2 ]] || { echo "usage: $0 FIXED MOVING [MOVING_LABEL FIXED_LABEL] [--key value ...]" >&2; exit 2; }
FIXED=$1; MOVING=$2; shift 2
LABELS=()
if [[ $# -ge 2 && $1 != --* ]]; then LABELS=(--moving_label "$1" --fixed_label "$2"); shift 2; fi
OUT=$(mktemp -d); export XDG_CACHE_HOME=$(mktemp -d)
trap 'rm -rf "$OUT" "$XDG_CACHE_HOME"' EXIT
T0=$(date +%s.%N)
"$PY" -m samir.cli register "$FIXED" "$MOVING" --out "$OUT/out" "${LABELS[@]}" --quiet "$@" > "$OUT/stdout.json"
T1=$(date +%s.%N)
"$PY" - "$OUT/out/metrics.json" "$T0" "$T1" <<'PYEOF'
import json, os, sys
m = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
before, after = m.get("dice_mean_before"), m.get("dice_mean")
dice = f"Dice {before:.3f} -> {after:.3f}, " if before is not None and after is not None else ""
print(f"wall {wall:.1f} s, register {m['register_seconds']:.1f} s, {m['method']}, {dice}folding {m['folding_pct']:.3f} %, "
      f"guard kept {m['guard']['kept']}, stages {m['stage_seconds']}, load {os.getloadavg()[0]:.2f}")
PYEOF
