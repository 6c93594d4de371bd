"""PublicBatchNormalization: batch norm with statistics from public data only.

Standard BatchNormalization normalises every example with the mean and
variance of the whole training batch, so each example's output, and hence its
gradient, depends on every other example in the batch: per-example clipping
then no longer bounds one example's influence and DP-SGD is not private.
Following Davody et al. (2020), `PublicBatchNormalization` takes its
statistics from a small public batch instead:

* the public pass (`update_public_statistics`, run by `tfdp.make_private` at
  the start of every training step, outside the loss and the gradient) feeds
  the public batch through the model in training mode; each layer computes
  the mean and variance of its own input over the batch and non-channel axes,
  stores them as `public_mean` / `public_variance` and updates its moving
  averages from them;
* the private pass (the ordinary training call) normalises every private
  example with those stored statistics, held constant.

So private examples never enter any statistic and each example's output
depends on that example and on constants only.
"""

import contextlib
import threading
from typing import Any, Iterator, List, Optional, Sequence, Union

import tensorflow as tf

# TF's own flag for "tf.saved_model.save is tracing functions".
try:
  # pylint: disable-next=g-direct-tensorflow-import
  from tensorflow.python.saved_model.save_context import in_save_context
except ImportError:  # pragma: no cover
  def in_save_context() -> bool:
    return False

_STATE = threading.local()


def in_public_pass() -> bool:
  """True inside `public_pass()` (in the current thread)."""
  return getattr(_STATE, "public_pass", False)


@contextlib.contextmanager
def public_pass() -> Iterator[None]:
  """Context in which PublicBatchNormalization layers take public statistics.

  While the block runs, a PublicBatchNormalization layer called in training
  mode computes its statistics from its own input (the public batch's
  activations), stores them and updates its moving averages. Most users
  need `update_public_statistics` rather than this. The flag is
  thread-local (MirroredStrategy runs each replica in its own thread) and
  is read when a call is traced, so it works inside `tf.function`.
  """
  previous = in_public_pass()
  _STATE.public_pass = True
  try:
    yield
  finally:
    _STATE.public_pass = previous


def _normalized_axes(axis: Union[int, Sequence[int]], rank: int,
                     name: str) -> List[int]:
  axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
  if not axes or any(isinstance(a, bool) or not isinstance(a, int)
                     for a in axes):
    raise ValueError(f"axis of layer '{name}' must be an int or a non-empty "
                     f"list of ints, got {axis!r}")
  positive = sorted({a % rank if -rank <= a < rank else a for a in axes})
  if len(positive) != len(axes) or any(not 0 < a < rank for a in positive):
    raise ValueError(
        f"axis of layer '{name}' must name distinct non-batch axes of its "
        f"rank-{rank} input (1..{rank - 1} or -{rank - 1}..-1), got {axis!r}")
  return positive


