r"""Benchmark: the cost of per-example clipping against non-private training.

Trains each model on random 32x32x3 data with SGD under each configuration,
one subprocess per (model, configuration) so that each peak memory is its
own, and reports seconds per step, examples per second, peak resident memory
and their ratios to non-private training as a markdown table, JSON and a bar
chart under --results_dir.

Configurations:
  nonprivate      plain tf.keras model.fit.
  tfdp            tfdp.make_private(model) + tfdp.optimizers.DPSGD (fast
                  per-example clipping engine).
  tfp_microbatch  TF Privacy's DPKerasSGDOptimizer with one microbatch per
                  example (a legacy Keras optimizer).
  tfp_fast        TF Privacy's DPModel with its fast-clipping layer registry
                  (rules for Dense and Embedding only), without XLA.
  tfp_fast_xla    the same with XLA, DPModel's default (use_xla=True).
  tfdp_augmultK   tfdp with augmentation multiplicity K (K in 1, 4, 16):
                  make_private(model, augmult=K,
                  augment=tfdp.data.augment.crop_and_flip()); the column
                  "time x augmult1" is the step's cost against K = 1 (the
                  same augmentation, one copy). Not run by default.
  tfdp_chunks4    tfdp with physical_batch_size=B/4 (a tf.while_loop over
                  the 4 chunks) on batches of static size; the column
                  "time x tfdp (one chunk)" is against tfdp.
  tfdp_quarter    tfdp on batches of B/4: the column "memory / (chunk of
                  B/4 + gradients)" of tfdp_chunks4 is against it.
  tfdp_dynamic, tfdp_chunks4_dynamic, tfdp_quarter_dynamic  the same three
                  on batches whose size the graph does not know (as with
                  Poisson sampling), which costs memory of its own (shape
                  arithmetic that static shapes fold away): the chunked
                  row's ratios are against the dynamic tfdp and quarter.
                  None of the six is run by default.
  torch_nonprivate, opacus_ghost, opacus_hooks  the PyTorch peer
                  (experiments/opacus_peer.py: the same architectures in
                  PyTorch, Opacus' ghost clipping and its hooks; needs
                  pip install -e ".[bench]", else reported as skipped).
                  Their "x nonprivate" ratios are to torch_nonprivate. Not
                  run by default.

Models: papernot, resnet18 and wrn16_4 on 32x32x3 images; vit (4 blocks on
8x8 patches of those images, width 64) and text (a 2-block transformer on
128 random tokens of a 1,000-word vocabulary, width 64).

  python -m experiments.benchmark_clipping
  python -m experiments.benchmark_clipping --models=papernot \
      --configs=nonprivate,tfdp --steps=50
  python -m experiments.benchmark_clipping --skip_slow_baselines --profile
  python -m experiments.benchmark_clipping --models=wrn16_4 \
      --configs=tfdp_augmult1,tfdp_augmult4,tfdp_augmult16 --batch_size=32
  python -m experiments.benchmark_clipping --models=papernot,vit \
      --configs=tfdp,tfdp_chunks4,tfdp_quarter,tfdp_dynamic,\
tfdp_chunks4_dynamic,tfdp_quarter_dynamic
"""

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from absl import app
from absl import flags
import tensorflow as tf

from experiments import _report
import flags as shared_flags
import tfdp
from tfdp import _optional
from tfdp.clipping.layers import fallback

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_NUM_CLASSES = 10
_IMAGE_SHAPE = (32, 32, 3)
_VOCAB_SIZE = 1000
_SEQUENCE_LENGTH = 128


def _transformer_width(width: float) -> int:
  """64 at --width=1, a multiple of the 4 heads."""
  return 4 * max(1, round(16 * width))


@dataclasses.dataclass(frozen=True)
class _Benchmarked:
  """A benchmarked model: its builder at a width multiplier, and its data.

  Attributes:
    build: width multiplier -> the model.
    input_shape: one example's input shape.
    vocab_size: token ids in [1, vocab_size) as inputs; None: images.
  """
  build: Callable[[float], tf.keras.Model]
  input_shape: Tuple[int, ...] = _IMAGE_SHAPE
  vocab_size: Optional[int] = None


