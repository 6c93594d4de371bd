r"""StoBatch on CIFAR-10: DP and certifiably robust training over N replicas.

The CIFAR-10 architecture of tfdp.stobatch.models ("cifar10": 28x28x3
inputs, DP conv4x4/2-128, conv5x5-128 concatenated with it, conv5x5-256,
avgpool, FC-256, FC-10), trained and evaluated as experiments.stobatch_mnist
does (same flags; training attack sizes up to 0.5 by default).

  python -m experiments.stobatch_cifar10 --gpus=4 --dataset=cifar10 \
      --data_dir=~/tensorflow_datasets --steps=2000
  python -m experiments.stobatch_cifar10 --gpus=4 --allow_cpu_replicas \
      --dataset=digits

CIFAR-10's 32x32 images are centre-cropped to 28x28; other datasets are
mapped to the architecture's input by
tfdp.stobatch.models.to_architecture_input (grey images repeated over 3
channels), pixels in [-1, 1]. On digits the defaults differ
(experiments.stobatch_mnist.DIGITS_DEFAULTS: 8x8 inputs, 30 steps, 3 attack
iterations, 20 votes per attacked input, m = n // (2 N)); the command
above trains to 87.5% and evaluates in 8.4 minutes on 2 CPU cores
(docs/stobatch.md).
"""

from absl import app

from experiments import stobatch_mnist
import flags as shared_flags

shared_flags.adopt_key_flags(stobatch_mnist)


def main(argv):
  del argv
  stobatch_mnist.run("cifar10", "cifar10")


if __name__ == "__main__":
  app.run(main)
