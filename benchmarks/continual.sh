#!/usr/bin/env bash
# The continual-learning runs of docs/continual.md: class-incremental Split-Fashion-MNIST (5 tasks of 2 classes,
# class order from seed 0) and MNIST -> Fashion-MNIST (2 tasks of 10 classes), one seed, under the `cpu`
# evaluation protocol (after each task: 3 fresh ConvNet-3 trained 200 SGD steps on everything stored so far,
# tested on the full test images of every class seen so far).
# Condensation budgets are CPU budgets (the rows of benchmarks/fashion_mnist_table.sh, per task); every setting
# that differs from a recipe's default is on its row. Finished runs are skipped and killed ones resume, so the
# script can be rerun after a kill. It waits (between runs) while /tmp/cpu-quiet exists: someone is timing.
# Each finished run's continual.json (a few KB) is copied to benchmarks/results/continual/ROW/, so the tables and
# plots of docs/continual.md can be rebuilt from the repository without the run directories ("plot", "table").
# SEED=S (default 0) condenses with seed S into ROW-seedS (ROW for seed 0); the class order stays seed 0's, so
# rows of different seeds see the same tasks ("seeds" prints the spread over the seeds saved).
# Usage: bash benchmarks/continual.sh [ROW ... | plot | table | seeds]   (default: every row, in order, then plots)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/continual}
DATA=${DATA:-../shared/data}
CONDENSE=${CONDENSE:-.venv/bin/condense}
PYTHON=${PYTHON:-.venv/bin/python}
SUMMARIES=benchmarks/results/continual
SEED=${SEED:-0}
mkdir -p "$OUT"

save() {  # save NAME: keep a finished run's continual.json in the repository
  grep -qs '"finished": true' "$OUT/$1/continual.json" || return 0
  mkdir -p "$SUMMARIES/$1" && cp "$OUT/$1/continual.json" "$SUMMARIES/$1/continual.json"
}

run() {  # run ROW ARGS...: one continual run into $OUT/ROW (ROW-seedS) unless it already finished
  local name=$1; shift
  [ "$SEED" != 0 ] && name="$name-seed$SEED"
  while [ -e /tmp/cpu-quiet ]; do sleep 30; done  # another engineer is timing benchmarks on these cores
  if grep -qs '"finished": true' "$OUT/$name/continual.json"; then echo "skip $name (done)"; save "$name"; return; fi
  local resume=""  # a killed run continues from its last evaluated task (and that task's checkpoint)
  [ -f "$OUT/$name/continual.json" ] && resume="--resume"
  echo "=== $name: condense continual $* $resume"
  /usr/bin/time -f "$name wall %e s" $CONDENSE continual --data-root "$DATA" --out "$OUT/$name" --protocol cpu \
    --seed "$SEED" --stream-seed 0 --quiet $resume "$@"
  save "$name"
}

FMNIST="--stream split-fashion-mnist"
TWO="--stream mnist-fashion-mnist"
DM="--recipe dm --iterations 100 --lr 10 --objective-set real_per_class=64"
# HMN condensed at B (p = 0): the recipe's pruning would train validation networks for 3 betas after every task
HMN="--recipe hmn --iterations 30 --objective-set distance=l1 --container-set over_budget=0"
# RTP: a 2-class task at IPC 1 has B = 1,568 floats, less than the recipe's 16 memories of 14 x 14 (3,136): 4
# memories per task (784 floats, half of B; r = 98 addresses per class). 10 iterations of BPTT through 10 steps
RTP="--recipe rtp --iterations 10 --objective-set inner_steps=10 --objective-set synthetic_per_class=10"
# RTP's official xavier start is noise that 10 iterations do not turn into images (fmnist-rtp-1); the rows named
# rtp-pca start the memories on principal directions of the task's images and each address on one real image
RTP_PCA="$RTP --container-set init=pca"
declare -A ROWS=(
  [fmnist-random-1]="$FMNIST --recipe random --ipc 1"
  [fmnist-herding-1]="$FMNIST --recipe herding --ipc 1"
  [fmnist-dm-1]="$FMNIST $DM --ipc 1"
  [fmnist-hmn-1]="$FMNIST $HMN --ipc 1"
  [fmnist-rtp-1]="$FMNIST $RTP --ipc 1 --container-set bases=4"
  # the pair that shows memory reuse, each evaluated by 1 network instead of 3 (for time): independent memories
  # per task, and the same 4 new memories per task with each later task also addressing every earlier task's
  [fmnist-rtp-pca-1]="$FMNIST $RTP_PCA --ipc 1 --container-set bases=4 --protocol-set networks=1"
  [fmnist-rtp-reuse-1]="$FMNIST $RTP_PCA --ipc 1 --container-set bases=4 --reuse-memories --later-bases 4 --protocol-set networks=1"
  [fmnist-random-10]="$FMNIST --recipe random --ipc 10"
  [fmnist-herding-10]="$FMNIST --recipe herding --ipc 10"
  [fmnist-dm-10]="$FMNIST $DM --ipc 10"
  [fmnist-hmn-10]="$FMNIST $HMN --ipc 10"
  [fmnist-rtp-pca-10]="$FMNIST $RTP_PCA --ipc 10"
  [two-random-10]="$TWO --recipe random --ipc 10"
  [two-dm-10]="$TWO $DM --ipc 10"
  [two-hmn-10]="$TWO $HMN --ipc 10"
)
# the rows of docs/continual.md (the default run, in this order); two-hmn-10: the best condensed container of the
# IPC-1 rows on the two-dataset stream
ORDER=(fmnist-random-1 fmnist-herding-1 fmnist-dm-1 fmnist-hmn-1 fmnist-rtp-1 fmnist-rtp-pca-1 fmnist-rtp-reuse-1
       fmnist-random-10 fmnist-herding-10 fmnist-dm-10 fmnist-hmn-10 fmnist-rtp-pca-10 two-random-10 two-dm-10
       two-hmn-10)

plot() { $PYTHON benchmarks/continual_summary.py plot "${ORDER[@]}"; }  # docs/continual-*.png from the summaries
table() { $PYTHON benchmarks/continual_summary.py table "${ORDER[@]}"; }  # the markdown tables of docs/continual.md
seeds() { $PYTHON benchmarks/continual_summary.py seeds "${ORDER[@]}"; }  # rows saved for several seeds

rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=("${ORDER[@]}" plot)
for name in "${rows[@]}"; do
  if [ "$name" = plot ]; then plot; continue; fi
  if [ "$name" = table ]; then table; continue; fi
  if [ "$name" = seeds ]; then seeds; continue; fi
  if [ -z "${ROWS[$name]+x}" ]; then echo "unknown row $name; rows: ${ORDER[*]} plot table seeds"; exit 2; fi
  run "$name" ${ROWS[$name]}
done