_MODELS = {
    "papernot": _Benchmarked(
        lambda width: tfdp.models.papernot_cnn(width=width)),
    "resnet18": _Benchmarked(lambda width: tfdp.models.resnet18(width=width)),
    "wrn16_4": _Benchmarked(
        lambda width: tfdp.models.wide_resnet(16, 4 * width)),
    # 4 blocks on 8x8 patches of 4x4 pixels.
    "vit": _Benchmarked(lambda width: tfdp.models.vit(
        _IMAGE_SHAPE, _NUM_CLASSES, width=_transformer_width(width))),
    # 2 blocks on 128 tokens.
    "text": _Benchmarked(
        lambda width: tfdp.models.text_transformer(
            _VOCAB_SIZE, _NUM_CLASSES, sequence_length=_SEQUENCE_LENGTH,
            width=_transformer_width(width)),
        input_shape=(_SEQUENCE_LENGTH,), vocab_size=_VOCAB_SIZE),
}
_DEFAULT_CONFIGS = ("nonprivate", "tfdp", "tfp_microbatch", "tfp_fast",
                    "tfp_fast_xla")
_AUGMULTS = (1, 4, 16)
_AUGMULT_CONFIGS = tuple(f"tfdp_augmult{k}" for k in _AUGMULTS)
# Gradient accumulation: the batch in 4 chunks of B/4 (batches of static
# size, and of a size the graph does not know, as Poisson batches are), and
# one chunk alone (batch B/4) for the memory bound; the references tfdp and
# tfdp_quarter on batches of either kind.
_CHUNK_CONFIGS = ("tfdp_chunks4", "tfdp_quarter", "tfdp_dynamic",
                  "tfdp_chunks4_dynamic", "tfdp_quarter_dynamic")
# The PyTorch peer (experiments/opacus_peer.py, `pip install -e ".[bench]"`):
# its rows' ratios are to torch_nonprivate.
_TORCH_CONFIGS = ("torch_nonprivate", "opacus_ghost", "opacus_hooks")
_TORCH_MODELS = ("papernot", "resnet18", "vit", "text")
_CONFIGS = (_DEFAULT_CONFIGS + _AUGMULT_CONFIGS + _CHUNK_CONFIGS
            + _TORCH_CONFIGS)
_SLOW_BASELINES = ("tfp_microbatch", "tfp_fast", "tfp_fast_xla")
_PROFILE = "profile"  # --child=MODEL:profile runs `_profile`.
_L2_NORM_CLIP = 1.0
_NOISE_MULTIPLIER = 1.0
_LEARNING_RATE = 0.01
_DISTINCT_BATCHES = 4

MODELS = flags.DEFINE_list("models", list(_MODELS),
                           f"Models to measure, from {', '.join(_MODELS)}.")
CONFIGS = flags.DEFINE_list("configs", list(_DEFAULT_CONFIGS),
                            f"Configurations, from {', '.join(_CONFIGS)}.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size.",
                                  lower_bound=1)
STEPS = flags.DEFINE_integer("steps", 20, "Timed training steps.",
                             lower_bound=1)
SLOW_BASELINE_STEPS = flags.DEFINE_integer(
    "slow_baseline_steps", 5,
    "Timed steps for the TF Privacy baselines (which can take a minute per "
    "step); at most --steps.", lower_bound=1)
WARMUP_STEPS = flags.DEFINE_integer(
    "warmup_steps", 3, "Untimed steps first (tracing, first allocations).",
    lower_bound=0)
ROUNDS = flags.DEFINE_integer(
    "rounds", 1, "Measure every configuration this many times, in turn, and "
    "keep each one's fastest run: other processes only ever add time. "
    "The slow baselines run once.", lower_bound=1)
WIDTH = flags.DEFINE_float(
    "width", 1.0, "Multiplies the models' channel counts (1.0: published "
    "models; small values for quick tests; > 0).")
SKIP_SLOW_BASELINES = flags.DEFINE_bool(
    "skip_slow_baselines", False, "Skip the TF Privacy baselines.")
PROFILE = flags.DEFINE_bool(
    "profile", False, "Also time each model's layers one by one: the "
    "non-private weight gradient against tfdp's per-example norms and "
    "clipped sum; writes profile.md.")
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", "docs/results/benchmark_clipping",
    "Where results.md, results.json and time_ratios.png are written.")
TIMEOUT = flags.DEFINE_integer("timeout", 1800,
                               "Seconds allowed per configuration.",
                               lower_bound=1)
MEMORY_LIMIT_GIB = flags.DEFINE_float(
    "memory_limit_gib", None, "A configuration whose resident memory exceeds "
    "this is stopped and reported as out of memory (> 0). Default: 75% of "
    "RAM.")
BFC_ALLOCATOR = flags.DEFINE_bool(
    "bfc_allocator", False, "Run the configurations with TensorFlow's BFC "
    "allocator on the CPU (TF_CPU_ALLOCATOR_USE_BFC=true), which also "
    "reports the peak memory held by tensors: the engine's own footprint, "
    "without malloc's slack. Times and RSS then differ from the default "
    "allocator's.")
