"""`make_private`: fast DP-SGD for any Keras model in `model.fit`.

`make_private(model)` replaces the model's `train_step` with one that
computes per-example clipped gradients with the fast engine
(`tfdp.clipping.fast`), adds noise once through the model's DP optimizer, and
applies them. The DP parameters (clip norm, noise, expected batch size) live
in the optimizer, as for the plain path; `make_private` only chooses the
engine and the physical batch size.
"""

import inspect
import types
from typing import Any, Callable, List, Optional

import tensorflow as tf

from tfdp import _validation
from tfdp import clipping
from tfdp import optimizers
from tfdp import public_gradients
from tfdp.clipping import engine
from tfdp.clipping import fast
from tfdp.layers import public_batch_norm


def make_private(model: tf.keras.Model,
                 *,
                 physical_batch_size: Optional[int] = None,
                 public_data: Optional[Any] = None,
                 adversarial: Optional[Any] = None,
                 augmentation: Optional[Any] = None,
                 augmult: int = 1,
                 augment: Optional[Callable[[Any], Any]] = None,
                 public_gradient: Optional[
                     public_gradients.PublicGradient] = None
                 ) -> tf.keras.Model:
  """Makes `model.fit` train with fast per-example clipping.

  Compile the returned model with a DP optimizer (e.g.
  `tfdp.optimizers.DPSGD`) and a loss with `reduction=NONE`. Each training
  step then computes S = sum_i min(1, C/||g_i||) g_i over the batch from one
  forward and one backward pass, releases (S + N(0, (sigma C)^2 I)) / B
  through the optimizer, and applies it.

  Args:
    model: a Keras model. Checked here: no trainable BatchNormalization, and
      no trainable variables outside layers. Layers without a clipping rule
      use the exact per-layer fall-back (with a warning).
    physical_batch_size: if set, each (logical) batch is processed in chunks
      of at most this many examples whose clipped sums are accumulated before
      the noise is added once: gradient accumulation, for logical batches
      larger than memory allows. The optimizer's `expected_batch_size` is the
      logical batch size.
    public_data: public inputs (a batch of at least 2 examples, as an array
      or tensor) for the model's `tfdp.layers.PublicBatchNormalization`
      layers. Required when the model has such layers, refused otherwise.
      Every training step first runs this batch through the model, outside
      the loss and the gradient, to set those layers' statistics; private
      examples never enter them.
    adversarial: optional adversarial training, e.g.
      `tfdp.robust.AdversarialTraining(...)`: each step replaces (part of)
      the batch by adversarial examples against the current model before
      clipping. Each adversarial example depends on its own private example
      and the current weights only, so per-example clipping still bounds
      every example's influence.
    augmentation: optional per-example input augmentation, e.g.
      `tfdp.robust.GaussianAugmentation(sigma=0.25)` (training on noisy
      inputs, for randomized smoothing): each step, after `adversarial`,
      replaces x by `augmentation.perturb(model, x, y)` before clipping.
      Each augmented example must depend on its own example and on noise
      independent of the data only; then per-example clipping still bounds
      every example's influence, whatever the augmentation noise.
    augmult: augmentation multiplicity K >= 1 (De et al. 2022). Each step
      makes K copies of every example, passes them through `augment`, and
      clips the mean of the K copies' gradients as the example's one
      gradient g_i = (1/K) sum_k grad l(augment(x_i)_k, y_i); the noise is
      added once, to the sum over examples. Each example still moves the
      clipped sum by at most C, so the accounting is plain DP-SGD's; the
      cost is about K times the forward and backward work. The engine's
      rules treat the copies as more positions of the example, so no
      per-example gradients are made where K = 1 makes none. Losses and
      metrics are those of the augmented copies.
    augment: the augmentation of the copies: a Keras or keras-cv
      preprocessing pipeline (called with `training=True`) or a function of
      the batch, e.g. `tfdp.data.augment.crop_and_flip()`. It must transform
      each row on its own, with randomness independent of the data, and
      keep the number of rows (no MixUp or CutMix, which mix examples and
      break per-example clipping). Required when `augmult` > 1; with K = 1
      it is plain augmentation of each step's batch.
    public_gradient: optional public-gradient extender,
      `tfdp.public_gradients.DOPE(x_pub, y_pub)` (DOPE-SGD: private
      gradients clipped around the public batch's mean gradient p, p added
      back after the noise) or `tfdp.public_gradients.Mirror(x_pub, y_pub,
      private_weight=beta)` (beta x noisy private + (1 - beta) p). Each step
      draws its own public batch; p is neither clipped nor noised, and the
      accounting is unchanged (see `tfdp.public_gradients`).

  Returns:
    The same model object, with its `train_step` replaced, and its `fit`,
    which first lets each `tfdp.callbacks.PrivacyCallback` check that the
    training data comes from the sampler its accountant assumes.

  Raises:
    UnsupportedLayerError: if the model cannot be trained privately as is.

  Example:
    >>> model = tfdp.make_private(tf.keras.Sequential([
    ...     tf.keras.layers.Conv2D(8, 3, activation="tanh",
    ...                            input_shape=(8, 8, 1)),
    ...     tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)]))
    >>> model.compile(
    ...     optimizer=tfdp.optimizers.DPSGD(
    ...         learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.1,
    ...         expected_batch_size=64),
    ...     loss=tf.keras.losses.SparseCategoricalCrossentropy(
    ...         from_logits=True, reduction="none"))
  """
  if not isinstance(model, tf.keras.Model):
    raise ValueError(f"model must be a tf.keras.Model, got {model!r}")
  if physical_batch_size is not None:
    _validation.check_positive_int("physical_batch_size", physical_batch_size)
  fast.tapped_layers(model)
  _check_no_activity_regularizers(model)
  public_data = public_batch_norm.check_public_data(model, public_data)
  if adversarial is not None and not callable(
      getattr(adversarial, "perturb", None)):
    raise ValueError(
        "adversarial must have a perturb(model, x, y) method, e.g. "
        f"tfdp.robust.AdversarialTraining(...); got {adversarial!r}")
  if augmentation is not None and not callable(
      getattr(augmentation, "perturb", None)):
    raise ValueError(
        "augmentation must have a perturb(model, x, y) method, e.g. "
        f"tfdp.robust.GaussianAugmentation(...); got {augmentation!r}")
  augmult = _validation.check_positive_int("augmult", augmult)
  if augment is not None and not callable(augment):
    raise ValueError("augment must be a Keras preprocessing layer or a "
                     f"function of a batch of inputs; got {augment!r}")
  if augmult > 1 and augment is None:
    raise ValueError(
        f"augmult={augmult} needs augment=...: without an augmentation the "
        "copies of an example are identical and their mean gradient is the "
        "example's own, at augmult times the cost. Pass e.g. "
        "augment=tfdp.data.augment.crop_and_flip(), or leave augmult at 1.")
  if public_gradient is not None and not isinstance(
      public_gradient, public_gradients.PublicGradient):
    raise ValueError(
        "public_gradient must be a tfdp.public_gradients.DOPE or Mirror "
        f"(public examples and how to use their gradient); got "
        f"{public_gradient!r}")
  object.__setattr__(model, "_tfdp_options", _Options(
      physical_batch_size, public_data, adversarial, augmentation, augmult,
      augment, public_gradient))
  model.train_step = types.MethodType(_private_train_step, model)
  model.fit = types.MethodType(_private_fit, model)
  return model


