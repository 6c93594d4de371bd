#!/bin/bash
# The runs of docs/dp_gan.md's tables (about 40 min on 2 CPU cores).
# Usage: bash docs/results/dp_gan/run_all.sh [OUT]   (default docs/results/dp_gan)
set -euo pipefail
OUT=${1:-docs/results/dp_gan}
MNIST="--dataset=mnist --npz=../shared/data/mnist_test.npz"
run() { name=$1; shift; python -m experiments.dp_gan "$@" --output_dir=/tmp/dp_gan_runs --results_dir="$OUT/$name" > "$OUT/$name.log" 2>&1; }
run mnist_eps10 $MNIST --target_epsilon=10 &
run mnist_eps1 $MNIST --target_epsilon=1 &
wait
run mnist_nonprivate $MNIST --mode=none --no_dp_guarantee &
run digits_eps10 --target_epsilon=10 &
wait
run digits_eps1 --target_epsilon=1 &
run digits_nonprivate --mode=none --no_dp_guarantee &
wait
# A discriminator that can memorise (4x wider, 5x more steps): LOGAN against
# it without and with DP; and clipping without noise (epsilon infinite).
run mnist_nonprivate_w512_10k $MNIST --mode=none --no_dp_guarantee --width=512 --steps=10000 &
run mnist_eps10_w512_10k $MNIST --target_epsilon=10 --width=512 --steps=10000 &
wait
run mnist_clip_only $MNIST --noise_multiplier=0 &
run mnist_eps10_g256 $MNIST --target_epsilon=10 --generator_width=256 &
wait
# 500 training images (the other 9,500 held out), a wide D trained long:
# a discriminator that can memorise, without and with DP.
SMALL="$MNIST --test_fraction=0.95 --batch_size=64 --width=512 --steps=10000"
run mnist500_nonprivate_w512_10k $SMALL --mode=none --no_dp_guarantee &
run mnist500_eps10_w512_10k $SMALL --target_epsilon=10 &
wait
run mnist_eps10_w512_4k $MNIST --target_epsilon=10 --width=512 --steps=4000
# The other modes: adaptive per-layer clipping and WGAN-GP (mean samples,
# their cost in epsilon), and immediate sensitivity (no DP guarantee).
run mnist_eps10_adaptive $MNIST --target_epsilon=10 --mode=adaptive &
run mnist_eps10_wgan_gp $MNIST --target_epsilon=10 --gan_loss=wgan_gp &
wait
run digits_is --mode=is --no_dp_guarantee --noise_multiplier=1
