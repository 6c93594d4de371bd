"""Keras callbacks that keep track of the privacy budget.

`PrivacyCallback` records the DP steps actually taken (read from the
optimizer's step counter, so resumed runs and early stops count exactly),
reports epsilon after each epoch in the Keras logs and as TensorBoard scalars,
and stops training, saving first, before an epoch that would spend more than a
target epsilon.
"""

import os
from typing import Optional

import tensorflow as tf

from tfdp import _validation
from tfdp import optimizers
from tfdp.privacy import accountant as accountant_lib


class PrivacyBudgetExceededError(RuntimeError):
  """Training cannot go on without spending more than the target epsilon."""


class PrivacyCallback(tf.keras.callbacks.Callback):
  """Accounts every DP step, logs epsilon, and enforces a target epsilon.

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
  with a non-DP optimizer under this callback is refused.

  Args:
    accountant: the `tfdp.privacy.PrivacyAccountant` of this training run;
      it is advanced by the steps the optimizer takes.
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
    self._last_iterations = 0
    self._steps_per_epoch = None
    self._saved_at_steps = None

  # -- bookkeeping -----------------------------------------------------------

  def _optimizer_iterations(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def _record_new_steps(self) -> int:
    """Adds the optimizer steps taken since the last call to the accountant."""
    now = self._optimizer_iterations()
    new_steps = now - self._last_iterations
    self._last_iterations = now
    self.accountant.record_steps(new_steps)
    return new_steps

  def _check_optimizer(self) -> None:
    optimizer = self.model.optimizer
    if not optimizers.is_dp_optimizer(optimizer):
      raise ValueError(
          "PrivacyCallback was given a model compiled with a non-private "
          f"optimizer ({type(optimizer).__name__}): it would train without "
          "clipping or noise. Compile with a tfdp.optimizers DP optimizer, "
          "e.g. tfdp.optimizers.DPSGD(...).")
    if optimizer.noise_multiplier != self.accountant.noise_multiplier:
      raise ValueError(
          f"accountant.noise_multiplier ({self.accountant.noise_multiplier}) "
          "differs from the optimizer's noise_multiplier "
          f"({optimizer.noise_multiplier}): the reported epsilon would be "
          "wrong. Build both from the same value.")
    batch_size = self.accountant.get_config().get("batch_size")
    if batch_size is not None and batch_size != optimizer.expected_batch_size:
      raise ValueError(
          f"accountant batch_size ({batch_size}) differs from the optimizer's "
          f"expected_batch_size ({optimizer.expected_batch_size}).")

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

  # -- Keras hooks -------------------------------------------------------------

  def on_train_begin(self, logs=None):
    self._check_optimizer()
    self._last_iterations = self._optimizer_iterations()
    self._steps_per_epoch = (self.params or {}).get("steps")
    self._refuse_spent_budget()
    if self.log_dir is not None:
      self._writer = tf.summary.create_file_writer(
          os.path.join(self.log_dir, "privacy"))

  def _refuse_spent_budget(self) -> None:
    if self.target_epsilon is None:
      return
    spent = self.accountant.spent()
    first_epoch = self.accountant.spent_after(self._steps_per_epoch or 1)
    if first_epoch.epsilon > self.target_epsilon:
      raise PrivacyBudgetExceededError(
          f"target_epsilon={self.target_epsilon} is already spent or would be "
          f"passed by the next epoch: {spent}; one more epoch of "
          f"{self._steps_per_epoch or 1} steps would reach epsilon "
          f"{first_epoch.epsilon:.4g}. Nothing was trained or saved. Raise "
          "target_epsilon, use more noise or fewer steps per epoch, or stop "
          "training this model on this data.")

  def on_epoch_end(self, epoch, logs=None):
    new_steps = self._record_new_steps()
    if new_steps:
      self._steps_per_epoch = new_steps
    spent = self.accountant.spent()
    values = {
        "epsilon": spent.epsilon,
        "delta": spent.delta,
        "noise_multiplier": spent.noise_multiplier,
        "dp_steps": float(spent.steps),
    }
    if logs is not None:
      logs.update(values)
    if self._writer is not None:
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
    self._record_new_steps()
    self._save()
    if self._writer is not None:
      self._writer.close()
      self._writer = None