class _Options:
  """make_private's arguments, kept on the model.

  A plain object on purpose: tf.Module would search a dict, list or tuple
  attribute for sub-modules, making e.g. a Keras augmentation pipeline part
  of the model (its layers tapped, its weights saved).
  """

  def __init__(self, physical_batch_size, public_data, adversarial,
               augmentation, augmult, augment, public_gradient):
    self.physical_batch_size = physical_batch_size
    self.public_data = public_data
    self.adversarial = adversarial
    self.augmentation = augmentation
    self.augmult = augmult
    self.augment = augment
    self.public_gradient = public_gradient


_FIT_SIGNATURE = inspect.signature(tf.keras.Model.fit)


def _private_fit(self, *args, **kwargs):
  """Keras fit, after each callback's check of the training data.

  Also lets a fit follow one with `tf.keras.callbacks.BackupAndRestore`.

  `tfdp.callbacks.PrivacyCallback.check_training_data` refuses data whose
  batches the accountant does not describe (arrays, shuffle().batch(), or
  another sampler than the accountant's).
  """
  arguments = _FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
  for callback in arguments.get("callbacks") or ():
    check = getattr(callback, "check_training_data", None)
    if check is not None:
      check(arguments.get("x"), arguments.get("batch_size"))
  if not hasattr(self, "_training_state"):
    # Keras 2.15's BackupAndRestore deletes this at the end of a fit, and the
    # next fit without it then fails reading it.
    self._training_state = None  # pylint: disable=protected-access
  return type(self).fit(self, *args, **kwargs)


