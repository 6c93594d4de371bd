r"""The PyTorch peer of experiments.benchmark_clipping: Opacus on the same models.

Run by the benchmark (one process per model and configuration, without
TensorFlow in it), never by hand; it needs the optional extra
`pip install -e ".[bench]"` (PyTorch and Opacus). It builds the PyTorch
twin of a benchmarked model (the same layers, widths and parameter count
as tfdp.models' builder), trains it with SGD on fixed random batches and
prints one JSON line in the benchmark's format:

  torch_nonprivate  plain PyTorch training (the baseline of the Opacus rows).
  opacus_ghost      Opacus' ghost clipping (grad_sample_mode="ghost").
  opacus_hooks      Opacus' per-sample gradients from hooks (the default).

  python -m experiments.opacus_peer --model=papernot --config=opacus_ghost \
      --batch_size=128 --steps=20 --warmup_steps=3 --width=1
"""

import argparse
import json
import math
import resource
import statistics
import time
from typing import List

import torch
from torch import nn

CONFIGS = ("torch_nonprivate", "opacus_ghost", "opacus_hooks")
_NUM_CLASSES = 10
_VOCAB_SIZE = 1000
_SEQUENCE_LENGTH = 128
_DISTINCT_BATCHES = 4


def _scaled(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


def papernot(width: float) -> nn.Module:
  """tfdp.models.papernot_cnn: 3 stages of 2 tanh 3x3 convs and a max pool,
  dense 128 (tanh), logits."""
  layers, channels = [], 3
  for filters in (32, 64, 128):
    for _ in range(2):
      out = _scaled(filters, width)
      layers += [nn.Conv2d(channels, out, 3, padding=1), nn.Tanh()]
      channels = out
    layers.append(nn.MaxPool2d(2))
  hidden = _scaled(128, width)
  return nn.Sequential(*layers, nn.Flatten(),
                       nn.Linear(channels * 16, hidden), nn.Tanh(),
                       nn.Linear(hidden, _NUM_CLASSES))


def _group_norm(channels: int) -> nn.GroupNorm:
  return nn.GroupNorm(math.gcd(16, channels), channels)


class _BasicBlock(nn.Module):
  """Post-activation basic block with GroupNorm (tfdp.models.resnet18)."""

  def __init__(self, channels: int, out: int, stride: int):
    super().__init__()
    self.body = nn.Sequential(
        nn.Conv2d(channels, out, 3, stride, 1, bias=False), _group_norm(out),
        nn.ReLU(), nn.Conv2d(out, out, 3, 1, 1, bias=False), _group_norm(out))
    self.shortcut = (nn.Identity() if stride == 1 and channels == out else
                     nn.Sequential(nn.Conv2d(channels, out, 1, stride,
                                             bias=False), _group_norm(out)))

  def forward(self, x):
    return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(width: float) -> nn.Module:
  """ResNet-18 (CIFAR stem, GroupNorm with gcd(16, C) groups)."""
  widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
  layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
            _group_norm(widths[0]), nn.ReLU()]
  channels = widths[0]
  for stage, out in enumerate(widths):
    for index in range(2):
      stride = 2 if stage > 0 and index == 0 else 1
      layers.append(_BasicBlock(channels, out, stride))
      channels = out
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(channels, _NUM_CLASSES))


class _Attention(nn.Module):
  """Multi-head self-attention from four Linear layers (Opacus has rules
  for Linear; Keras' MultiHeadAttention has the same four projections)."""

  def __init__(self, width: int, heads: int):
    super().__init__()
    self.heads = heads
    self.query, self.key, self.value, self.output = (
        nn.Linear(width, width) for _ in range(4))

  def forward(self, x):
    batch, length, width = x.shape
    split = lambda t: t.view(batch, length, self.heads, -1).transpose(1, 2)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]),
                            dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(batch, length, width)
    return self.output(mixed)


