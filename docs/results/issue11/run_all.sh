#!/usr/bin/env bash
# The runs behind docs/stobatch.md's "Issue 11 results" table (2 CPU cores:
# about 55 minutes for the six MNIST-8k runs, 10 more for digits).
# Settings were selected on a validation split of the training images
# (docs/stobatch.md, docs/dp_smoothing.md); these runs use the test split.
# Checkpoints hold StoBatch's secret noise draws: they go to $CKPT.
set -euo pipefail
OUT=${OUT:-docs/results/issue11}
MNIST=${MNIST:-../shared/data/mnist_test.npz}
CKPT=${CKPT:-/tmp/issue11_checkpoints}
for eps in 1 2 4; do
  half=$(python -c "print(f'{$eps / 2:g}')")
  python -m experiments.dp_smoothing --dataset=mnist --npz="$MNIST" \
      --target_epsilon=$eps --train_sigma=0.25 --epochs=40 --batch_size=512 \
      --learning_rate=1 --eval_pgd_steps=10 --eval_size=500 \
      --results_dir="$OUT/dp_smoothing_eps$eps"
  python -m experiments.stobatch_mnist --dataset="$MNIST" --batch_size=4000 \
      --steps=60 --epsilon_ae=$half --epsilon_out=$half --attack_steps=3 \
      --learning_rate=3e-3 --eval_size=500 --num_samples=100 \
      --results_dir="$OUT/stobatch_eps$eps" \
      --checkpoint_dir="$CKPT/stobatch_eps$eps"
done
python -m experiments.robustness_table \
    --stobatch="$OUT/stobatch_eps1,$OUT/stobatch_eps2,$OUT/stobatch_eps4" \
    --dp_smoothing="$OUT/dp_smoothing_eps1,$OUT/dp_smoothing_eps2,$OUT/dp_smoothing_eps4" \
    --output_dir="$OUT"
# The acceptance command on digits, with its defaults (4 CPU replicas).
python -m experiments.stobatch_cifar10 --gpus=4 --allow_cpu_replicas \
    --dataset=digits --results_dir="$OUT/stobatch_cifar10_digits" \
    --checkpoint_dir="$CKPT/stobatch_cifar10_digits"