def is_private(model: tf.keras.Model) -> bool:
  """True if `make_private` was applied to this model."""
  return hasattr(model, "_tfdp_options")


def _check_no_activity_regularizers(model: tf.keras.Model) -> None:
  for layer in model.submodules:
    if getattr(layer, "activity_regularizer", None) is not None:
      raise ValueError(
          f"Layer '{layer.name}' has an activity_regularizer: its penalty "
          "depends on the batch's data and would be added outside per-example "
          "clipping, which is not private. Remove it or add the penalty to "
          "the per-example loss.")


def _repeat_rows(tensors, copies: int):
  """Each row of every tensor in the nest repeated `copies` times in place."""
  if tensors is None or copies == 1:
    return tensors
  return tf.nest.map_structure(lambda t: tf.repeat(t, copies, axis=0),
                               tensors)


def _augmented_copies(options: "_Options", x):
  """`augmult` augmented copies of each example, example i's at rows i K.."""
  copies, augment = options.augmult, options.augment
  x = _repeat_rows(x, copies)
  if augment is None:
    return x
  augmented = (augment(x, training=True)
               if isinstance(augment, tf.keras.layers.Layer) else augment(x))
  before, after = tf.nest.flatten(x)[0], tf.nest.flatten(augmented)[0]
  message = ("tfdp: augment must return one augmented row per input row "
             "(it must not drop, add or mix examples)")
  if before.shape[0] is not None and after.shape[0] is not None:
    if before.shape[0] != after.shape[0]:
      raise ValueError(f"{message}; got {after.shape[0]} rows for "
                       f"{before.shape[0]}")
    return augmented
  with tf.control_dependencies([tf.debugging.assert_equal(
      tf.shape(after)[0], tf.shape(before)[0], message=message)]):
    return tf.nest.map_structure(tf.identity, augmented)


def _clipped_sum(model, x, y, sample_weight, l2_norm_clip, center=None,
                 empty_batch_guard=True):
  """The engine on one chunk; the compiled loss updates the loss metric.

  With augmentation multiplicity the chunk's examples are expanded to their
  augmented copies here, chunk by chunk, so `physical_batch_size` bounds the
  examples (not the copies) in memory at once. `empty_batch_guard`: as for
  `fast.clipped_gradients` (False only for chunks known to hold examples).
  """
  options = model._tfdp_options  # pylint: disable=protected-access
  copies = options.augmult
  x = _augmented_copies(options, x)
  y, sample_weight = _repeat_rows(y, copies), _repeat_rows(sample_weight,
                                                           copies)

  def loss_fn(y_true, y_pred):
    return model.compiled_loss(y_true, y_pred, sample_weight)

  return fast.clipped_gradients(model, x, y, loss_fn, l2_norm_clip,
                                return_predictions=True,
                                copies_per_example=copies, center=center,
                                empty_batch_guard=empty_batch_guard)


def _accumulated_clipped_sum(model, x, y, sample_weight, l2_norm_clip,
                             physical_batch_size, center=None):
  """Clipped sum, predictions and norms of a logical batch, in chunks.

  One chunk at a time, in a `tf.while_loop` with parallel_iterations=1:
  the sums need no more memory than one chunk's, and TF 2.15.1's oneDNN
  FusedBatchNorm kernel (which Keras' LayerNormalization runs on) keeps
  buffers as members, so a full chunk and the ragged last one in flight
  together corrupt the heap (fixed upstream after 2.15). A Python loop over
  the chunks of a static batch, each waiting for the previous sums, was
  measured 3-14% faster but held 0.5-0.8 GiB more resident memory on
  ResNet-18 and the ViT, more than one unchunked step (docs/performance.md):
  chunks are for memory, so the loop stays.

  A batch of static size B is split by a reshape into its floor(B / P) full
  chunks, so the loop's body sees chunks of static size P, as a step on a
  batch of P would, and the remainder (if any) runs once after the loop.
  A body traced for an unknown chunk size keeps the shape arithmetic that
  static shapes fold away: measured on the ViT (B = 128, P = 32), 0.96 GiB
  peak RSS against 0.83 GiB with static chunks (0.79 for one step on 32).
  A batch of unknown size (Poisson sampling) runs its ceil(B / P) chunks,
  each holding at least one example, as slices.

  Returns:
    (the clipped sums, one per trainable variable; the predictions; the
    per-example norms).
  """
  size = physical_batch_size
  tensors = (x, y, sample_weight)

  def add_chunk(chunk, sums=None, empty_batch_guard=False):
    chunk_x, chunk_y, chunk_weight = chunk
    result, predictions = _clipped_sum(model, chunk_x, chunk_y, chunk_weight,
                                       l2_norm_clip, center,
                                       empty_batch_guard=empty_batch_guard)
    gradients = result.gradient_sum
    if sums is not None:
      gradients = [s + g for s, g in zip(sums, gradients)]
    return gradients, predictions, result.norms

  static = tf.nest.flatten(x)[0].shape[0]
  if static is None:
    batch = tf.shape(tf.nest.flatten(x)[0])[0]
    return _looped_chunks(
        model, add_chunk, (batch + size - 1) // size,
        lambda index: _map_rows(lambda t: t[index * size:(index + 1) * size],
                                tensors))
  full, rest = divmod(static, size)
  if not full:  # One chunk (B < P), or no example (the engine's guard).
    return add_chunk(tensors, empty_batch_guard=True)
  stacked = _map_rows(lambda t: tf.reshape(t, [full, size] + _dims(t)[1:]),
                      _map_rows(lambda t: t[:full * size], tensors))
  sums, predictions, norms = _looped_chunks(
      model, add_chunk, full,
      lambda index: _map_rows(lambda t: t[index], stacked))
  if not rest:
    return sums, predictions, norms
  # After the loop, so that one chunk at a time is in memory.
  with tf.control_dependencies(sums):
    last = _map_rows(lambda t: tf.identity(t[full * size:]), tensors)
  sums, last_predictions, last_norms = add_chunk(last, sums)
  return (sums, tf.concat([predictions, last_predictions], 0),
          tf.concat([norms, last_norms], 0))


