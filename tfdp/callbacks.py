"""Keras callbacks that keep track of the privacy budget.

`PrivacyCallback` makes its accountant track the model's DP optimizer (so
every DP step counts exactly once, from `optimizer.iterations`, whatever the
callback order, restarts or repeated `fit` calls), reports epsilon after each
epoch in the Keras logs and as TensorBoard scalars, and stops training,
saving first, before an epoch that would spend more than a target epsilon.
"""

import math
import os
from typing import Any, Optional

from absl import logging
import tensorflow as tf

from tfdp import _validation
from tfdp.data import sampling as sampling_lib
from tfdp.privacy import accountant as accountant_lib


class PrivacyBudgetExceededError(RuntimeError):
  """Training cannot go on without spending more than the target epsilon."""


class PrivacyCallback(tf.keras.callbacks.Callback):
  """Accounts every DP step, logs epsilon, and enforces a target epsilon.

  At the start of training the accountant starts tracking the model's DP
  optimizer (`PrivacyAccountant.track`): the step count follows
  `optimizer.iterations`, and the accountant is saved and restored with the
  optimizer. So resuming with `tf.keras.callbacks.BackupAndRestore`, before
  or after this callback in the list, counts the restored run's steps once,
  and a second `fit` (even with a new accountant) counts the first one's.

  After each epoch it adds `epsilon`, `delta`, `noise_multiplier` and
  `dp_steps` to the Keras logs (so `History`, the progress bar and a later
  `TensorBoard` callback see them) and, if `log_dir` is given, writes them as
  TensorBoard scalars under `log_dir/privacy`.

  With `target_epsilon`, training stops after the last epoch whose end keeps
  epsilon <= target: if one more epoch (of the length just measured) would
  pass the target, the callback saves a checkpoint (model, optimizer and
  accountant) to `checkpoint_path` and sets `model.stop_training`. If even
  the first epoch would pass it, `fit` is refused before any step with
  `PrivacyBudgetExceededError`; nothing is written or overwritten then.

  The accountant must describe the optimizer: same noise multiplier and, if
  it was given a batch size, the optimizer's expected batch size. Training
  with a non-DP optimizer under this callback is refused. For models made
  with `tfdp.make_private`, `fit` also checks that the training data comes
  from the sampler the accountant assumes (`check_training_data`).

  At the end of training the model's metrics are reset: their totals were
  computed on private data without noise, and would otherwise be saved with
  the model.

  Args:
    accountant: the `tfdp.privacy.PrivacyAccountant` of this training run.
    target_epsilon: optional budget (> 0) that training must not exceed.
    log_dir: optional TensorBoard log directory.
    checkpoint_path: optional prefix for a `tf.train.Checkpoint` written when
      training stops for the budget and when it ends. Restore with
      `tf.train.Checkpoint(model=model, accountant=accountant).read(path)`.

  Example:
    >>> acc = tfdp.privacy.PrivacyAccountant(
    ...     noise_multiplier=1.1, delta=1e-5, batch_size=64,
    ...     dataset_size=1437)
    >>> callback = PrivacyCallback(acc, target_epsilon=3.0)
    >>> # model.fit(..., callbacks=[callback])
  """

  def __init__(self,
               accountant: accountant_lib.PrivacyAccountant,
               *,
               target_epsilon: Optional[float] = None,
               log_dir: Optional[str] = None,
               checkpoint_path: Optional[str] = None):
    super().__init__()
    if not isinstance(accountant, accountant_lib.PrivacyAccountant):
      raise ValueError("accountant must be a tfdp.privacy.PrivacyAccountant, "
                       f"got {accountant!r}")
    self.accountant = accountant
    self.target_epsilon = _validation.check_optional_positive(
        "target_epsilon", target_epsilon)
    self.log_dir = log_dir
    self.checkpoint_path = checkpoint_path
    self._writer = None
    self._first_epoch = True
    self._epoch_start_steps = 0
    self._steps_per_epoch = None
    self._saved_at_steps = None

  def check_training_data(self, x: Any, batch_size: Optional[int]) -> None:
    """Refuses training data that the accountant's sampler does not describe.

    `tfdp.make_private` models call it from `fit` for each PrivacyCallback.

    Args:
      x: `fit`'s `x`.
      batch_size: `fit`'s `batch_size`.

    Raises:
      ValueError: for arrays (Keras shuffles them once per epoch and cuts
        consecutive batches: no sampler the accountant models), for batched
        `tf.data` pipelines (`shuffle().batch()`: the same), and for a
        tfdp sampler other than the accountant's (sampling, batch size or
        dataset size), each with the fix.
    """
    accountant = self.accountant
    wanted = (f"{accountant.sampling} sampling with q = "
              f"{accountant.sampling_probability:.4g}")
    fix = ("Pass the .dataset of tfdp.data.poisson_batches(x, y, "
           "expected_batch_size=...) (or fixed_size_batches for a "
           "fixed-size accountant), and build the accountant with its "
           "accountant_kwargs().")
    if not isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset)):
      raise ValueError(
          f"fit(x={type(x).__name__}, batch_size={batch_size}) shuffles the "
          "data once per epoch and cuts it into consecutive batches; the "
          f"accountant assumes {wanted}, so the epsilon it reports would not "
          f"hold. {fix}")
    sampler = sampling_lib.sampler_of(x)
    if sampler is None:
      if sampling_lib.is_batched(x):
        raise ValueError(
            "fit was given a tf.data pipeline that batches its elements "
            "(e.g. shuffle().batch()): every example appears once per epoch "
            f"in consecutive batches, not {wanted} as the accountant "
            f"assumes, so the epsilon it reports would not hold. {fix}")
      logging.warning(
          "tfdp: fit was given a tf.data.Dataset that no tfdp sampler made; "
          "the accountant assumes %s and cannot check it. %s", wanted, fix)
      return
    expected = accountant.get_config()
    if expected["dataset_size"] is None:  # The accountant was given q only.
      same = math.isclose(sampler.sampling_probability,
                          accountant.sampling_probability, rel_tol=1e-9)
    else:
      same = (sampler.dataset_size == expected["dataset_size"] and
              sampler.expected_batch_size == expected["batch_size"])
    if sampler.sampling != accountant.sampling or not same:
      raise ValueError(
          f"The training data is {sampler.sampling} sampling of "
          f"{sampler.expected_batch_size} from {sampler.dataset_size} "
          f"examples, but the accountant assumes {wanted} (batch_size="
          f"{expected['batch_size']}, dataset_size={expected['dataset_size']})"
          ": the epsilon it reports would be wrong. Build the accountant "
          "with the sampler's accountant_kwargs().")

  # -- bookkeeping -----------------------------------------------------------

  def _save(self) -> None:
    if self.checkpoint_path is None:
      return
    if self._saved_at_steps == self.accountant.steps:
      return
    directory = os.path.dirname(self.checkpoint_path)
    if directory:
      tf.io.gfile.makedirs(directory)
    tf.train.Checkpoint(model=self.model,
                        accountant=self.accountant).write(self.checkpoint_path)
    self._saved_at_steps = self.accountant.steps

  def _refuse_spent_budget(self) -> None:
    if self.target_epsilon is None:
      return
    steps = self._steps_per_epoch or 1
    upcoming = self.accountant.spent_after(steps)
    if upcoming.epsilon > self.target_epsilon:
      raise PrivacyBudgetExceededError(
          f"target_epsilon={self.target_epsilon} is already spent or would be "
          f"passed by the next epoch: {self.accountant.spent()}; one more "
          f"epoch of {steps} steps would reach epsilon "
          f"{upcoming.epsilon:.4g}. Nothing was trained or saved. Raise "
          "target_epsilon, use more noise or fewer steps per epoch, or stop "
          "training this model on this data.")

  # -- Keras hooks -------------------------------------------------------------

  def on_train_begin(self, logs=None):
    self.accountant.track(self.model.optimizer)
    self._first_epoch = True
    self._steps_per_epoch = (self.params or {}).get("steps")

  def on_epoch_begin(self, epoch, logs=None):
    # Here rather than in on_train_begin: a BackupAndRestore later in the
    # callback list has restored the optimizer (and the count) by now.
    if self._first_epoch:
      self._first_epoch = False
      self._refuse_spent_budget()
    self._epoch_start_steps = self.accountant.steps

  def on_epoch_end(self, epoch, logs=None):
    spent = self.accountant.spent()
    if not (self.params or {}).get("steps"):
      self._steps_per_epoch = (spent.steps - self._epoch_start_steps or
                               self._steps_per_epoch)
    values = {
        "epsilon": spent.epsilon,
        "delta": spent.delta,
        "noise_multiplier": spent.noise_multiplier,
        "dp_steps": float(spent.steps),
    }
    if logs is not None:
      logs.update(values)
    if self.log_dir is not None:
      if self._writer is None:
        self._writer = tf.summary.create_file_writer(
            os.path.join(self.log_dir, "privacy"))
      with self._writer.as_default():
        for name, value in values.items():
          tf.summary.scalar(f"privacy/{name}", value, step=epoch)
      self._writer.flush()
    if self.target_epsilon is not None and self._steps_per_epoch:
      upcoming = self.accountant.spent_after(self._steps_per_epoch)
      if upcoming.epsilon > self.target_epsilon:
        self._save()
        self.model.stop_training = True

  def on_train_end(self, logs=None):
    self._save()
    # Totals of unnoised training metrics on private data: not for saving.
    self.model.reset_metrics()
    if self._writer is not None:
      self._writer.close()
      self._writer = None
