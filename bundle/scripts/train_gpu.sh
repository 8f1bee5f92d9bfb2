#!/usr/bin/env bash
# Train SAMIR on a GPU machine within a time budget; resumable; exports bundle/models/<NAME>.pt + <NAME>.json.
#
#   bundle/scripts/train_gpu.sh [SECONDS] [NAME] [--key value ...]
#
#   SECONDS  training budget in seconds (default 480): TrainingBudget stops at the last epoch end that fits
#   NAME     exported weights name (default model_v2); shipped names (model, model_abdomen, model_baseline)
#            and existing files are refused, nothing is ever overwritten
#   --key value   any train.json key (e.g. --mix "{'synthmorph': 0.5}" --learning_rate 0.0002 --device cpu)
#
# Running the same command again resumes from runs/<NAME>/last_checkpoint_*.pt (epoch, iteration, Adam state)
# and spends a new budget. Defaults: synthetic ACDC with appearance realism (60 training patients, written
# once into data/synthetic_acdc_realism), 30 % SynthMorph-style pairs generated on the fly, fine-tuned from
# the shipped cardiac model, learning rate 5e-4, validation every 5 epochs on 12 pairs.
# CPU check with a tiny budget:  bundle/scripts/train_gpu.sh 60 model_cpu_check --device cpu --num_threads 1 \
#     --synthetic_options "{'n': 4, 'n_test': 0}" --synthetic_dir /tmp/acdc_small --max_train_pairs 2 --max_val_pairs 1
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
BUDGET="${1:-480}"
NAME="${2:-model_v2}"
shift $(( $# < 2 ? $# : 2 ))
[[ "$BUDGET" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "SECONDS must be a number, got '$BUDGET'" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: training on what torch finds"
exec "$PY" -m samir.tools.train_budget \
    --name "$NAME" \
    --max_seconds "$BUDGET" \
    --output_dir "runs/$NAME" \
    --dataset acdc \
    --synthetic_dir data/synthetic_acdc_realism \
    --synthetic_options "{'n': 60, 'n_test': 10, 'realism': 1.0}" \
    --mix "{'synthmorph': 0.3}" \
    --init_weights bundle/models/model.pt \
    --learning_rate 0.0005 \
    --val_interval 5 \
    --max_val_pairs 12 \
    --num_workers 4 \
    "$@"
