#!/usr/bin/env bash
# The Fashion-MNIST results table of docs/results.md, under the `cpu` evaluation protocol (ConvNet-3, DSA,
# 200 SGD steps of batch <= 128 per network, 3 networks, the full 10,000-image test set).
# Iteration budgets are CPU budgets (far below the papers'); every setting that differs from a recipe's
# default is on its command line. Finished runs are skipped, so the script can be rerun after a kill.
# Usage: bash benchmarks/fashion_mnist_table.sh [ROW ...]   (default: every row, in order)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/table}
DATA=${DATA:-../shared/data}
CONDENSE=${CONDENSE:-.venv/bin/condense}
mkdir -p "$OUT"

run() {  # run NAME ARGS...: one distill into $OUT/NAME unless it already finished
  local name=$1; shift
  if [ -f "$OUT/$name/results.json" ]; then echo "skip $name (done)"; return; fi
  local resume=""  # a killed row resumes from its checkpoint, its pruning step or its evaluation
  for stage in checkpoint.pt post_condense.json metadata.json; do [ -f "$OUT/$name/$stage" ] && resume="--resume"; done
  echo "=== $name: condense distill $* $resume"
  # --protocol cpu: since recipes carry their papers' protocols, the CPU protocol is named on every row
  /usr/bin/time -f "$name wall %e s" $CONDENSE distill --dataset fashion_mnist --data-root "$DATA" --out "$OUT/$name" --protocol cpu --quiet $resume "$@"
}

# MTT/HaBa have no Fashion-MNIST settings (their recipes borrow CIFAR-10's, with ZCA): the CPU rows keep the
# trajectory settings they were made with, on normalized inputs, for the `cpu` experts (3 epochs)
TRAJECTORY_CPU="--preprocessing normalize --objective-set syn_steps=20 --objective-set expert_epochs=2 --objective-set max_start_epoch=2 --objective-set syn_lr=0.01 --objective-set lr_lr=1e-5 --objective-set min_syn_lr=0.001"
ABLATION="--recipe dm --ipc 1 --iterations 100 --optimizer adam --lr 0.01 --objective-set real_per_class=64"
declare -A ROWS=(
  [random-1]="--recipe random --ipc 1 --random-baseline --random-baseline-draws 5"
  [herding-1]="--recipe herding --ipc 1"
  [dm-1]="--recipe dm --ipc 1 --iterations 100 --lr 10 --objective-set real_per_class=64"
  [random-10]="--recipe random --ipc 10 --random-baseline --random-baseline-draws 3"
  [herding-10]="--recipe herding --ipc 10"
  [dm-10]="--recipe dm --ipc 10 --iterations 100 --lr 10 --objective-set real_per_class=64"
  [dc-1]="--recipe dc --ipc 1 --iterations 50 --lr 1 --container-set init=real --objective-set real_per_class=64"
  [dsa-1]="--recipe dsa --ipc 1 --iterations 50 --lr 1 --objective-set real_per_class=64"
  [echo-1]="--recipe echo --ipc 1 --iterations 50 --lr 1 --objective-set real_per_class=64"
  [idc-1]="--recipe idc --ipc 1 --iterations 50 --lr 0.001 --objective-set distance=l1"
  [mtt-1]="--recipe mtt --ipc 1 --iterations 50 --objective-set experts=$OUT/experts-cpu $TRAJECTORY_CPU"
  [hmn-1]="--recipe hmn --ipc 1 --iterations 30 --objective-set distance=l1 --post-condense-set beta_grid=[0,0.5,1] --post-condense-set validation_networks=1"
  [rtp-1]="--recipe rtp --ipc 1 --iterations 30 --objective-set inner_steps=10 --objective-set synthetic_per_class=10"
  # RTP's plain-pixel BPTT baseline at rtp-1's settings (real start: the random row's seed-0 draw)
  [bptt-1]="--recipe bptt_pixels --ipc 1 --iterations 30 --objective-set inner_steps=10 --preprocessing normalize"
  # RTP with bases and addresses started from real images' leading principal components (ours, not the paper's)
  [rtp-1-pca]="--recipe rtp --ipc 1 --iterations 30 --objective-set inner_steps=10 --objective-set synthetic_per_class=10 --container-set init=pca"
  # the official lr 100 for bases and hallucinators (lr_style) saturates every image within a few iterations here
  [haba-1-lr100]="--recipe haba --ipc 1 --iterations 30 --objective-set experts=$OUT/experts-cpu --objective-set batch_syn=20 $TRAJECTORY_CPU --objective-set lr_momentum=0.9"
  [haba-1]="--recipe haba --ipc 1 --iterations 30 --objective-set experts=$OUT/experts-cpu --objective-set batch_syn=20 $TRAJECTORY_CPU --objective-set lr_momentum=0.9 --lr 10 --container-set hallucinator_learning_rate=0.01"
  # HMN condensed exactly at B (p = 0: nothing to prune), the p = 0 row of benchmarks/hmn_pruning_grid.py
  [hmn-1-p0]="--recipe hmn --ipc 1 --iterations 30 --objective-set distance=l1 --container-set over_budget=0"
  # The same-objective container ablation: DM, Adam lr 0.01, 100 iterations, 64 real images per class, at B
  [ablation-pixels]="$ABLATION"
  [ablation-multi_formation]="$ABLATION --container multi_formation"
  [ablation-memories]="$ABLATION --container memories"
  [ablation-factorization]="$ABLATION --container factorization --container-set adversarial=false"
  [ablation-hmn]="$ABLATION --container hmn --container-set init=reconstruct"
)
ORDER=(random-1 herding-1 dm-1 random-10 herding-10 dm-10 echo-1 idc-1 mtt-1 dsa-1 dc-1 hmn-1 rtp-1 bptt-1 rtp-1-pca haba-1-lr100 haba-1 hmn-1-p0
       ablation-pixels ablation-multi_formation ablation-memories ablation-factorization ablation-hmn)
experts() {  # the expert trajectories mtt starts from (resumable: finished experts are skipped)
  $CONDENSE experts --dataset fashion_mnist --data-root "$DATA" --out "$OUT/experts-cpu" --set preset=cpu --quiet
}

for name in "${@:-${ORDER[@]}}"; do
  case "$name" in mtt-1|haba-1*) experts ;; esac
  if [ -z "${ROWS[$name]+x}" ]; then echo "unknown row $name; rows: ${ORDER[*]}"; exit 2; fi
  run "$name" ${ROWS[$name]}
done