class _Block(nn.Module):
  """Pre-norm encoder block: x + MHA(LN(x)), x + MLP(LN(x)) (GELU)."""

  def __init__(self, width: int, heads: int = 4, mlp_ratio: int = 2):
    super().__init__()
    self.norm1, self.norm2 = nn.LayerNorm(width, 1e-6), nn.LayerNorm(
        width, 1e-6)
    self.attention = _Attention(width, heads)
    self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                             nn.Linear(mlp_ratio * width, width))

  def forward(self, x):
    x = x + self.attention(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class _Encoder(nn.Module):
  """Token embedding (a Conv2d on patches or an Embedding), learned
  positions (an Embedding of the position index), blocks, LN, mean,
  logits."""

  def __init__(self, tokens: nn.Module, positions: int, width: int,
               depth: int):
    super().__init__()
    self.tokens = tokens
    self.positions = nn.Embedding(positions, width)
    self.blocks = nn.Sequential(*(_Block(width) for _ in range(depth)))
    self.norm = nn.LayerNorm(width, 1e-6)
    self.head = nn.Linear(width, _NUM_CLASSES)

  def forward(self, x):
    x = self.tokens(x)
    if x.dim() == 4:  # Patches [B, C, H, W] -> tokens [B, H W, C].
      x = x.flatten(2).transpose(1, 2)
    # Contiguous: Opacus' embedding norm sampler views the ids.
    index = torch.arange(x.shape[1]).expand(x.shape[0], -1).contiguous()
    x = self.blocks(x + self.positions(index))
    return self.head(self.norm(x).mean(dim=1))


def _transformer_width(width: float) -> int:
  return 4 * max(1, round(16 * width))


def vit(width: float) -> nn.Module:
  """tfdp.models.vit on 32x32x3 images: 4x4 patches, 4 blocks."""
  channels = _transformer_width(width)
  return _Encoder(nn.Conv2d(3, channels, 4, 4), 64, channels, 4)


def text(width: float) -> nn.Module:
  """tfdp.models.text_transformer: 128 tokens, 2 blocks."""
  channels = _transformer_width(width)
  return _Encoder(nn.Embedding(_VOCAB_SIZE, channels), _SEQUENCE_LENGTH,
                  channels, 2)


MODELS = {"papernot": papernot, "resnet18": resnet18, "vit": vit,
          "text": text}


def _random_batches(model: str, batch_size: int):
  if model == "text":
    x = torch.randint(1, _VOCAB_SIZE,
                      (_DISTINCT_BATCHES * batch_size, _SEQUENCE_LENGTH))
  else:
    x = torch.randn(_DISTINCT_BATCHES * batch_size, 3, 32, 32)
  y = torch.randint(0, _NUM_CLASSES, (len(x),))
  return torch.utils.data.DataLoader(
      torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def measure(model_name: str, config: str, batch_size: int, steps: int,
            warmup_steps: int, width: float) -> dict:
  """Trains warm-up + timed steps; the benchmark's result dictionary."""
  torch.manual_seed(0)
  model = MODELS[model_name](width)
  parameters = sum(p.numel() for p in model.parameters())
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
  criterion = nn.CrossEntropyLoss()
  loader = _random_batches(model_name, batch_size)
  note = f"PyTorch {torch.__version__}"
  if config != "torch_nonprivate":
    import opacus  # pylint: disable=g-import-not-at-top
    mode = "ghost" if config == "opacus_ghost" else "hooks"
    private = opacus.PrivacyEngine().make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        criterion=criterion, noise_multiplier=1.0, max_grad_norm=1.0,
        grad_sample_mode=mode, poisson_sampling=False)
    if mode == "ghost":
      model, optimizer, criterion, loader = private
    else:
      model, optimizer, loader = private
    note = f"Opacus {opacus.__version__} ({mode}), {note}"
  times: List[float] = []
  batches = iter(())
  for _ in range(warmup_steps + steps):
    try:
      x, y = next(batches)
    except StopIteration:
      batches = iter(loader)
      x, y = next(batches)
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
  timed = times[warmup_steps:]
  return {"model": model_name, "config": config, "batch_size": batch_size,
          "parameters": int(parameters), "note": note,
          "step_times_s": timed,
          "seconds_per_step": statistics.median(timed),
          "peak_rss_gib": resource.getrusage(
              resource.RUSAGE_SELF).ru_maxrss / 2**20,
          "peak_tensors_gib": None}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=sorted(MODELS), required=True)
  parser.add_argument("--config", choices=CONFIGS, required=True)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup_steps", type=int, default=3)
  parser.add_argument("--width", type=float, default=1.0)
  args = parser.parse_args()
  print(json.dumps(measure(args.model, args.config, args.batch_size,
                           args.steps, args.warmup_steps, args.width)),
        flush=True)


if __name__ == "__main__":
  main()