_CHILD = flags.DEFINE_string(
    "child", None, "Internal: measure one MODEL:CONFIG (or MODEL:profile) in "
    "this process and print the result as one JSON line.")

shared_flags.check_range(WIDTH, above=0)
shared_flags.check_range(MEMORY_LIMIT_GIB, above=0)


# ---------------------------------------------------------------------------
# Generic measurement helpers.


def peak_rss_gib() -> float:
  """This process's peak resident set size so far, in GiB (Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _current_rss_gib(pid: int) -> Optional[float]:
  """Resident memory of a running process from /proc, or None."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return None


class StepTimer(tf.keras.callbacks.Callback):
  """Records each training batch's wall-clock seconds in `times`.

  Keras hands a plain callback its logs as numbers, so each batch's work has
  finished when `on_train_batch_end` runs.
  """

  def __init__(self):
    super().__init__()
    self.times: List[float] = []
    self._start = 0.0

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter() - self._start)


# ---------------------------------------------------------------------------
# Child: one configuration in this process.


def _loss(reduce: bool):
  reduction = (tf.keras.losses.Reduction.AUTO if reduce else
               tf.keras.losses.Reduction.NONE)
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                       reduction=reduction)


def _nonprivate(model, batch_size):
  del batch_size
  model.compile(optimizer=tf.keras.optimizers.SGD(_LEARNING_RATE),
                loss=_loss(reduce=True))
  return model, ""


def _tfdp(model, batch_size, augmult=None, physical_batch_size=None):
  if physical_batch_size is not None:
    model = tfdp.make_private(model, physical_batch_size=physical_batch_size)
  elif augmult is None:
    model = tfdp.make_private(model)
  else:
    model = tfdp.make_private(model, augmult=augmult,
                              augment=tfdp.data.augment.crop_and_flip())
  model.compile(
      optimizer=tfdp.optimizers.DPSGD(
          learning_rate=_LEARNING_RATE, l2_norm_clip=_L2_NORM_CLIP,
          noise_multiplier=_NOISE_MULTIPLIER, expected_batch_size=batch_size),
      loss=_loss(reduce=False))
  without_rule = sorted({type(l).__name__
                         for l in tfdp.clipping.fast.tapped_layers(model)
                         if tfdp.clipping.registry.rule_for(l) is None})
  note = ("exact per-layer fall-back for " + ", ".join(without_rule)
          if without_rule else "fast rules for every layer")
  return model, note


def _tfp_microbatch(model, batch_size):
  import tensorflow_privacy  # pylint: disable=g-import-not-at-top
  model.compile(
      optimizer=tensorflow_privacy.DPKerasSGDOptimizer(
          l2_norm_clip=_L2_NORM_CLIP, noise_multiplier=_NOISE_MULTIPLIER,
          num_microbatches=batch_size, learning_rate=_LEARNING_RATE),
      loss=_loss(reduce=False))
  return model, f"{batch_size} microbatches of 1 (legacy optimizer)"


def _tfp_fast(model, batch_size, use_xla=False):
  # pylint: disable=g-import-not-at-top
  from tensorflow_privacy.privacy.fast_gradient_clipping import layer_registry
  from tensorflow_privacy.privacy.keras_models import dp_keras_model
  # pylint: enable=g-import-not-at-top
  del batch_size
  registry = layer_registry.make_default_layer_registry()
  dp_model = dp_keras_model.DPModel(
      l2_norm_clip=_L2_NORM_CLIP, noise_multiplier=_NOISE_MULTIPLIER,
      use_xla=use_xla, layer_registry=registry, inputs=model.inputs,
      outputs=model.outputs)
  dp_model.compile(optimizer=tf.keras.optimizers.SGD(_LEARNING_RATE),
                   loss=_loss(reduce=True))
  if dp_model._enable_fast_peg_computation:  # pylint: disable=protected-access
    return dp_model, "fast clipping path"
  without_rule = sorted({type(l).__name__ for l in dp_model.layers
                         if l.trainable_variables and not registry.is_elem(l)})
  return dp_model, ("fast path off (no rule for " + ", ".join(without_rule) +
                    "): vectorized per-example gradients")