@tf.keras.utils.register_keras_serializable(package="tfdp")
class PublicBatchNormalization(tf.keras.layers.Layer):
  """Batch normalisation whose statistics come from a public batch only.

  y = gamma * x_hat + beta,  x_hat = (x - mu) / sqrt(sigma^2 + epsilon),

  where (mu, sigma^2) is, per channel (the `axis` entries):

  * in the public pass (inside `public_pass()`, as run by
    `update_public_statistics` and `tfdp.make_private(..., public_data=...)`)
    and in training mode: the mean and (biased) variance of the layer's own
    input over the batch and the non-channel axes. The input is then the
    public batch's activations; the statistics are stored in `public_mean` /
    `public_variance` and the moving averages are updated,
    m <- momentum * m + (1 - momentum) * stat.
  * in a training call outside the public pass (the private forward pass):
    `public_mean` / `public_variance` of the latest public pass, wrapped in
    `tf.stop_gradient`. Gradients do not flow through the public
    statistics: each private example's output, and so its gradient with
    respect to every weight, depends on that one example and on constants,
    which is exactly what per-example clipping needs to bound one example's
    influence (and what lets the fast clipping engine use its per-example
    normalisation rule). The public statistics are a function of the public
    data and the current weights only, never of the private set, so using
    them costs no privacy. (The true gradient of BatchNorm would also
    differentiate through the statistics, i.e. through the public batch;
    it is dropped, as in Davody et al.)
  * at inference (`training` False or None): the moving averages.

  A training call before any public pass raises a `ValueError`: pass
  `public_data=` to `tfdp.make_private` (or call `update_public_statistics`
  yourself before the step). As with Keras' BatchNormalization, a layer
  with `trainable = False` always runs in inference mode.

  Attributes have the names of Keras' normalisation layers (`axis`, `center`,
  `scale`, `gamma`, `beta`, `epsilon`), which the clipping rule relies on.

  Args:
    axis: the channel axis or axes (not the batch axis), as for
      `tf.keras.layers.BatchNormalization`.
    momentum: momentum of the moving averages, in [0, 1].
    epsilon: small float > 0 added to the variance.
    center: whether to add the trainable offset beta.
    scale: whether to multiply by the trainable scale gamma.
    beta_initializer: initializer of beta.
    gamma_initializer: initializer of gamma.
    moving_mean_initializer: initializer of the moving mean (and of
      `public_mean`).
    moving_variance_initializer: initializer of the moving variance (and of
      `public_variance`).
    beta_regularizer: optional regularizer of beta.
    gamma_regularizer: optional regularizer of gamma.
    beta_constraint: optional constraint on beta.
    gamma_constraint: optional constraint on gamma.
    **kwargs: base layer arguments (name, dtype, trainable...).
  """

  def __init__(self,
               axis: Union[int, Sequence[int]] = -1,
               momentum: float = 0.99,
               epsilon: float = 1e-3,
               center: bool = True,
               scale: bool = True,
               beta_initializer: Any = "zeros",
               gamma_initializer: Any = "ones",
               moving_mean_initializer: Any = "zeros",
               moving_variance_initializer: Any = "ones",
               beta_regularizer: Any = None,
               gamma_regularizer: Any = None,
               beta_constraint: Any = None,
               gamma_constraint: Any = None,
               **kwargs):
    super().__init__(**kwargs)
    if isinstance(axis, (list, tuple)):
      self.axis = list(axis)
    elif isinstance(axis, int) and not isinstance(axis, bool):
      self.axis = axis
    else:
      raise ValueError(
          f"axis must be an int or a list of ints, got {axis!r}")
    if (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
        or not 0 <= momentum <= 1):
      raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
        or not epsilon > 0):
      raise ValueError(f"epsilon must be a number > 0, got {epsilon!r}")
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    self.center = bool(center)
    self.scale = bool(scale)
    self.beta_initializer = tf.keras.initializers.get(beta_initializer)
    self.gamma_initializer = tf.keras.initializers.get(gamma_initializer)
    self.moving_mean_initializer = tf.keras.initializers.get(
        moving_mean_initializer)
    self.moving_variance_initializer = tf.keras.initializers.get(
        moving_variance_initializer)
    self.beta_regularizer = tf.keras.regularizers.get(beta_regularizer)
    self.gamma_regularizer = tf.keras.regularizers.get(gamma_regularizer)
    self.beta_constraint = tf.keras.constraints.get(beta_constraint)
    self.gamma_constraint = tf.keras.constraints.get(gamma_constraint)
    self.supports_masking = True
    self.gamma = None
    self.beta = None
    # Set (at trace time too) by the first public pass; a training call
    # before it has no statistics to use.
    self._has_public_statistics = False

  @property
  def has_public_statistics(self) -> bool:
    """Whether a public pass has set this layer's statistics."""
    return self._has_public_statistics

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank is None:
      raise ValueError(
          f"Layer '{self.name}' needs an input of known rank, got shape "
          f"{input_shape}")
    rank = input_shape.rank
    self.axis = _normalized_axes(self.axis, rank, self.name)
    for a in self.axis:
      if input_shape[a] is None:
        raise ValueError(
            f"Axis {a} of the input of layer '{self.name}' must have a known "
            f"size, got input shape {input_shape}")
    param_shape = [input_shape[a] for a in self.axis]
    self.input_spec = tf.keras.layers.InputSpec(
        ndim=rank, axes={a: input_shape[a] for a in self.axis})
    if self.scale:
      self.gamma = self.add_weight(
          name="gamma", shape=param_shape, initializer=self.gamma_initializer,
          regularizer=self.gamma_regularizer,
          constraint=self.gamma_constraint, trainable=True)
    if self.center:
      self.beta = self.add_weight(
          name="beta", shape=param_shape, initializer=self.beta_initializer,
          regularizer=self.beta_regularizer, constraint=self.beta_constraint,
          trainable=True)

    def statistic(name, initializer):
      # Like Keras' BatchNormalization: each replica assigns its own copy
      # (all replicas see the same public batch); reads average them.
      return self.add_weight(
          name=name, shape=param_shape, initializer=initializer,
          trainable=False,
          synchronization=tf.VariableSynchronization.ON_READ,
          aggregation=tf.VariableAggregation.MEAN,
          experimental_autocast=False)

    self.moving_mean = statistic("moving_mean", self.moving_mean_initializer)
    self.moving_variance = statistic("moving_variance",
                                     self.moving_variance_initializer)
    self.public_mean = statistic("public_mean", self.moving_mean_initializer)
    self.public_variance = statistic("public_variance",
                                     self.moving_variance_initializer)
    super().build(input_shape)

  def _broadcast(self, tensor: tf.Tensor, rank: int,
                 dtype: tf.DType) -> tf.Tensor:
    """A [channels] parameter reshaped to broadcast against the input."""
    tensor = tf.cast(tensor, dtype)
    if self.axis == [rank - 1]:
      return tensor
    shape = [1] * rank
    for a, size in zip(self.axis, tensor.shape):
      shape[a] = size
    return tf.reshape(tensor, shape)

  def _normalize(self, x: tf.Tensor, mean: tf.Tensor,
                 variance: tf.Tensor) -> tf.Tensor:
    """gamma * (x - mean) / sqrt(variance + epsilon) + beta.

    With `scale` and `center` off (as the clipping rule sets them) this is
    the plain x_hat.
    """
    rank = x.shape.rank
    outputs = (x - self._broadcast(mean, rank, x.dtype)) * tf.math.rsqrt(
        self._broadcast(variance, rank, x.dtype) + self.epsilon)
    if self.scale:
      outputs = outputs * self._broadcast(self.gamma, rank, x.dtype)
    if self.center:
      outputs = outputs + self._broadcast(self.beta, rank, x.dtype)
    return outputs

  def _public_call(self, x: tf.Tensor) -> tf.Tensor:
    """Statistics from this (public) input: store, update averages, use."""
    rank = x.shape.rank
    reduction_axes = [a for a in range(rank) if a not in self.axis]
    mean, variance = tf.nn.moments(tf.stop_gradient(x), reduction_axes)
    dtype = self.moving_mean.dtype
    mean, variance = tf.cast(mean, dtype), tf.cast(variance, dtype)
    decay = 1.0 - self.momentum
    self.public_mean.assign(mean)
    self.public_variance.assign(variance)
    self.moving_mean.assign_sub((self.moving_mean - mean) * decay)
    self.moving_variance.assign_sub((self.moving_variance - variance) * decay)
    self._has_public_statistics = True
    return self._normalize(x, mean, variance)

  def _private_call(self, x: tf.Tensor) -> tf.Tensor:
    """Normalises with the stored public statistics, held constant."""
    # SavedModel export traces the training-mode call of a model that may
    # never have trained: that trace is not a training step.
    if not self._has_public_statistics and not in_save_context():
      raise ValueError(
          f"PublicBatchNormalization layer '{self.name}' was called in "
          "training mode before it received statistics from public data. "
          "Pass public_data= (a batch of public inputs) to tfdp.make_private, "
          "or run tfdp.layers.update_public_statistics(model, public_data) "
          "before the training step.")
    return self._normalize(x, tf.stop_gradient(self.public_mean.value()),
                           tf.stop_gradient(self.public_variance.value()))

  def _inference_call(self, x: tf.Tensor) -> tf.Tensor:
    return self._normalize(x, self.moving_mean.value(),
                           self.moving_variance.value())

  def call(self, inputs, training=None):
    x = inputs
    if x.dtype in (tf.float16, tf.bfloat16):
      x = tf.cast(x, tf.float32)
    if training is None or not self.trainable:
      training = False
    static = tf.get_static_value(training) if tf.is_tensor(training) else (
        training)
    if static is None:
      outputs = tf.cond(tf.cast(training, tf.bool),
                        lambda: self._private_call(x),
                        lambda: self._inference_call(x))
    elif not static:
      outputs = self._inference_call(x)
    elif in_public_pass():
      outputs = self._public_call(x)
    else:
      outputs = self._private_call(x)
    return tf.cast(outputs, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "axis": self.axis,
        "momentum": self.momentum,
        "epsilon": self.epsilon,
        "center": self.center,
        "scale": self.scale,
        "beta_initializer": tf.keras.initializers.serialize(
            self.beta_initializer),
        "gamma_initializer": tf.keras.initializers.serialize(
            self.gamma_initializer),
        "moving_mean_initializer": tf.keras.initializers.serialize(
            self.moving_mean_initializer),
        "moving_variance_initializer": tf.keras.initializers.serialize(
            self.moving_variance_initializer),
        "beta_regularizer": tf.keras.regularizers.serialize(
            self.beta_regularizer),
        "gamma_regularizer": tf.keras.regularizers.serialize(
            self.gamma_regularizer),
        "beta_constraint": tf.keras.constraints.serialize(
            self.beta_constraint),
        "gamma_constraint": tf.keras.constraints.serialize(
            self.gamma_constraint),
    })
    return config