def _map_rows(function, tensors):
  """`function` on every tensor of the nest `tensors`, None left as None."""
  return tf.nest.map_structure(
      lambda t: None if t is None else function(t), tensors)


def _dims(tensor: tf.Tensor) -> List[Any]:
  """The tensor's dimensions: static where known, else dynamic."""
  dynamic = tf.shape(tensor)
  return [d if d is not None else dynamic[i]
          for i, d in enumerate(tensor.shape.as_list())]


def _looped_chunks(model, add_chunk, chunks, take):
  """add_chunk(take(i), sums) for i < `chunks`, in a tf.while_loop.

  The sums start as scalar zeros, broadcast by the first chunk's addition:
  zeros of the variables' shapes would be folded by Grappler into constants
  held by the graph for its whole life, as much memory as the model's
  gradients (measured on ResNet-18: 27 MiB more held between steps).

  `chunks` may be 0 (an empty batch of unknown size): the sums are then
  zeros, and the predictions and norms empty, with the trailing shape the
  loop's body traced.
  """
  variables = model.trainable_variables
  sums = [tf.zeros([], v.dtype) for v in variables]
  traced = {}

  def body(index, sums, predictions, norms):
    sums, chunk_predictions, chunk_norms = add_chunk(take(index), sums)
    traced["shape"] = chunk_predictions.shape
    return (index + 1, sums, predictions.write(index, chunk_predictions),
            norms.write(index, chunk_norms))

  output = model.outputs[0] if model.outputs else None
  dtype = output.dtype if output is not None else tf.float32
  predictions = tf.TensorArray(dtype, size=chunks, infer_shape=False)
  norms = tf.TensorArray(tf.float32, size=chunks, infer_shape=False)
  index = tf.constant(0)
  _, sums, predictions, norms = tf.while_loop(
      lambda index, *_: index < chunks, body,
      (index, sums, predictions, norms),
      shape_invariants=(index.shape, [tf.TensorShape(None)] * len(sums),
                        tf.TensorShape(None), tf.TensorShape(None)),
      parallel_iterations=1)
  # A no-op where a chunk ran (the shapes agree); zeros where none did.
  sums = [tf.ensure_shape(tf.broadcast_to(s, tf.shape(v)), v.shape)
          for s, v in zip(sums, variables)]
  # The loop loses the static shape, which Keras' metrics need.
  shape = tf.TensorShape([None]).concatenate(traced["shape"][1:])
  if isinstance(chunks, int) or not shape[1:].is_fully_defined():
    return sums, tf.ensure_shape(predictions.concat(), shape), norms.concat()
  # An empty TensorArray cannot be concatenated without its element shape.
  predictions, norms = tf.cond(
      chunks > 0, lambda: (predictions.concat(), norms.concat()),
      lambda: (tf.zeros([0] + shape[1:].as_list(), dtype), tf.zeros([0])))
  return sums, tf.ensure_shape(predictions, shape), norms


