"""Clipping rule for Conv1D, Conv2D and Conv3D layers.

Also home of what the depthwise rule shares: the refusal of channels_first
(`check_channels_last`).
"""

import concurrent.futures
import itertools
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import tensorflow as tf

from tfdp.clipping import registry
from tfdp.clipping.layers import _common
from tfdp.clipping.layers import fallback

# Conv1D/2D/3D all inherit these from Keras' base `Conv`: a subclass that
# overrides either (Conv*Transpose, SeparableConv*, a weight-standardised
# convolution...) computes something this rule does not describe.
_CONV_METHODS = ("call", "convolution_op")
# Bytes of input and output gradient per sub-batch of the explicit path
# (`_sub_batch_size`): within the caches of current server CPUs.
SUB_BATCH_BYTES = 2 * 2**20
# A batch of unknown size is taken to be this large.
_BATCH_SIZE_HINT = 128
# Bytes of input and output gradient per grouped convolution of the folded
# explicit path (`_folded_sub_batch_size`), and the most examples in one.
FOLDED_SUB_BATCH_BYTES = 4 * 2**20
MAX_FOLDED_EXAMPLES = 32
# `_folding_works`' verdicts, per layer configuration and shapes.
_FOLDING_CHECKS: Dict[tuple, bool] = {}


def check_channels_last(layer: tf.keras.layers.Layer) -> None:
  """Refuses `data_format="channels_first"` (the rules index channels last).

  Raises:
    fallback.UnsupportedLayerError: for a channels_first layer.
  """
  if layer.data_format != "channels_last":
    raise fallback.UnsupportedLayerError(
        f"Layer '{layer.name}' ({type(layer).__name__}) uses "
        f"data_format='{layer.data_format}'. The per-example clipping rule "
        "for convolutions reads the channels from the last axis; build the "
        "layer with data_format='channels_last' (TensorFlow's CPU "
        "convolutions require it as well).")


def _size(tensor: tf.Tensor, axis: int):
  """The static length of an axis if known, else the dynamic one."""
  static = tensor.shape[axis]
  return int(static) if static is not None else tf.shape(tensor)[axis]


def _non_negative(value):
  return max(value, 0) if isinstance(value, int) else tf.maximum(value, 0)


