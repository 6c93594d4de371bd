"""Per-example GAN losses, for D's real and fake passes and for G.

With ``l`` D's logit of "real" (the first output column):

* ``gan`` (non-saturating, Goodfellow et al. 2014):
  D real ``-log sigmoid(l) = softplus(-l)``, D fake ``softplus(l)``,
  G ``softplus(-l)`` on its own samples.
* ``wgan_gp`` (Gulrajani et al. 2017): D real ``-l``, D fake ``l``, G ``-l``;
  the gradient penalty is in `gradient_penalty`.

With ACGAN conditioning every loss adds the cross-entropy of D's class
logits (the other output columns) against the image's label: the true label
for real images, the label G was asked for on fakes.

All return one loss per example, shape [B], as the fast clipping engine
needs (`tfdp.clipping.fast.clipped_gradients`).
"""

import tensorflow as tf

LOSSES = ("gan", "wgan_gp")


def _real_logit(outputs: tf.Tensor) -> tf.Tensor:
  return outputs[:, 0]


def _class_term(conditioning: str, labels: tf.Tensor,
                outputs: tf.Tensor) -> tf.Tensor:
  if conditioning != "acgan":
    return tf.zeros_like(outputs[:, 0])
  return tf.keras.losses.sparse_categorical_crossentropy(
      tf.cast(labels, tf.int64), outputs[:, 1:], from_logits=True)


def _realness(loss: str, logit: tf.Tensor, as_real: bool) -> tf.Tensor:
  sign = -1.0 if as_real else 1.0
  if loss == "gan":
    return tf.nn.softplus(sign * logit)
  return sign * logit


def discriminator_real(loss: str, conditioning: str, labels: tf.Tensor,
                       outputs: tf.Tensor) -> tf.Tensor:
  """D's per-example loss on real images: the part that is clipped."""
  return (_realness(loss, _real_logit(outputs), as_real=True) +
          _class_term(conditioning, labels, outputs))


def discriminator_fake(loss: str, conditioning: str, labels: tf.Tensor,
                       outputs: tf.Tensor) -> tf.Tensor:
  """D's per-example loss on G's samples (labels: those G was given)."""
  return (_realness(loss, _real_logit(outputs), as_real=False) +
          _class_term(conditioning, labels, outputs))


def generator(loss: str, conditioning: str, labels: tf.Tensor,
              outputs: tf.Tensor) -> tf.Tensor:
  """G's per-example loss: D should call its samples real (and of label y)."""
  return (_realness(loss, _real_logit(outputs), as_real=True) +
          _class_term(conditioning, labels, outputs))


def gradient_penalty(critic, anchors: tf.Tensor, fakes: tf.Tensor) -> tf.Tensor:
  """WGAN-GP's mean ``(||grad_x D(x^)||_2 - 1)^2`` at ``x^`` between the two.

  ``x^ = e a + (1 - e) f`` with ``e ~ U[0, 1]`` per example, ``a`` the
  anchors and ``f`` G's samples. In a DP-GAN the anchors are mean samples
  (already released privately), never raw private images: the penalty's
  gradient is not clipped.

  Args:
    critic: maps images to outputs whose first column is the real logit
      (labels, if any, bound already).
    anchors: [B, H, W, C].
    fakes: [B, H, W, C].

  Returns:
    The scalar penalty.
  """
  mix = tf.random.uniform([tf.shape(fakes)[0], 1, 1, 1], dtype=fakes.dtype)
  between = mix * anchors + (1 - mix) * fakes
  with tf.GradientTape() as tape:
    tape.watch(between)
    logit = _real_logit(critic(between))
  gradients = tape.gradient(logit, between)
  norms = tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]) + 1e-12)
  return tf.reduce_mean(tf.square(norms - 1.0))