def _per_example_loss(model: tf.keras.Model):
  """The compiled loss as (y_true, y_pred) -> [B], without metric updates."""
  if tf.nest.is_nested(model.loss):
    raise ValueError("public_gradient supports models compiled with one "
                     f"loss, got {model.loss!r}")
  loss = tf.keras.losses.get(model.loss)
  return lambda y_true, y_pred: engine.as_per_example_losses(
      loss(y_true, y_pred))


def _expects_integer_labels(loss) -> bool:
  """True if `loss` (compile's argument) casts labels to class indices."""
  for item in tf.nest.flatten(loss):
    if isinstance(item, tf.keras.losses.SparseCategoricalCrossentropy):
      return True
    name = item if isinstance(item, str) else getattr(item, "__name__", "")
    if name == "sparse_categorical_crossentropy":
      return True
  return False


def _check_integer_labels(y):
  """`y`, once float labels are checked to be whole numbers.

  A sparse categorical loss casts labels to integers, so a label 2.7 would
  silently train as class 2 (and NaN as some class).
  """
  if not isinstance(y, tf.Tensor) or not y.dtype.is_floating:
    return y
  whole = tf.reduce_all(tf.equal(y, tf.round(y)))
  check = tf.debugging.Assert(whole, [
      "tfdp: y holds labels that are not whole numbers (or NaN/Inf), which "
      "the sparse categorical loss would truncate to class indices; "
      "offending labels, first ones:",
      tf.boolean_mask(tf.reshape(y, [-1]), tf.reshape(
          tf.not_equal(y, tf.round(y)), [-1]))], summarize=5)
  with tf.control_dependencies([check]):
    return tf.identity(y)


def _private_train_step(self, data):
  """Keras train_step: fast clipping, noise once, apply, update metrics."""
  x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
  optimizer = self.optimizer
  if not optimizers.is_dp_optimizer(optimizer):
    raise ValueError(
        "A model passed to tfdp.make_private must be compiled with a DP "
        f"optimizer (got {type(optimizer).__name__}): training it would not "
        "be private. Use e.g. tfdp.optimizers.DPSGD(..., l2_norm_clip=..., "
        "noise_multiplier=..., expected_batch_size=...), or "
        "tfdp.optimizers.make_dp_optimizer(your_optimizer, ...).")
  options = self._tfdp_options  # pylint: disable=protected-access
  physical = options.physical_batch_size
  if options.public_data is not None:
    public_batch_norm.update_public_statistics(self, options.public_data)
  if _expects_integer_labels(self.loss):
    y = _check_integer_labels(y)
  if options.adversarial is not None:
    x = options.adversarial.perturb(self, x, y)
  if options.augmentation is not None:
    x = options.augmentation.perturb(self, x, y)
  public = options.public_gradient
  public_mean = (None if public is None else
                 public.gradient(self, _per_example_loss(self)))
  # DOPE-SGD clips g_i - p; Mirror-GD clips g_i and mixes p in later.
  center = public_mean if public and public.centers_clipping else None
  if physical is None:
    result, predictions = _clipped_sum(self, x, y, sample_weight,
                                       optimizer.l2_norm_clip, center)
    clipped_sum, norms = result.gradient_sum, result.norms
  else:
    clipped_sum, predictions, norms = _accumulated_clipped_sum(
        self, x, y, sample_weight, optimizer.l2_norm_clip, physical, center)
  clipped_sum = clipping.check_finite_norms(norms, optimizer.iterations,
                                            clipped_sum)
  # Noise once per step, on the sum over examples (not over copies).
  gradients = optimizer.noisy_average(clipped_sum)
  if public is not None:
    gradients = public.combine(gradients, public_mean)
  if self.losses:
    # Weight regularisers do not depend on the data: their gradient is added
    # after the noise, unclipped, at no privacy cost.
    with tf.GradientTape() as tape:
      penalty = tf.add_n(self.losses)
    regularization = tape.gradient(
        penalty, self.trainable_variables,
        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    gradients = [g + r for g, r in zip(gradients, regularization)]
  # The update, step count included, waits for the gradients and so for
  # their checks: a refused step changes nothing and is not counted.
  with tf.control_dependencies(gradients):
    optimizer.apply_gradients(zip(gradients, self.trainable_variables))
  # Predictions are per augmented copy (example-major), as are the labels
  # they are scored against.
  return self.compute_metrics(x, _repeat_rows(y, options.augmult),
                              predictions,
                              _repeat_rows(sample_weight, options.augmult))