_SETUPS: Dict[str, Callable] = {
    "nonprivate": _nonprivate,
    "tfdp": _tfdp,
    "tfp_microbatch": _tfp_microbatch,
    "tfp_fast": _tfp_fast,
    # DPModel's default: its train_step compiled with XLA.
    "tfp_fast_xla": functools.partial(_tfp_fast, use_xla=True),
    **{f"tfdp_augmult{k}": functools.partial(_tfdp, augmult=k)
       for k in _AUGMULTS},
    "tfdp_chunks4": lambda model, batch_size: _tfdp(
        model, batch_size, physical_batch_size=_quarter(batch_size)),
    "tfdp_chunks4_dynamic": lambda model, batch_size: _tfdp(
        model, batch_size, physical_batch_size=_quarter(batch_size)),
    "tfdp_quarter": _tfdp,
    "tfdp_dynamic": _tfdp,
    "tfdp_quarter_dynamic": _tfdp,
}


def _quarter(batch_size: int) -> int:
  return max(1, batch_size // 4)


def _config_batch_size(config: str) -> int:
  return (_quarter(BATCH_SIZE.value)
          if config in ("tfdp_quarter", "tfdp_quarter_dynamic") else
          BATCH_SIZE.value)


def _random_inputs(model_name: str, shape: Tuple[int, ...]) -> tf.Tensor:
  """Random images, or random token ids, of `shape` + the example's shape."""
  benchmarked = _MODELS[model_name]
  shape = tuple(shape) + benchmarked.input_shape
  if benchmarked.vocab_size is None:
    return tf.random.normal(shape)
  return tf.random.uniform(shape, 1, benchmarked.vocab_size, tf.int32)


def _random_batches(model_name: str, batch_size: int, dynamic: bool = False):
  """A few fixed random batches, in memory, repeated: no input cost.

  Every configuration holds the same examples (`_DISTINCT_BATCHES` batches
  of --batch_size), so that a configuration on smaller batches (tfdp_quarter)
  does not hold less data than the one it bounds (tfdp_chunks4).
  With `dynamic`, the batch size is unknown to the graph (as with Poisson
  sampling).
  """
  batches = max(1, _DISTINCT_BATCHES * BATCH_SIZE.value // batch_size)
  x = _random_inputs(model_name, (batches, batch_size))
  y = tf.random.uniform((batches, batch_size), 0, _NUM_CLASSES, tf.int32)
  dataset = tf.data.Dataset.from_tensor_slices((x, y))
  if dynamic:
    dataset = dataset.unbatch().batch(batch_size)
  return dataset.cache().repeat()


def _timed_steps(config: str) -> int:
  if config in _SLOW_BASELINES:
    return min(STEPS.value, SLOW_BASELINE_STEPS.value)
  return STEPS.value


def _measure(model_name: str, config: str) -> Dict[str, object]:
  """Trains warm-up + timed steps and returns the timings and peak RSS."""
  tf.keras.utils.set_random_seed(0)
  batch_size = _config_batch_size(config)
  model, note = _SETUPS[config](_MODELS[model_name].build(WIDTH.value),
                                batch_size)
  steps = _timed_steps(config)
  timer = StepTimer()
  model.fit(_random_batches(model_name, batch_size,
                            dynamic=config.endswith("_dynamic")), epochs=1,
            steps_per_epoch=WARMUP_STEPS.value + steps, callbacks=[timer],
            verbose=0)
  times = timer.times[WARMUP_STEPS.value:]
  return {
      "model": model_name,
      "config": config,
      "batch_size": batch_size,
      "parameters": int(model.count_params()),
      "note": note,
      "step_times_s": times,
      "seconds_per_step": statistics.median(times),
      "peak_rss_gib": peak_rss_gib(),
      "peak_tensors_gib": _peak_tensors_gib(),
  }


def _peak_tensors_gib() -> Optional[float]:
  """Peak bytes held by tensors on the CPU, in GiB (BFC allocator only)."""
  try:
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**30
  except (ValueError, tf.errors.OpError):
    return None


def _median_seconds(function: Callable[[], object], repeats: int) -> float:
  """Median wall time of `function()` after one untimed (tracing) call."""
  sync = lambda result: [t.numpy() for t in tf.nest.flatten(result)]
  sync(function())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    sync(function())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _layer_inputs(model: tf.keras.Model, x) -> Dict[str, Tuple]:
  """Each tapped layer's input (as the model called it) and output shape.

  Layers called inside another layer (MultiHeadAttention's projections)
  have no Keras input shape of their own: one forward pass records them.
  """
  seen = {}
  layers = tfdp.clipping.fast.tapped_layers(model)
  for layer in layers:
    def recording(inputs, *args, _layer=layer, _call=layer.call, **kwargs):
      outputs = _call(inputs, *args, **kwargs)
      seen[_layer.name] = (inputs, outputs.shape)
      return outputs
    object.__setattr__(layer, "call", recording)
  try:
    model(x)
  finally:
    for layer in layers:
      object.__delattr__(layer, "call")
  return seen


def _profile_layer(layer, inputs: tf.Tensor, output_shape: tf.TensorShape,
                   repeats: int = 5) -> Dict[str, object]:
  """Times one layer's non-private weight gradient against its tfdp rule.

  On the layer's inputs in the model and random output gradients, each in
  its own tf.function: the forward pass plus the ordinary (batch-summed)
  weight gradient, as in non-private training; the rule's per-example
  squared norms (forward included); and the norms plus the clipped sum.
  """
  rule = (tfdp.clipping.registry.rule_for(layer) or
          fallback.FallbackRule())
  x = inputs
  delta = tf.random.normal(output_shape)

  @tf.function
  def weight_gradient():
    with tf.GradientTape() as tape:
      z = layer(x)
    # Dense, also for an Embedding's (sparse) gradient.
    return [tf.convert_to_tensor(g) for g in tape.gradient(
        z, layer.trainable_weights, output_gradients=delta)]

  def rule_gradients():
    _, tap = rule.forward(layer, layer.call, (x,), {})
    return tap.rule.gradients(tap, delta)

  @tf.function
  def norms():
    return rule_gradients().squared_norms

  @tf.function
  def clipped_sum():
    gradients = rule_gradients()
    factors = tfdp.clipping.clip_factors(tf.sqrt(gradients.squared_norms),
                                         _L2_NORM_CLIP)
    return gradients.weighted_sum(factors)

  row = {"layer": layer.name, "type": type(layer).__name__,
         "input": "x".join(str(d) for d in inputs.shape[1:]),
         "output": "x".join(str(d) for d in output_shape[1:])}
  for key, function in (("weight_gradient_ms", weight_gradient),
                        ("norms_ms", norms), ("norms_and_sum_ms", clipped_sum)):
    row[key] = 1000 * _median_seconds(function, repeats)
  row["ratio"] = row["norms_and_sum_ms"] / row["weight_gradient_ms"]
  return row


def _profile(model_name: str) -> List[Dict[str, object]]:
  """`_profile_layer` for every layer of the model that has weights."""
  tf.keras.utils.set_random_seed(0)
  model = _MODELS[model_name].build(WIDTH.value)
  inputs = _layer_inputs(model, _random_inputs(model_name,
                                               (BATCH_SIZE.value,)))
  return [dict(model=model_name,
               **_profile_layer(layer, *inputs[layer.name]))
          for layer in tfdp.clipping.fast.tapped_layers(model)]


# ---------------------------------------------------------------------------
# Parent: one subprocess per configuration, then the report.


def _child_command(model_name: str, config: str) -> List[str]:
  if config in _TORCH_CONFIGS:  # A process without TensorFlow.
    return [sys.executable, "-m", "experiments.opacus_peer",
            f"--model={model_name}", f"--config={config}",
            f"--batch_size={BATCH_SIZE.value}", f"--steps={STEPS.value}",
            f"--warmup_steps={WARMUP_STEPS.value}", f"--width={WIDTH.value}"]
  return [sys.executable, "-m", "experiments.benchmark_clipping",
          f"--child={model_name}:{config}",
          f"--batch_size={BATCH_SIZE.value}", f"--steps={STEPS.value}",
          f"--slow_baseline_steps={SLOW_BASELINE_STEPS.value}",
          f"--warmup_steps={WARMUP_STEPS.value}", f"--width={WIDTH.value}"]


def _memory_limit_gib() -> float:
  if MEMORY_LIMIT_GIB.value is not None:
    return MEMORY_LIMIT_GIB.value
  return 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _run_child(command: List[str], timeout: float,
               memory_limit: float) -> Tuple[Optional[str], str, str]:
  """Runs a child, stopping it past `timeout` s or `memory_limit` GiB.

  Returns:
    (why it was stopped or None, stdout, stderr).
  """
  env = dict(os.environ)
  if BFC_ALLOCATOR.value:
    env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
  process = subprocess.Popen(command, cwd=_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
  started, stopped = time.monotonic(), None
  while True:
    try:
      stdout, stderr = process.communicate(timeout=0.5)
      return stopped, stdout, stderr
    except subprocess.TimeoutExpired:
      rss = _current_rss_gib(process.pid)
      if time.monotonic() - started > timeout:
        stopped = f"timed out after {timeout:.0f} s"
      elif rss is not None and rss > memory_limit:
        stopped = f"out of memory (resident > {memory_limit:.1f} GiB)"
      if stopped:
        process.kill()


def _child_result(model_name: str, config: str) -> Tuple[str, object]:
  """Runs `--child=MODEL:CONFIG` in a subprocess.

  Returns:
    ("ok", the child's JSON result), or (why it failed, the stderr tail).
  """
  stopped, stdout, stderr = _run_child(_child_command(model_name, config),
                                       TIMEOUT.value, _memory_limit_gib())
  lines = [l for l in stdout.splitlines() if l.startswith(("{", "["))]
  if stopped is None and lines:
    return "ok", json.loads(lines[-1])
  if stopped is None:
    errors = [l for l in stderr.splitlines() if l.strip()]
    stopped = "failed: " + (errors[-1][:200] if errors else "no output")
  return stopped, stderr[-3000:]


def _missing_peer(model_name: str, config: str) -> Optional[str]:
  """Why a peer's configuration cannot run on the model here, or None."""
  if config in _SLOW_BASELINES:
    missing = _optional.missing_tensorflow_privacy()
    return None if missing is None else "skipped: " + missing
  if config not in _TORCH_CONFIGS:
    return None
  if model_name not in _TORCH_MODELS:
    return f"skipped: no PyTorch twin of {model_name}"
  needed = ("torch",) if config == "torch_nonprivate" else ("torch",
                                                             "opacus")
  if any(importlib.util.find_spec(name) is None for name in needed):
    return 'skipped: install the peer with pip install -e ".[bench]"'
  return None


def _result_row(model_name: str, config: str) -> Dict[str, object]:
  """Measures one configuration in a subprocess; failures become rows."""
  missing = _missing_peer(model_name, config)
  if missing:
    return {"model": model_name, "config": config, "status": missing,
            "note": "", "seconds_per_step": None, "peak_rss_gib": None}
  status, result = _child_result(model_name, config)
  if status == "ok":
    return dict(result, status=status)
  return {"model": model_name, "config": config, "status": status,
          "note": "", "seconds_per_step": None, "peak_rss_gib": None,
          "stderr_tail": result}


def _fastest(runs: List[Dict[str, object]]) -> Dict[str, object]:
  """The fastest successful run of a configuration (else its failure)."""
  ok = [run for run in runs if run["status"] == "ok"]
  if not ok:
    return runs[-1]
  fastest = dict(min(ok, key=lambda run: run["seconds_per_step"]))
  fastest["round_seconds_per_step"] = [run["seconds_per_step"] for run in ok]
  return fastest


def _add_ratios(rows: List[Dict[str, object]], batch_size: int) -> None:
  """Adds examples/s and the time and memory ratios to non-private."""
  baselines = {(r["model"], r["config"]): r for r in rows
               if r["config"] in ("nonprivate", "torch_nonprivate")
               and r["status"] == "ok"}
  for row in rows:
    ok = row["status"] == "ok"
    framework_baseline = ("torch_nonprivate" if row["config"] in
                          _TORCH_CONFIGS else "nonprivate")
    row["examples_per_s"] = (
        row.get("batch_size", batch_size) / row["seconds_per_step"]
        if ok else None)
    base = baselines.get((row["model"], framework_baseline))
    for key, ratio_key in (("seconds_per_step", "time_ratio"),
                           ("peak_rss_gib", "memory_ratio"),
                           ("peak_tensors_gib", "tensor_memory_ratio")):
      row[ratio_key] = (row[key] / base[key] if ok and base and
                        row.get(key) and base.get(key) else None)
  _add_augmult_ratios(rows)
  _add_chunk_ratios(rows)


def _add_chunk_ratios(rows: List[Dict[str, object]]) -> None:
  """Accumulation in 4 chunks: time against one chunk of B (tfdp), and
  peak memory against one chunk of B/4 (tfdp_quarter) plus the model's
  gradients (4 bytes a parameter), the accumulator it adds; both on the
  same kind of batch (static or dynamic size)."""
  by_key = {(r["model"], r["config"]): r for r in rows if r["status"] == "ok"}
  for row in rows:
    if row["config"] not in ("tfdp_chunks4", "tfdp_chunks4_dynamic"):
      continue
    kind = row["config"][len("tfdp_chunks4"):]
    whole = by_key.get((row["model"], "tfdp" + kind))
    quarter = by_key.get((row["model"], "tfdp_quarter" + kind))
    if row["status"] == "ok" and whole:
      row["chunk_time_ratio"] = (row["seconds_per_step"] /
                                 whole["seconds_per_step"])
    if row["status"] == "ok" and quarter:
      bound = quarter["peak_rss_gib"] + 4 * row["parameters"] / 2**30
      row["chunk_memory_ratio"] = row["peak_rss_gib"] / bound


def _add_augmult_ratios(rows: List[Dict[str, object]]) -> None:
  """Each augmult row's time against augmult K = 1 of the same model."""
  single = {r["model"]: r["seconds_per_step"] for r in rows
            if r["config"] == "tfdp_augmult1" and r["status"] == "ok"}
  for row in rows:
    if (row["config"] in _AUGMULT_CONFIGS and row["status"] == "ok" and
        row["model"] in single):
      row["augmult_ratio"] = row["seconds_per_step"] / single[row["model"]]


_RESULT_COLUMNS = (
    ("model", "model"), ("config", "config"), ("seconds_per_step", "s/step"),
    ("examples_per_s", "examples/s"), ("peak_rss_gib", "peak RSS (GiB)"),
    ("time_ratio", "time x nonprivate"),
    ("memory_ratio", "memory x nonprivate"),
    ("peak_tensors_gib", "peak tensors (GiB)"),
    ("tensor_memory_ratio", "tensors x nonprivate"),
    ("augmult_ratio", "time x augmult1"),
    ("chunk_time_ratio", "time x tfdp (one chunk)"),
    ("chunk_memory_ratio", "memory / (chunk of B/4 + gradients)"),
    ("status", "status"),
    ("note", "note"))
_PROFILE_COLUMNS = (
    ("model", "model"), ("layer", "layer"), ("type", "type"),
    ("input", "input"), ("output", "output"),
    ("weight_gradient_ms", "non-private weight gradient (ms)"),
    ("norms_ms", "tfdp norms (ms)"),
    ("norms_and_sum_ms", "tfdp norms + clipped sum (ms)"),
    ("ratio", "tfdp x non-private"))


def _table(rows: List[Dict[str, object]], columns) -> str:
  """A markdown table of (key, title) columns; "-" where a value is missing."""
  return _report.markdown_table([
      {title: "-" if row.get(key) is None else row[key]
       for key, title in columns} for row in rows])


def _plot(rows: List[Dict[str, object]], path: str) -> None:
  """Grouped bars of the time ratios, one group per model."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  models = list(dict.fromkeys(r["model"] for r in rows))
  configs = [c for c in dict.fromkeys(r["config"] for r in rows)
             if c != "nonprivate"]
  by_key = {(r["model"], r["config"]): r for r in rows}
  figure, axes = plt.subplots(figsize=(1.6 + 1.1 * len(models) * max(
      1, len(configs)), 4))
  bar = 0.8 / max(1, len(configs))
  for index, config in enumerate(configs):
    for position, model in enumerate(models):
      row = by_key.get((model, config))
      if row is None:
        continue
      x = position + (index - (len(configs) - 1) / 2) * bar
      ratio = row.get("time_ratio")
      if ratio is None:
        axes.text(x, 1, "n/a", ha="center", va="bottom", fontsize=7,
                  rotation=90)
        continue
      axes.bar(x, ratio, bar, color=f"C{index}",
               label=config if position == 0 else None)
      axes.text(x, ratio, f"{ratio:.3g}x", ha="center", va="bottom",
                fontsize=7)
  axes.axhline(1.0, color="black", linewidth=0.8, label="nonprivate")
  ratios = [r["time_ratio"] for r in rows if r.get("time_ratio")]
  if ratios and max(ratios) > 20:
    axes.set_yscale("log")
  axes.set_xticks(range(len(models)), models)
  axes.set_ylabel("time per step / non-private")
  axes.set_title(f"Per-example clipping cost, batch {BATCH_SIZE.value}")
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def _selected(values: List[str], allowed: Tuple[str, ...],
              name: str) -> List[str]:
  unknown = [v for v in values if v not in allowed]
  if unknown or not values:
    raise app.UsageError(f"--{name} must be a non-empty list from "
                         f"{', '.join(allowed)}, got {','.join(values)}")
  return list(dict.fromkeys(values))


# CPU features that decide TensorFlow's kernels: oneDNN is on by default only
# with AVX512_VNNI, AVX512_BF16 or AMX, and the conv rule's way follows it.
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def _environment() -> Dict[str, object]:
  return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "cpu_count": os.cpu_count(), "machine": platform.platform(),
          "cpu_flags": _cpu_flags(), "onednn": _onednn_enabled(),
          "python": platform.python_version(), "tensorflow": tf.__version__}


_ON_OFF = {True: "on", False: "off"}


def _cpu_flags() -> Optional[List[str]]:
  """Which of `_CPU_FLAGS` the CPU has (None where /proc/cpuinfo is not)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = set(next((line for line in f if line.startswith("flags")),
                       "").split())
  except OSError:
    return None
  return [flag for flag in _CPU_FLAGS if flag in flags]


def _onednn_enabled() -> Optional[bool]:
  """Whether this TensorFlow runs its oneDNN kernels (None if unknown)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def _profile_rows(models: List[str]) -> List[Dict[str, object]]:
  """Per-layer profiles of the models, each in a subprocess, with totals."""
  rows = []
  for model_name in models:
    print(f"Profiling {model_name} layer by layer ...", flush=True)
    status, result = _child_result(model_name, _PROFILE)
    if status != "ok":
      rows.append({"model": model_name, "layer": status})
      continue
    total = {"model": model_name, "layer": "total"}
    for key in ("weight_gradient_ms", "norms_ms", "norms_and_sum_ms"):
      total[key] = sum(row[key] for row in result)
    total["ratio"] = total["norms_and_sum_ms"] / total["weight_gradient_ms"]
    rows += result + [total]
  return rows


def _write_results(rows: List[Dict[str, object]],
                   profile: List[Dict[str, object]]) -> str:
  """Writes the table, JSON, chart and profile; returns the table."""
  results_dir = RESULTS_DIR.value
  os.makedirs(results_dir, exist_ok=True)
  settings = {"batch_size": BATCH_SIZE.value, "steps": STEPS.value,
              "slow_baseline_steps": SLOW_BASELINE_STEPS.value,
              "warmup_steps": WARMUP_STEPS.value, "width": WIDTH.value,
              "l2_norm_clip": _L2_NORM_CLIP,
              "noise_multiplier": _NOISE_MULTIPLIER, "optimizer": "SGD",
              "rounds": ROUNDS.value, "bfc_allocator": BFC_ALLOCATOR.value,
              "timing": "median wall time of the timed steps, fastest of "
                        "the rounds"}
  environment = _environment()
  _report.write_json(os.path.join(results_dir, "results.json"),
                     {"settings": settings, "environment": environment,
                      "rows": rows, "profile": profile})
  header = (f"Measured {environment['date']} on {environment['cpu_count']} "
            f"CPU cores ({', '.join(environment['cpu_flags'] or [])}), "
            f"oneDNN {_ON_OFF.get(environment['onednn'], 'unknown')}, "
            f"TensorFlow {environment['tensorflow']}, batch "
            f"{BATCH_SIZE.value}, width {WIDTH.value:g}")
  # The tensor columns only exist with --bfc_allocator, the augmult column
  # with augmult configurations.
  optional = ("peak_tensors_gib", "tensor_memory_ratio", "augmult_ratio",
              "chunk_time_ratio", "chunk_memory_ratio")
  columns = [(key, title) for key, title in _RESULT_COLUMNS
             if key not in optional or any(r.get(key) for r in rows)]
  table = _table(rows, columns)
  with open(os.path.join(results_dir, "results.md"), "w") as f:
    f.write(f"{header}: median of the timed steps, fastest of "
            f"{ROUNDS.value} round(s).\n\n{table}\n")
  if profile:
    with open(os.path.join(results_dir, "profile.md"), "w") as f:
      f.write(f"{header}: per-layer medians in ms (forward included).\n\n"
              f"{_table(profile, _PROFILE_COLUMNS)}\n")
  _plot(rows, os.path.join(results_dir, "time_ratios.png"))
  return table


def _run_parent() -> None:
  models = _selected(MODELS.value, tuple(_MODELS), "models")
  configs = _selected(CONFIGS.value, _CONFIGS, "configs")
  if SKIP_SLOW_BASELINES.value:
    configs = [c for c in configs if c not in _SLOW_BASELINES]
  runs: Dict[Tuple[str, str], List[Dict[str, object]]] = {}
  for round_index in range(ROUNDS.value):
    for model_name in models:
      for config in configs:
        previous = runs.setdefault((model_name, config), [])
        if previous and (previous[-1]["status"] != "ok" or
                         config in _SLOW_BASELINES):
          continue  # Failures and the slow baselines: once is enough.
        print(f"Round {round_index + 1}: {model_name} / {config} ...",
              flush=True)
        previous.append(_result_row(model_name, config))
        print(f"  {previous[-1]['status']}: "
              f"{previous[-1]['seconds_per_step'] or '-'} s/step", flush=True)
  rows = [_fastest(model_runs) for model_runs in runs.values()]
  _add_ratios(rows, BATCH_SIZE.value)
  profile = _profile_rows(models) if PROFILE.value else []
  print(_write_results(rows, profile))
  print(f"\nResults: {RESULTS_DIR.value}")


def main(argv):
  del argv
  if _CHILD.value:
    model_name, config = _CHILD.value.split(":")
    result = (_profile(model_name) if config == _PROFILE else
              _measure(model_name, config))
    print(json.dumps(result), flush=True)
  else:
    _run_parent()


if __name__ == "__main__":
  app.run(main)