def public_batch_norm_layers(
    model: tf.keras.layers.Layer) -> List[PublicBatchNormalization]:
  """The model's PublicBatchNormalization layers, nested ones included."""
  layers = [model] + list(model.submodules)
  return [l for l in layers if isinstance(l, PublicBatchNormalization)]


def _names(layers) -> str:
  return ", ".join(f"'{l.name}'" for l in layers)


def _as_public_tensors(public_data: Any) -> Any:
  """Tensors of the public batch: floating arrays become floatx."""

  def convert(value):
    tensor = tf.convert_to_tensor(value)
    if tensor.dtype.is_floating:
      tensor = tf.cast(tensor, tf.keras.backend.floatx())
    return tensor

  return tf.nest.map_structure(convert, public_data)


def _check_count(public_data: Any) -> None:
  flat = tf.nest.flatten(public_data)
  if not flat:
    raise ValueError("public_data must hold at least 2 examples, got an "
                     "empty structure")
  counts = set()
  for tensor in flat:
    if tensor.shape.rank is None or tensor.shape.rank == 0:
      raise ValueError(
          "public_data must be a batch (leading axis: examples) of at least "
          f"2 examples, got a tensor of shape {tensor.shape}")
    counts.add(tensor.shape[0])
  if len(counts) > 1:
    raise ValueError("public_data's tensors must have the same number of "
                     f"examples, got {sorted(counts, key=str)}")
  count = counts.pop()
  if count is not None and count < 2:
    raise ValueError(
        "public_data must hold at least 2 examples (the variance of a single "
        f"example is zero, so it would normalise by 1/sqrt(epsilon)), got "
        f"{count}")


