"""White-box audit of DP-SGD with Dirac canaries (Nasr et al. 2021, 2023).

Threat model: the auditor chooses the canaries and sees every iterate of
training (as in federated or shared-checkpoint settings). With plain SGD
(no momentum) a step moves canary i's weight by

    w_t - w_{t-1} = -lr (b_t C + sigma C z_t) / B,   z_t ~ N(0, 1),

where b_t = 1 if the canary was in step t's Poisson sample (probability q
when included, never when not), C is the clip norm, B the expected batch
size. So x_t = -(w_t - w_{t-1}) B / (lr C) = b_t + sigma z_t, and the
Neyman-Pearson statistic of (x_1..x_T) against "not included" is

    score = sum_t log(1 - q + q exp((2 x_t - 1) / (2 sigma^2))).

A run with the canary in should score high. `DPSGDRuns` trains with the
trainer's own code (`tfdp.make_private`, `tfdp.optimizers.DPSGD`, Poisson
sampling); `many_runs_audit` repeats training with the canary in and out and
bounds epsilon from the counts, at a threshold fixed beforehand from the
claimed mechanism (`simulate_observations`); `one_run_audit` trains once
with many canaries, each in with probability 1/2.

Example:
  >>> setting = DPSGDSetting(noise_multiplier=1.1, l2_norm_clip=1.0,
  ...                        batch_size=64, steps=20, learning_rate=0.1)
  >>> runs = DPSGDRuns(
  ...     lambda: tf.keras.Sequential([tf.keras.layers.Dense(10)]),
  ...     x, y, setting, input_shape=(64,), num_classes=10)
  >>> result = many_runs_audit(runs, runs_per_side=200, delta=1e-5)
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfdp import _validation
from tfdp import optimizers
from tfdp import private
from tfdp.audit import bounds
from tfdp.audit import canaries as canaries_lib
from tfdp.data import sampling

# Called as progress(done, total) after each training run.
Progress = Optional[Callable[[int, int], None]]


@dataclasses.dataclass(frozen=True)
class DPSGDSetting:
  """The DP-SGD run being audited (as the accountant sees it).

  Attributes:
    noise_multiplier: sigma, > 0.
    l2_norm_clip: C, > 0.
    batch_size: the expected batch size B (Poisson sampling, q = B / N).
    steps: T, the number of steps of one run.
    learning_rate: plain SGD's learning rate (no momentum, so the white-box
      auditor can read each noisy gradient off the iterates).
  """
  noise_multiplier: float
  l2_norm_clip: float
  batch_size: int
  steps: int
  learning_rate: float

  def __post_init__(self):
    _validation.check_positive("noise_multiplier", self.noise_multiplier)
    _validation.check_positive("l2_norm_clip", self.l2_norm_clip)
    _validation.check_positive_int("batch_size", self.batch_size)
    _validation.check_positive_int("steps", self.steps)
    _validation.check_positive("learning_rate", self.learning_rate)


def likelihood_ratio_scores(observations: np.ndarray,
                            sampling_probability: float,
                            noise_multiplier: float) -> np.ndarray:
  """The module docstring's score of each canary (or run).

  Args:
    observations: x_t, [steps, canaries] (or [runs, steps, canaries]).
    sampling_probability: q in (0, 1].
    noise_multiplier: sigma > 0.

  Returns:
    [canaries] (or [runs, canaries]): the sum over the steps axis.
  """
  x = np.asarray(observations, dtype=np.float64)
  log_signal = (2.0 * x - 1.0) / (2.0 * noise_multiplier**2)
  if sampling_probability < 1.0:
    log_signal = np.logaddexp(np.log1p(-sampling_probability),
                              np.log(sampling_probability) + log_signal)
  return log_signal.sum(axis=-2)


def simulate_observations(setting: DPSGDSetting, sampling_probability: float,
                          included: np.ndarray,
                          rng: np.random.Generator) -> np.ndarray:
  """x_t of the claimed mechanism: [steps, canaries] for `included`."""
  included = np.asarray(included, dtype=bool)
  shape = (setting.steps,) + included.shape
  sampled = (rng.random(shape) < sampling_probability) & included
  return sampled + setting.noise_multiplier * rng.standard_normal(shape)


class DPSGDRuns:
  """DP-SGD training runs of tfdp's own trainer, with Dirac canaries.

  One Keras model (`tfdp.make_private` of `model_fn()` with
  `canaries.with_dirac_canaries`, compiled with `tfdp.optimizers.DPSGD` and
  momentum 0) is reset to the same initial weights before each run, so the
  compiled train step is traced once. A run is one `model.fit` epoch over
  `tfdp.data.poisson_batches` (every real example and every included canary
  independently with probability q = B / N at each step, N the rows:
  `sampling_probability`); a callback reads the canary weights after each
  step. Runs differ in their samples and in the noise (both secret, from
  the OS).

  Args:
    model_fn: builds the classifier (logits), called once.
    x, y: the real training examples and integer labels; with the
      canaries at least B rows.
    setting: the `DPSGDSetting`.
    input_shape: the shape of one example.
    num_classes: the number of classes.
    canaries: the number of canary slots (1 for many runs; m for one run).
    gradient_norm: the canary's gradient norm before clipping (default
      100 C, so that a missing clip shows).
    public_data: public examples for the model's
      `tfdp.layers.PublicBatchNormalization` layers (`make_private`'s
      `public_data`), or None.
    strategy: a `tf.distribute.Strategy` to build and train under (None:
      the default).
  """

  def __init__(self, model_fn: Callable[[], tf.keras.Model], x: np.ndarray,
               y: np.ndarray, setting: DPSGDSetting, *, input_shape,
               num_classes: int, canaries: int = 1,
               gradient_norm: Optional[float] = None,
               public_data: Optional[np.ndarray] = None,
               strategy: Optional[tf.distribute.Strategy] = None):
    self.canaries = _validation.check_positive_int("canaries", canaries)
    if len(x) != len(y) or len(x) + canaries < setting.batch_size:
      raise ValueError(
          "x and y need the same number of rows, and with the canaries at "
          f"least batch_size = {setting.batch_size}; got {len(x)} and "
          f"{len(y)} rows, {canaries} canaries")
    self.setting = setting
    with (strategy or tf.distribute.get_strategy()).scope():
      self.model = canaries_lib.with_dirac_canaries(
          model_fn(), input_shape=input_shape, canaries=canaries,
          num_classes=num_classes,
          gradient_norm=gradient_norm or 100.0 * setting.l2_norm_clip)
      self.model = private.make_private(
          self.model, public_data=(
              None if public_data is None else
              canaries_lib.embed_examples(self.model, public_data)))
      self.model.compile(
          optimizer=optimizers.DPSGD(
              learning_rate=setting.learning_rate, momentum=0.0,
              l2_norm_clip=setting.l2_norm_clip,
              noise_multiplier=setting.noise_multiplier,
              expected_batch_size=setting.batch_size),
          loss=tf.keras.losses.SparseCategoricalCrossentropy(
              from_logits=True, reduction=tf.keras.losses.Reduction.NONE))
    self._rows = canaries_lib.embed_examples(self.model, x)
    self._labels = np.asarray(y, dtype=np.int64)
    self._canary_rows = canaries_lib.dirac_canary_rows(
        self.model, range(canaries))
    self._initial = [w.numpy() for w in self.model.weights]
    self._samplers = {}
    self._strategy = strategy

  def sampling_probability(self, included: int) -> float:
    """q = B / N of a run with `included` canaries among its N rows."""
    return min(1.0, self.setting.batch_size / (len(self._rows) + included))

  def _sampled(self, included: np.ndarray):
    """The sampler's batches over the rows with `included` canaries.

    Built once per set of included canaries (many runs alternate two); each
    iteration draws fresh secret samples.
    """
    key = included.tobytes()
    if key not in self._samplers:
      rows = np.concatenate([self._rows, self._canary_rows[included]])
      labels = np.concatenate([
          self._labels,
          np.full(int(included.sum()), canaries_lib.CANARY_LABEL, np.int64)])
      dataset = sampling.poisson_batches(
          rows, labels, self.setting.batch_size,
          steps_per_epoch=self.setting.steps).dataset
      if self._strategy is not None:
        # Distributed once: `fit` would redo it (slowly) on every run.
        dataset = self._strategy.experimental_distribute_dataset(dataset)
      self._samplers[key] = dataset
    return self._samplers[key]

  def _reset(self) -> None:
    for variable, value in zip(self.model.weights, self._initial):
      variable.assign(value)
    for variable in self.model.optimizer.variables:
      variable.assign(tf.zeros_like(variable))

  def run(self, included: np.ndarray) -> np.ndarray:
    """One training run; returns x_t, [steps, canaries].

    The batches come from `tfdp.data.poisson_batches` (secret sampling) over
    the real examples and the included canaries.

    Args:
      included: [canaries] bools: which canaries are in the training set.
    """
    included = np.asarray(included, dtype=bool).reshape(self.canaries)
    self._reset()
    scale = -self.setting.batch_size / (self.setting.learning_rate *
                                        self.setting.l2_norm_clip)
    weights = [canaries_lib.canary_weights(self.model)]
    read = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: weights.append(
            canaries_lib.canary_weights(self.model)))
    self.model.fit(self._sampled(included), epochs=1,
                   steps_per_epoch=self.setting.steps, verbose=0,
                   callbacks=[read])
    if len(weights) != self.setting.steps + 1:
      raise RuntimeError(f"the run took {len(weights) - 1} steps, expected "
                         f"{self.setting.steps}")
    return np.diff(np.stack(weights), axis=0) * scale


@dataclasses.dataclass(frozen=True)
class WhiteBoxResult:
  """A white-box audit's bound and what it came from.

  Attributes:
    bound: the `bounds.AuditBound`.
    scores_in, scores_out: the runs' (or canaries') scores with the canary in
      and out.
    runs: the training runs it took.
  """
  bound: bounds.AuditBound
  scores_in: np.ndarray
  scores_out: np.ndarray
  runs: int


def many_runs_audit(runs: DPSGDRuns, *, runs_per_side: int, delta: float,
                    confidence: float = 0.95, seed: Optional[int] = None,
                    selection_fraction: float = 0.25,
                    progress: Progress = None) -> WhiteBoxResult:
  """2 `runs_per_side` trainings, the canary in for half: an epsilon bound.

  Two thresholds, each judged at confidence 1 - alpha/2 so that the larger
  bound holds at `confidence`:

  * fixed before training, from 100,000 simulated runs of the claimed
    mechanism (`bounds.simulated_threshold`); every run counts;
  * chosen on `selection_fraction` of the runs and counted on the rest
    (`bounds.epsilon_lower_bound_from_scores`): it adapts to an
    implementation that is not the claimed mechanism (with no noise at all,
    the claimed mechanism's best threshold can lie where no run scores).
  """
  runs_per_side = _validation.check_positive_int("runs_per_side",
                                                 runs_per_side)
  if runs_per_side < 2:
    raise ValueError(f"runs_per_side must be >= 2, got {runs_per_side}")
  # The in-world's q (N real rows + 1 canary); out-runs have no canary.
  setting, q = runs.setting, runs.sampling_probability(1)
  each = 1.0 - (1.0 - confidence) / 2.0
  rng = np.random.default_rng(seed)
  simulated = [likelihood_ratio_scores(
      simulate_observations(setting, q, np.full([100_000], inside), rng), q,
      setting.noise_multiplier) for inside in (True, False)]
  threshold = bounds.simulated_threshold(
      *simulated, runs_in=runs_per_side, runs_out=runs_per_side, delta=delta,
      confidence=each)
  scores = {True: [], False: []}
  total = 2 * runs_per_side
  for index in range(total):
    inside = index % 2 == 0
    observations = runs.run(np.full([runs.canaries], inside))
    scores[inside].append(likelihood_ratio_scores(
        observations, q, setting.noise_multiplier)[0])
    if progress:
      progress(index + 1, total)
  scores_in, scores_out = np.array(scores[True]), np.array(scores[False])
  counts = (int(np.sum(scores_in >= threshold)), runs_per_side,
            int(np.sum(scores_out >= threshold)), runs_per_side)
  fixed = bounds.AuditBound(
      bounds.epsilon_lower_bound(*counts, delta=delta, confidence=each),
      confidence, threshold, *counts)
  split = dataclasses.replace(
      bounds.epsilon_lower_bound_from_scores(
          scores_in, scores_out, delta=delta, confidence=each,
          selection_fraction=selection_fraction,
          seed=int(rng.integers(2**31))), confidence=confidence)
  return WhiteBoxResult(max(fixed, split, key=lambda b: b.epsilon),
                        scores_in, scores_out, total)


def one_run_audit(runs: DPSGDRuns, *, delta: float, confidence: float = 0.95,
                  seed: Optional[int] = None) -> WhiteBoxResult:
  """One training with `runs.canaries` canaries, each in with probability 1/2.

  Scores each canary by the likelihood ratio and bounds epsilon with
  `bounds.one_run_epsilon_lower_bound`.
  """
  rng = np.random.default_rng(seed)
  included = rng.random(runs.canaries) < 0.5
  observations = runs.run(included)
  scores = likelihood_ratio_scores(
      observations, runs.sampling_probability(int(included.sum())),
      runs.setting.noise_multiplier)
  bound = bounds.one_run_epsilon_lower_bound(scores, included, delta=delta,
                                             confidence=confidence)
  return WhiteBoxResult(bound, scores[included], scores[~included], 1)
