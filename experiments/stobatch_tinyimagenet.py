r"""StoBatch on Tiny ImageNet: DP, certifiably robust training on N replicas.

The Tiny ImageNet architecture of tfdp.stobatch.models ("tinyimagenet":
64x64x3 inputs, DP conv7x7/2-64 in place of the ResNet stem conv, a keras-cv
ResNet-18 with GroupNorm, global average pool, FC-256, FC-K), trained and
evaluated as experiments.stobatch_mnist does (same flags; training attack
sizes up to 0.1 by default). --dataset=tinyimagenet reads the raw
tiny-imagenet-200 folder given by --data_dir (the first --num_classes
classes of wnids.txt, 30 by default; train/ for training, the labelled val/
for testing); --weights_path loads ImageNet weights for the ResNet body
from a local file. See docs/tinyimagenet.md.

  python -m experiments.stobatch_tinyimagenet --gpus=4 \
      --data_dir=PATH/tiny-imagenet-200 --steps=2000 \
      --weights_path=PATH/resnet18_imagenet.weights.h5
  python -m experiments.stobatch_tinyimagenet --dataset=digits \
      --input_side=32 --steps=2 --batch_size=4 --eval_size=4 --num_samples=4

Other datasets are mapped to the architecture's input by
tfdp.stobatch.models.to_architecture_input (digits: 8x8 grey resized
bilinearly and repeated over 3 channels), pixels in [-1, 1].
"""

from absl import app

from experiments import stobatch_mnist
import flags as shared_flags

shared_flags.adopt_key_flags(stobatch_mnist)


def main(argv):
  del argv
  stobatch_mnist.run("tinyimagenet", "tinyimagenet")


if __name__ == "__main__":
  app.run(main)