def kernel_offset_views(layer: tf.keras.layers.Layer, inputs: tf.Tensor,
                        output_gradient: tf.Tensor,
                        strides: Optional[Sequence[int]] = None
                        ) -> Iterator[tf.Tensor]:
  """The input seen by each kernel offset at each output position.

  For a convolution of rank r with kernel size k, strides s, dilation d and
  padded input x_pad, kernel offset j = (j_1..j_r) multiplies, at output
  position t = (t_1..t_r), the input x_pad[t s + j d] (per axis). Hence the
  view of offset j is the strided slice x_pad[j d : j d + (n-1) s + 1 : s]
  over the n output positions of each axis. Padding is TensorFlow's:

    valid:  none;
    same:   total = max((n-1) s + (k-1) d + 1 - m, 0) for m input positions,
            total // 2 before and the rest after;
    causal: (k-1) d before (Conv1D).

  Strides without strided slices (space to depth): each padded axis, cut or
  padded further at its end to a length L = s (q_max + n) with
  q_max = floor((k-1) d / s), is reshaped to [L/s, s], where position
  j d + t s is (q + t, r) for (q, r) = divmod(j d, s). Offset j's view is
  then the unit-stride slice [q : q + n] at index r. (TensorFlow's CPU
  strided slice with steps > 1 was measured 6x slower than this for a 3x3
  stride-2 kernel, batch 128, 32x32x64 input.) The extra rows are never read.

  No im2col (`tf.image.extract_patches` is slow on CPU): k^r slices.
  Leading batch axes beyond the first, if any, count as positions.

  Args:
    layer: a Conv or DepthwiseConv layer (reads kernel_size, strides,
      dilation_rate, padding, rank), channels last.
    inputs: the layer's input, [B, ..., m_1..m_r, C].
    output_gradient: dL/dz, [B, ..., n_1..n_r, C_out] (for the n's).
    strides: the strides to use instead of the layer's.

  Yields:
    k_1 ... k_r tensors [B, T, C] (T = prod n), offsets in row-major order,
    the order of the kernel's leading axes. Each slice op is created when
    its view is requested, so a consumer can chain them (`chained`) and keep
    one view in memory at a time instead of all k^r.
  """
  rank = layer.rank
  first_spatial = inputs.shape.rank - 1 - rank
  spatial = range(first_spatial, inputs.shape.rank - 1)
  paddings = [[0, 0]] * inputs.shape.rank
  crop = [slice(None)] * inputs.shape.rank
  folded_shape = [tf.shape(inputs)[a] for a in range(first_spatial)]
  strides = layer.strides if strides is None else strides
  out_sizes, lengths = [], []
  for axis, k, s, d in zip(spatial, layer.kernel_size, strides,
                           layer.dilation_rate):
    in_size, out_size = _size(inputs, axis), _size(output_gradient, axis)
    needed = (out_size - 1) * s + 1 + (k - 1) * d  # Positions all offsets read.
    if layer.padding == "same":
      before = _non_negative(needed - in_size) // 2
    elif layer.padding == "causal":
      before = (k - 1) * d
    else:
      before = 0
    length = s * ((k - 1) * d // s + out_size)  # >= needed.
    paddings[axis] = [before, _non_negative(length - before - in_size)]
    crop[axis] = slice(0, length)  # Valid padding may leave unread rows.
    folded_shape += [length // s, s]
    out_sizes.append(out_size)
    lengths.append(length)
  padded = tf.pad(inputs, paddings)
  # Valid padding can leave input rows past `length` that no offset reads.
  if any(not isinstance(n, int) or padded.shape[axis] != n
         for axis, n in zip(spatial, lengths)):
    padded = padded[tuple(crop)]
  folded = tf.reshape(padded, folded_shape + [inputs.shape[-1]])
  # [B, T, C] with T static where it can be (the batch size may not be).
  shape = [tf.shape(inputs)[0], static_positions(output_gradient) or -1,
           inputs.shape[-1]]
  for offset in itertools.product(*[range(k) for k in layer.kernel_size]):
    index = [slice(None)] * first_spatial
    for j, d, s, n in zip(offset, layer.dilation_rate, strides, out_sizes):
      q, r = divmod(j * d, s)
      index += [slice(q, q + n), r]
    yield tf.reshape(folded[tuple(index)], shape)


def chained(views: Iterator[tf.Tensor],
            consume: Callable[[tf.Tensor], tf.Tensor]) -> List[tf.Tensor]:
  """[consume(v) for v in views], each view made after the previous result.

  Without the control dependencies TensorFlow's executor is free to make all
  k^r views (each the size of the layer's input) before consuming any, which
  multiplies the step's peak memory.
  """
  results = []
  while True:
    with tf.control_dependencies(results[-1:]):
      view = next(views, None)
      if view is None:
        return results
      results.append(consume(view))


def static_positions(output_gradient: tf.Tensor) -> int:
  """T, the number of output positions per example, or 0 if not static."""
  dims = output_gradient.shape[1:-1]
  return dims.num_elements() or 0


def _group_major(tensor: tf.Tensor, groups: int) -> tf.Tensor:
  """[B, T, g n] -> [B, g, T, n]: groups become a batch axis of matmuls.

  Channel c belongs to group c // n, as in Keras' grouped convolution.
  """
  positions = tensor.shape[1] if tensor.shape[1] is not None else -1
  if groups == 1:  # A reshape, which never copies (a transpose might).
    return tf.expand_dims(tensor, 1)
  tensor = tf.reshape(tensor, [tf.shape(tensor)[0], positions, groups,
                               tensor.shape[-1] // groups])
  return tf.transpose(tensor, [0, 2, 1, 3])


def _patch_gram(views: Iterator[tf.Tensor]) -> tf.Tensor:
  """The Gram matrix of the patches, A A^T = sum_j a_j a_j^T.

  Args:
    views: k^r tensors [B, g, T, n], the input seen by each kernel offset j.

  Returns:
    [B, g, T, T]. For T <= n, offset by offset (memory k^r B g T^2, at most
    that of the patches; measured faster there); otherwise one matmul of the
    concatenated patches [B, g, T, k^r n].
  """
  first = next(views)
  if first.shape[2] is not None and first.shape[2] <= first.shape[3]:
    return tf.add_n(chained(itertools.chain([first], views),
                            lambda view: tf.matmul(view, view,
                                                   transpose_b=True)))
  patches = tf.concat([first] + list(views), axis=-1)
  return tf.matmul(patches, patches, transpose_b=True)


def is_strided_pointwise(layer: tf.keras.layers.Layer) -> bool:
  """True for a convolution with a 1x1(x1) kernel and some stride > 1."""
  return (all(k == 1 for k in layer.kernel_size) and
          any(s > 1 for s in layer.strides))


def _without_strided_pointwise(layer, call: Callable, args):
  """(call, args, strides) for z without a strided 1x1 convolution op.

  A 1x1 kernel with strides s reads input position t s only, and never
  padding, so z = conv_{stride 1}(x[..., ::s_1, ..., ::s_r, :]) exactly. The
  filter gradient of the strided op in TensorFlow 2.15.1's oneDNN (3.2.1,
  oneDNN issue 6035) overruns a workspace for fewer than 16 input channels:
  a process abort on AVX-512 CPUs, wrong gradients on AVX2 ones. In the
  subsampled form no strided convolution exists in the forward pass, the
  backward pass or the book-keeping weight gradient. Other layers pass
  through unchanged.

  Returns:
    The call to use (the layer's own, with strides 1 while it runs), its
    positional arguments (the subsampled input first) and the strides its
    input is seen with (the layer's, or all 1).
  """
  if not is_strided_pointwise(layer):
    return call, args, tuple(layer.strides)
  unit = (1,) * layer.rank

  def stride_one_call(*call_args, **call_kwargs):
    with _common.replaced_attributes(layer, strides=unit):
      return call(*call_args, **call_kwargs)

  index = ((Ellipsis,) + tuple(slice(None, None, s) for s in layer.strides) +
           (slice(None),))
  return stride_one_call, (args[0][index],) + tuple(args[1:]), unit


@registry.register(tf.keras.layers.Conv1D, tf.keras.layers.Conv2D,
                   tf.keras.layers.Conv3D)
class ConvRule(registry.LayerRule):
  """z_{i,t} = sum_j a_{i,t,j} W_j + b, a convolution as a linear map.

  For output position t (t = 1..T) and kernel offset j, a_{i,t,j} is the
  input that offset j sees at t (`kernel_offset_views`), W_j the kernel's
  [C_in/g, C_out] slice at j. With g groups, output channel o reads only
  group o // p of the input channels (p = C_out/g), so per group the layer is
  a Dense map of the patch a_{i,t,g} (size D = k^r C_in/g) to p outputs, and

    g_i(W_g) = sum_t a_{i,t,g}^T delta_{i,t,g},   g_i(b) = sum_t delta_{i,t}.

  Per layer the cheaper of (mixed ghost clipping, `_common.prefer_ghost_norm`)

    explicit: G_i[j] = sum_t a_{i,t,j}^T delta_{i,t} per offset and group
      (cost B T D p), from the filter gradient of one grouped convolution
      per few examples where the device has grouped convolutions, else one
      offset at a time (`_explicit`), in sub-batches that fit the CPU's
      caches; the norms from them, and
      sum_i c_i G_i from the kept G if they are no larger than 3x delta
      (memory B D p g), else as in the ghost case below
      (`_common.keep_per_example_gradients`);
    ghost norm: ||g_i(W)||^2 = sum_g sum_{t,s} (a_{i,t,g} . a_{i,s,g})
      (delta_{i,t,g} . delta_{i,s,g}) (cost B T^2 (D + p) g); the clipped sum
      is then the layer's own filter gradient for the output gradient
      c . delta (book-keeping: one weight-gradient pass, no per-example
      gradients).

  z is the layer's own call with the activation off, so padding, causal
  padding, dilation and groups are exactly Keras's; a 1x1 kernel with
  stride s runs as stride 1 on the input subsampled by s (the same z; see
  `_without_strided_pointwise`). With K copies per example (augmentation
  multiplicity) the copies are K times more positions t of the example.
  Inner products with (V, v_b) for centred clipping: g_i . V =
  sum_t z_V(x_i)_t . delta_{i,t}, z_V the layer's own convolution with
  kernel V (cost of one forward), plus g_i(b) . v_b.
  Subclasses that override
  `call` or `convolution_op` (Conv*Transpose, SeparableConv*) take the exact
  fall-back instead, with a warning.
  """

  def applies_to(self, layer):
    return all(getattr(type(layer), name) is getattr(tf.keras.layers.Conv2D,
                                                     name)
               for name in _CONV_METHODS)

  def forward(self, layer, call, args, kwargs):
    check_channels_last(layer)
    call, args, strides = _without_strided_pointwise(layer, call, args)
    z, outputs = _common.call_without_activation(layer, call, args, kwargs)
    return outputs, registry.Tap(layer, self, z, {
        "call": call, "args": args, "kwargs": kwargs, "strides": strides})

  def gradients(self, tap, output_gradient):
    layer = tap.layer
    call, args, kwargs = (tap.saved["call"], tap.saved["args"],
                          tap.saved["kwargs"])
    inputs = _common.once_known(output_gradient,
                                tf.cast(args[0], output_gradient.dtype))
    # K copies per example: [B, K, *spatial, C], the copies being one more
    # position axis (`kernel_offset_views` counts it as positions).
    inputs = _common.group_copies(inputs, tap.copies)
    grouped_gradient = _common.group_copies(output_gradient, tap.copies)
    batch, groups, filters = tf.shape(inputs)[0], layer.groups, layer.filters
    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    positions = static_positions(grouped_gradient)
    bias_per_example = ([tf.reduce_sum(grouped_gradient, axis=list(
        range(1, grouped_gradient.shape.rank - 1)))] if layer.use_bias else [])
    input_dim = int(layer.kernel.shape[:-1].num_elements())

    def filter_gradient(factors):
      scaled = tf.reshape(_common.scale_examples(factors, grouped_gradient),
                          tf.shape(output_gradient))
      return _common.weight_vjp(
          lambda: _common.call_without_activation(layer, call, args,
                                                  kwargs)[0],
          variables, scaled)

    def dot(vector):
      # g_i . (V, v_b) = sum_t z_V(x_i)_t . delta_{i,t} + g_i(b) . v_b, with
      # z_V the layer's own convolution of the input with kernel V.
      with plain_convolution(layer,
                             tf.cast(vector[0], output_gradient.dtype)):
        projected = _common.call_without_activation(layer, call, args,
                                                    kwargs)[0]
      dots = tf.reduce_sum(_common.group_copies(
          projected * output_gradient, tap.copies),
                           axis=list(range(1, grouped_gradient.shape.rank)))
      if bias_per_example:
        dots += tf.linalg.matvec(bias_per_example[0],
                                 tf.cast(vector[1], output_gradient.dtype))
      return dots

    if not positions or not _common.prefer_ghost_norm(
        positions, input_dim, filters // groups, groups=groups):
      return _explicit(tap, variables, inputs, grouped_gradient,
                       bias_per_example, filter_gradient, dot,
                       keep=_common.keep_per_example_gradients(
                           int(layer.kernel.shape.num_elements()),
                           grouped_gradient))
    # a_{i,t,j,g}: k^r tensors [B, g, T, C_in/g]; delta_{i,t,g}: [B, g, T, p].
    views = (_group_major(view, groups)
             for view in kernel_offset_views(layer, inputs, grouped_gradient,
                                             strides=tap.saved["strides"]))
    deltas = _group_major(tf.reshape(grouped_gradient,
                                     [batch, positions, filters]), groups)
    activation_gram = _patch_gram(views)
    gradient_gram = tf.matmul(deltas, deltas, transpose_b=True)
    squared = tf.reduce_sum(activation_gram * gradient_gram, axis=[1, 2, 3])
    if bias_per_example:
      squared += _common.per_example_squared_norm(bias_per_example[0])
    return registry.LayerGradients(variables, squared, filter_gradient, dot)


def _per_offset_gradients(layer, inputs: tf.Tensor, grouped_gradient: tf.Tensor,
                          strides) -> List[tf.Tensor]:
  """G_i[j, g] = a_{i,.,j,g}^T delta_{i,.,g}: k^r tensors [B, g, C_in/g, p].

  Made one offset after the other (`chained`), so one view of the input is
  in memory at a time.
  """
  groups, filters = layer.groups, layer.filters
  positions = static_positions(grouped_gradient)
  deltas = _group_major(tf.reshape(
      grouped_gradient, [tf.shape(inputs)[0], positions or -1, filters]),
                        groups)
  views = (_group_major(view, groups)
           for view in kernel_offset_views(layer, inputs, grouped_gradient,
                                           strides=strides))
  return chained(views, lambda view: tf.matmul(view, deltas,
                                               transpose_a=True))


def _sub_batch_size(inputs: tf.Tensor, grouped_gradient: tf.Tensor) -> int:
  """Examples per sub-batch of the explicit path (0: the whole batch).

  Each of the k^r views is a copy of the input that one batched matmul
  reads with delta. Over the whole batch these are tens of MB that pass
  through main memory k^r times; over a sub-batch whose input and delta
  take `SUB_BATCH_BYTES` they stay in the CPU's caches. Measured at batch
  128, 3x3 kernels, 2 CPU cores (ms, the non-private filter gradient in
  brackets): 32x32, 32->32: 31.6 -> 21.0 (13.3); 16x16, 64->64: 26.2 ->
  21.1 (15.4); 32x32, 64->64: 103.6 -> 67.2 (48.5), with sub-batches of
  2-4 MB. The Papernot CNN's clipped sum alone (2 cores, median of 10):
  1.40x the non-private step on the whole batch, 1.24x with sub-batches of
  2 MB (1.28x at 3 MB, 1.45x at 1 MB, whose 32 sub-batches cost more in
  loop overhead than they save); its whole training step, in two runs of 6
  interleaved rounds: 1.38 -> 1.37 and 1.35 -> 1.29x.

  Returns:
    The number of examples, or 0 for the whole batch at once: where the
    input's or delta's example shape is not static, or where the batch
    (`_BATCH_SIZE_HINT` if its size is unknown) fits in 4 sub-batches, so
    that the loop would cost more than the caches save.
  """
  if not (inputs.shape[1:].is_fully_defined() and
          grouped_gradient.shape[1:].is_fully_defined()):
    return 0
  size = _examples_within(SUB_BATCH_BYTES, inputs, grouped_gradient)
  return size if (inputs.shape[0] or _BATCH_SIZE_HINT) > 4 * size else 0


def _examples_within(budget: int, inputs: tf.Tensor,
                     grouped_gradient: tf.Tensor) -> int:
  """How many examples' input and delta fit in `budget` bytes (>= 1)."""
  per_example = inputs.dtype.size * (inputs.shape[1:].num_elements() +
                                     grouped_gradient.shape[1:].num_elements())
  return max(1, budget // per_example)


def _folded_sub_batch_size(inputs: tf.Tensor,
                           grouped_gradient: tf.Tensor) -> int:
  """Examples per grouped convolution of the folded path (0: all at once).

  As many as have input and delta within `FOLDED_SUB_BATCH_BYTES`, at most
  `MAX_FOLDED_EXAMPLES`. Measured at batch 128 (2 CPU cores, ms for one
  layer's norms and clipped sum, fastest of 10; 8 / 16 examples): 32x32,
  64->64 (512 KB an example): 63 / 72; 32x32, 32->32 (256 KB): 24 / 21;
  16x16, 32->64: 14 / 12; 32 examples were slower than 16 at 32x32,
  32->32 (29 against 22). Static example shapes only.

  Returns:
    The number of examples, or 0 where the batch is known to be no larger.
  """
  size = min(MAX_FOLDED_EXAMPLES, _examples_within(
      FOLDED_SUB_BATCH_BYTES, inputs, grouped_gradient))
  batch = inputs.shape[0]
  return 0 if batch is not None and batch <= size else size


def _fold_examples(tensor: tf.Tensor, copies: int) -> tf.Tensor:
  """[u, K, ..., C] (or [u, ..., C] for K = 1) -> [K, ..., u C].

  The u examples sit side by side on the channel axis: channel e C + c of
  the result is channel c of example e. Each example's K copies stay on the
  batch axis, where the convolution's filter gradient sums them. Shapes
  must be static.
  """
  if copies == 1:
    tensor = tf.expand_dims(tensor, 1)
  rank = tensor.shape.rank
  moved = tf.transpose(tensor, list(range(1, rank - 1)) + [0, rank - 1])
  return tf.reshape(moved, moved.shape[:-2].as_list() +
                    [moved.shape[-2] * moved.shape[-1]])


def _folded_per_example_gradients(layer, call: Callable, kwargs,
                                  inputs: tf.Tensor,
                                  grouped_gradient: tf.Tensor,
                                  copies: int) -> tf.Tensor:
  """G_i for u examples from one convolution with u g groups.

  With the u examples folded onto the channels (`_fold_examples`) and a
  kernel of u C_out outputs ([*k, C_in/g, u C_out], output o of example e
  at e C_out + o), the layer's convolution is a grouped one in which
  example e's input channels reach only example e's outputs (TensorFlow
  infers u g groups from the kernel's input depth). Its filter gradient for
  the folded delta is then [*k, C_in/g, u, C_out], that is G_e = sum_t
  a_{e,t}^T delta_{e,t} for every e, from TensorFlow's own filter-gradient
  kernel: one call per u examples instead of k^r batched matmuls of views.
  The layer's own call computes it (padding, strides, dilation exactly
  Keras's), with the folded kernel and no activation
  (`plain_convolution`).

  Args:
    layer: the convolution.
    call: its call (`_without_strided_pointwise`'s).
    kwargs: the call's keyword arguments.
    inputs: [u, (K,) ..., C_in], static shape.
    grouped_gradient: delta, [u, (K,) ..., C_out], static shape.
    copies: K.

  Returns:
    [u, *kernel.shape].
  """
  examples = inputs.shape[0]
  shape = layer.kernel.shape.as_list()
  folded_kernel = tf.zeros(shape[:-1] + [examples * shape[-1]], inputs.dtype)

  def folded_convolution():
    # groups=1: TensorFlow infers the u g groups from the kernel's depth.
    with plain_convolution(layer, folded_kernel, groups=1,
                           filters=examples * layer.filters):
      return _common.call_without_activation(
          layer, call, (_fold_examples(inputs, copies),), kwargs)[0]

  gradient = _common.weight_vjp(folded_convolution, [folded_kernel],
                                _fold_examples(grouped_gradient, copies))[0]
  gradient = tf.reshape(gradient, shape[:-1] + [examples, shape[-1]])
  rank = len(shape)
  return tf.transpose(gradient, [rank - 1] + list(range(rank - 1)) + [rank])


def _one_by_one_per_example_gradients(layer, call: Callable, kwargs,
                                      inputs: tf.Tensor,
                                      grouped_gradient: tf.Tensor,
                                      copies: int) -> tf.Tensor:
  """G_e for u examples from the layer's own filter gradient of each.

  G_e = sum_t a_{e,t}^T delta_{e,t} is the weight gradient of a batch that
  holds example e alone (its K copies, whose gradients it sums): one call of
  TensorFlow's filter-gradient kernel per example, on the layer's own call
  with a plain kernel (`plain_convolution`). On TensorFlow's own CPU
  kernels, which have no grouped filter gradient to fold with, this was
  faster than the per-offset views, and than the batch's own weight
  gradient (`_explicit`'s figures).

  Args:
    layer, call, kwargs: as for `_folded_per_example_gradients`.
    inputs: [u, (K,) ..., C_in], static shape.
    grouped_gradient: delta, [u, (K,) ..., C_out], static shape.
    copies: K.

  Returns:
    [u, *kernel.shape].
  """
  kernel = tf.zeros(layer.kernel.shape, inputs.dtype)

  def example(index):
    # [K, ...]: the example's copies as a batch ([1, ...] for K = 1).
    rows = (inputs[index] if copies > 1 else inputs[index:index + 1],
            grouped_gradient[index] if copies > 1 else
            grouped_gradient[index:index + 1])

    def convolution():
      # groups=1: TensorFlow infers a grouped layer's groups from the kernel.
      with plain_convolution(layer, kernel, groups=1):
        return _common.call_without_activation(layer, call, (rows[0],),
                                               kwargs)[0]
    return _common.weight_vjp(convolution, [kernel], rows[1])[0]

  return tf.stack([example(index) for index in range(inputs.shape[0])])


def plain_convolution(layer, kernel: tf.Tensor, **values):
  """While it runs, the layer's call convolves with `kernel` as it is.

  No bias, and Keras' own `convolution_op`: a subclass's (the
  weight-standardised convolution, whose rule builds on this one) would
  transform the kernel first. `values`: more attributes to replace.
  """
  def convolution_op(inputs, unused_kernel):
    del unused_kernel
    return tf.keras.layers.Conv2D.convolution_op(layer, inputs, kernel)

  return _common.replaced_attributes(layer, kernel=kernel, use_bias=False,
                                     convolution_op=convolution_op, **values)


def _folding_works(layer, call: Callable, kwargs, strides,
                   input_shape: tf.TensorShape,
                   output_gradient_shape: tf.TensorShape,
                   dtype: tf.DType) -> bool:
  """Whether `_folded_per_example_gradients` is right here for the layer.

  Grouped convolutions run on oneDNN (TensorFlow's default on x86 CPUs)
  and cuDNN; TensorFlow's own CPU kernels (TF_ENABLE_ONEDNN_OPTS=0) refuse
  them. So, once per layer configuration and shapes, two random examples
  are run eagerly both folded and one at a time; the rule folds only where
  the two agree, and otherwise takes the per-offset views.

  Args:
    layer, call, kwargs: as for `_folded_per_example_gradients`.
    strides: the strides `call` convolves with.
    input_shape, output_gradient_shape: one row's (no batch axis), static.
    dtype: the computation's.
  """
  key = (type(layer), layer.rank, tuple(layer.kernel_size), tuple(strides),
         tuple(layer.dilation_rate), layer.padding, layer.groups,
         layer.filters, tuple(input_shape), tuple(output_gradient_shape),
         dtype.name)
  if key not in _FOLDING_CHECKS:
    # In a thread of its own: eager and recording gradients, also while a
    # tf.function is traced (tf.init_scope would stop the tape).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
      _FOLDING_CHECKS[key] = thread.submit(
          _check_folding, layer, call, kwargs, input_shape,
          output_gradient_shape, dtype).result()
  return _FOLDING_CHECKS[key]


def _check_folding(layer, call, kwargs, input_shape, output_gradient_shape,
                   dtype) -> bool:
  """`_folding_works`' check, run eagerly."""
  inputs = tf.random.stateless_normal([2] + input_shape.as_list(), [0, 1],
                                      dtype=dtype)
  gradient = tf.random.stateless_normal(
      [2] + output_gradient_shape.as_list(), [0, 2], dtype=dtype)
  try:
    folded = _folded_per_example_gradients(layer, call, kwargs, inputs,
                                           gradient, copies=1)
    expected = _one_by_one_per_example_gradients(layer, call, kwargs, inputs,
                                                 gradient, copies=1)
  except (tf.errors.OpError, ValueError):
    return False
  tolerance = 1e-3 if dtype.size >= 4 else 5e-2
  error = tf.reduce_max(tf.abs(tf.cast(folded - expected, tf.float32)))
  scale = tf.reduce_max(tf.abs(tf.cast(expected, tf.float32)))
  return bool(scale > 0 and error <= tolerance * scale)


def _in_kernel_layout(per_offset: List[tf.Tensor],
                      kernel_shape: tf.TensorShape) -> tf.Tensor:
  """k^r tensors [n, g, C_in/g, p] -> [n, *kernel_shape].

  The kernel is (*k, C_in/g, C_out), with output channel o = g p + q.
  """
  stacked = tf.transpose(tf.stack(per_offset, axis=1), [0, 1, 3, 2, 4])
  return tf.reshape(stacked, [-1] + kernel_shape.as_list())


def _in_sub_batches(compute: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                    inputs: tf.Tensor, grouped_gradient: tf.Tensor,
                    size: int, element_shape: List[int]) -> tf.Tensor:
  """compute(x, delta) over sub-batches of `size` examples, concatenated.

  One sub-batch after the other in a `tf.while_loop` (two in flight were
  measured no faster within the noise, and one kernel running two
  iterations at once is what broke oneDNN's FusedBatchNorm). Every
  sub-batch has `size` rows, so shapes inside the loop are static; the last
  one repeats the batch's last example where the batch runs out, and the
  repeats are cut from the result.

  Returns:
    [B, *element_shape].
  """
  batch = tf.shape(inputs)[0]
  count = (batch + size - 1) // size

  def body(index, results):
    rows = tf.minimum(index * size + tf.range(size), batch - 1)
    return index + 1, results.write(index, compute(
        tf.gather(inputs, rows), tf.gather(grouped_gradient, rows)))

  results = tf.TensorArray(inputs.dtype, size=count,
                           element_shape=[size] + element_shape)
  _, results = tf.while_loop(lambda index, _: index < count, body,
                             (tf.constant(0), results),
                             parallel_iterations=1)
  return results.concat()[:batch]


def _per_example_way(layer, call: Callable, kwargs, strides,
                     input_row: tf.TensorShape, gradient_row: tf.TensorShape,
                     dtype: tf.DType) -> Optional[Callable]:
  """`_explicit`'s way to a sub-batch's G_e: a function, or None (views).

  Args:
    layer, call, kwargs, strides: as for `_folding_works`.
    input_row, gradient_row: one row's input and delta shapes.
    dtype: the computation's.
  """
  # A 1x1 kernel's one view is the input itself: one batched matmul, measured
  # 2-3x faster than the folded convolution (16x16, 64->128: 6 against 15
  # ms).
  if (layer.kernel.shape[:-2].num_elements() == 1 or
      not input_row.is_fully_defined() or
      not gradient_row.is_fully_defined()):
    return None
  if _folding_works(layer, call, kwargs, strides, input_row, gradient_row,
                    dtype):
    return _folded_per_example_gradients
  # Without oneDNN TensorFlow has no grouped filter gradient.
  return _one_by_one_per_example_gradients if layer.groups == 1 else None


def _explicit(tap: registry.Tap, variables, inputs, grouped_gradient,
              bias_per_example, filter_gradient, dot,
              keep: bool) -> registry.LayerGradients:
  """Norms from explicit per-example gradients, a sub-batch at a time.

  G_i = sum_t a_{i,t}^T delta_{i,t} in the kernel's layout, and ||g_i||^2 =
  ||G_i||^2 + ||g_i(b)||^2. Three ways, for kernels of more than one
  offset and static example shapes the first that applies:

    folded: where this device's grouped convolutions compute it right
      (`_folding_works`: oneDNN, TensorFlow's default on CPUs with
      AVX512_VNNI, AVX512_BF16 or AMX, and cuDNN), a few examples per
      grouped convolution (`_folded_per_example_gradients`);
    one by one: elsewhere, for groups = 1, the layer's own filter gradient
      of each example of a sub-batch (`_one_by_one_per_example_gradients`);
    per-offset views: G_i[j, g] = a_{i,.,j,g}^T delta_{i,.,g} per kernel
      offset j (`_per_offset_gradients`), in sub-batches that fit the CPU's
      caches (`_sub_batch_size`): 1x1 kernels, grouped convolutions without
      oneDNN, example shapes known only when run.

  The first two take sub-batches of `_folded_sub_batch_size` examples.
  Measured on the layers of the Papernot CNN and ResNet-18 at batch 128
  (2 CPU cores, ms for the norms and the clipped sum, fastest of 10;
  folded / views / the non-private forward and weight gradient), 3x3
  kernels, on an AVX-512 CPU with oneDNN: 32x32, 3->64: 9 / 18 / 5; 32x32,
  32->32: 21 / 37 / 28; 16x16, 32->64: 12 / 18 / 15; 32x32, 64->64: 63 /
  99 / 47; stride 2, 64->128: 46 / 61 / 27; 16x16, 128->128, norms only:
  115 / 114 / 44. On an AVX2 CPU with TensorFlow's own kernels (squared
  norms of the whole batch, median ms; one by one, 16 examples a sub-batch
  / views / the batch's weight gradient): 32x32, 32->32: 31 / 48 / 51;
  32x32, 64->64: 115 / 170 / 126; 16x16, 128->128: 91 / 111 / 87. With
  oneDNN forced on there, one by one and the views were equal and folding
  slower (32x32, 64->64: 82 / 80 / folded 109).

  With `keep`, the G are kept ([B, *kernel]) and sum_i c_i g_i is a
  weighted reduction of them; otherwise only the norms are, and the sum is
  `filter_gradient` (the layer's own weight gradient for c . delta),
  whichever holds less memory until the clip factors are known.
  """
  layer, copies = tap.layer, tap.copies
  call, kwargs, strides = (tap.saved["call"], tap.saved["kwargs"],
                           tap.saved["strides"])
  # One row's shapes (a row is one of an example's K copies).
  input_row = tap.saved["args"][0].shape[1:]
  gradient_row = grouped_gradient.shape[1 + (copies > 1):]
  per_example = _per_example_way(layer, call, kwargs, strides, input_row,
                                 gradient_row, grouped_gradient.dtype)
  if per_example is not None:

    def sub_batch(x, gradient):
      gradients = per_example(layer, call, kwargs, x, gradient, copies)
      return (gradients if keep else
              _common.per_example_squared_norm(gradients))

    size = _folded_sub_batch_size(inputs, grouped_gradient)
  else:

    def sub_batch(x, gradient):
      per_offset = _per_offset_gradients(layer, x, gradient, strides)
      if keep:
        return _in_kernel_layout(per_offset, layer.kernel.shape)
      return tf.add_n([_common.per_example_squared_norm(g)
                       for g in per_offset])

    size = _sub_batch_size(inputs, grouped_gradient)

  if size:
    result = _in_sub_batches(sub_batch, inputs, grouped_gradient, size,
                             layer.kernel.shape.as_list() if keep else [])
  else:
    result = sub_batch(inputs, grouped_gradient)
  biases = [_common.per_example_squared_norm(b) for b in bias_per_example]
  if not keep:
    return registry.LayerGradients(variables, tf.add_n([result] + biases),
                                   filter_gradient, dot)
  squared = tf.add_n([_common.per_example_squared_norm(result)] + biases)

  def weighted_sum(factors):
    return [_common.weighted_batch_sum(factors, g)
            for g in [result] + bias_per_example]

  return registry.LayerGradients(variables, squared, weighted_sum, dot)