def check_public_data(model: tf.keras.Model,
                      public_data: Optional[Any]) -> Optional[Any]:
  """Validates `make_private`'s `public_data` against the model.

  Args:
    model: the model to be trained.
    public_data: None, or a batch of public inputs (array, tensor, or a
      structure of them matching the model's inputs).

  Returns:
    None, or the public batch as tensors (floating arrays as float32).

  Raises:
    ValueError: public data missing while the model has trainable
      PublicBatchNormalization layers, given while it has none, or with
      fewer than 2 examples.
  """
  layers = public_batch_norm_layers(model)
  needing = [l for l in layers if l.trainable]
  if public_data is None:
    if needing:
      raise ValueError(
          f"The model has PublicBatchNormalization layers ({_names(needing)}) "
          "whose statistics come from public data: pass public_data= (a "
          "batch of at least 2 public inputs) to tfdp.make_private.")
    return None
  if not needing:
    raise ValueError(
        "public_data is used only by (trainable) "
        "tfdp.layers.PublicBatchNormalization layers, and the model has none"
        + (f" (frozen: {_names(layers)})" if layers else "") +
        ": drop public_data, or convert the model's BatchNormalization "
        "layers with tfdp.layers.convert_batch_norm(model, "
        "to='public_batch').")
  public_data = _as_public_tensors(public_data)
  _check_count(public_data)
  return public_data


def update_public_statistics(model: tf.keras.Model, public_data: Any) -> None:
  """Sets every PublicBatchNormalization layer's statistics from public data.

  Runs `model(public_data, training=True)` inside `public_pass()`, with the
  inputs behind `tf.stop_gradient` and the outputs discarded: each layer
  stores the mean and variance of its own input (the public activations,
  which depend on the current weights) and updates its moving averages.
  `tfdp.make_private(model, public_data=...)` calls this at the start of
  every training step; the variable updates happen in program order, so it
  works inside `tf.function`.

  Args:
    model: a model with PublicBatchNormalization layers.
    public_data: a batch of at least 2 public inputs.
  """
  public_data = _as_public_tensors(public_data)
  _check_count(public_data)
  public_data = tf.nest.map_structure(tf.stop_gradient, public_data)
  with tf.name_scope("public_statistics"), public_pass():
    model(public_data, training=True)
