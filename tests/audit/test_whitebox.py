"""The white-box Dirac-canary audit of tfdp's DP-SGD, at small scale.

The canary's gradient is checked against explicit per-example gradients;
the noise on a canary's weight against sigma C with `noise_stats`'s
tolerances; the audit's bound against the claimed epsilon for the correct
trainer, and above it for each broken one (the negative controls).
"""

import numpy as np
import pytest
import tensorflow as tf

from experiments import _audit_faults
from tests import noise_stats
from tests import oracle
from tests import scripts
import tfdp
from tfdp.audit import canaries
from tfdp.audit import whitebox

FEATURES, CLASSES, EXAMPLES = 6, 3, 48
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                     reduction="none")


def _data(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(EXAMPLES, FEATURES)).astype(np.float32),
          rng.integers(0, CLASSES, EXAMPLES))


def _classifier():
  return tf.keras.Sequential([
      tf.keras.layers.Dense(5, activation="tanh", input_shape=(FEATURES,)),
      tf.keras.layers.Dense(CLASSES)])


def test_canary_gradient_is_dirac_and_real_gradients_miss_it():
  model = canaries.with_dirac_canaries(
      _classifier(), input_shape=(FEATURES,), canaries=3,
      num_classes=CLASSES, gradient_norm=7.0)
  x, y = _data()
  rows = np.concatenate([canaries.embed_examples(model, x[:4]),
                         canaries.dirac_canary_rows(model, [2])])
  labels = np.concatenate([y[:4], [canaries.CANARY_LABEL]])
  gradients = oracle.per_example_gradients(model, rows, labels, LOSS)
  slot = [v.name for v in model.trainable_variables].index(
      model.get_layer(canaries.CANARY_LAYER).kernel.name)
  for real in gradients[:4]:
    np.testing.assert_array_equal(real[slot], 0.0)
    assert any(np.any(g != 0) for g in real)
  canary = gradients[4]
  expected = np.zeros([3, 1], np.float32)
  expected[2, 0] = 7.0  # s / k with s = k * gradient_norm.
  np.testing.assert_allclose(canary[slot], expected, rtol=1e-6)
  for index, gradient in enumerate(canary):
    if index != slot:
      np.testing.assert_array_equal(gradient, 0.0)


def _public_batch_norm_classifier():
  return tf.keras.Sequential([
      tf.keras.layers.Dense(5, input_shape=(FEATURES,)),
      tfdp.layers.PublicBatchNormalization(),
      tf.keras.layers.Activation("tanh"),
      tf.keras.layers.Dense(CLASSES)])


def _runs(setting, canary_slots=1, strategy=None, model_fn=_classifier,
          public_data=None):
  x, y = _data()
  return whitebox.DPSGDRuns(model_fn, x, y, setting,
                            input_shape=(FEATURES,), num_classes=CLASSES,
                            canaries=canary_slots, strategy=strategy,
                            public_data=public_data)


@pytest.mark.parametrize("public_batch_norm", [False, True])
def test_canary_observations_are_clip_plus_sigma_c_noise(public_batch_norm):
  # Full batch (B = the 48 + 600 rows): every included canary is in every
  # step, so x_t = 1 + sigma z (in) and sigma z (out), whatever the clip of
  # a gradient 100 C long.
  setting = whitebox.DPSGDSetting(noise_multiplier=1.3, l2_norm_clip=0.5,
                                  batch_size=EXAMPLES + 600, steps=9,
                                  learning_rate=0.05)
  runs = (_runs(setting, canary_slots=1200,
                model_fn=_public_batch_norm_classifier,
                public_data=_data(seed=1)[0][:16]) if public_batch_norm
          else _runs(setting, canary_slots=1200))
  included = np.arange(1200) % 2 == 0
  observations = runs.run(included)
  noise_stats.assert_noise_std(
      (observations[:, included] - 1.0).reshape(-1), 1.3)
  noise_stats.assert_noise_std(observations[:, ~included].reshape(-1), 1.3)


def audit(fault, claimed_epsilon=2.0, runs_per_side=100, strategy=None,
           **fault_kwargs):
  # One full-batch step per run: q = 1, T = 1, sigma for claimed_epsilon.
  sigma = tfdp.privacy.calibrate_noise_multiplier(
      claimed_epsilon, 1e-5, 1, sampling_probability=1.0)
  setting = whitebox.DPSGDSetting(noise_multiplier=sigma, l2_norm_clip=1.0,
                                  batch_size=EXAMPLES, steps=1,
                                  learning_rate=0.1)
  with _audit_faults.FAULTS[fault](**fault_kwargs):
    runs = _runs(setting, strategy=strategy)
    return whitebox.many_runs_audit(runs, runs_per_side=runs_per_side,
                                    delta=1e-5, seed=0)


def test_correct_trainer_stays_below_its_claim():
  result = audit("none", claimed_epsilon=2.0, runs_per_side=150)
  assert result.runs == 300
  assert 0.0 <= result.bound.epsilon < 2.0


@pytest.mark.parametrize("fault,kwargs", [
    ("no_noise", {}), ("no_clipping", {}),
    ("replica_noise", {"scale": 1.0 / EXAMPLES})])
def test_negative_controls_exceed_their_claim(fault, kwargs):
  result = audit(fault, claimed_epsilon=2.0, runs_per_side=150, **kwargs)
  assert result.bound.epsilon > 2.0, result.bound


def test_replica_noise_fault_is_caught_under_mirrored_strategy():
  report = scripts.run_json_script(
      scripts.ROOT / "tests" / "audit" / "replica_audit_check.py",
      timeout=600)
  assert report["replicas"] == 2
  assert report["none"] < 2.0
  assert report["replica_noise"] > 2.0


def test_one_run_audit_of_many_canaries():
  # q ~ 274 / (48 + ~500) ~ 1/2 over 12 steps: with no noise, all but
  # ~0.02% of the included canaries show.
  sigma = tfdp.privacy.calibrate_noise_multiplier(
      4.0, 1e-5, 12, sampling_probability=0.5)
  setting = whitebox.DPSGDSetting(noise_multiplier=sigma, l2_norm_clip=1.0,
                                  batch_size=274, steps=12,
                                  learning_rate=0.1)
  correct = whitebox.one_run_audit(_runs(setting, canary_slots=1000),
                                   delta=1e-5, seed=0)
  assert 0.0 < correct.bound.epsilon < 4.0
  with _audit_faults.no_noise():
    broken = whitebox.one_run_audit(_runs(setting, canary_slots=1000),
                                    delta=1e-5, seed=0)
  assert broken.bound.epsilon > 4.0


def test_setting_refuses_bad_values():
  with pytest.raises(ValueError, match="noise_multiplier"):
    whitebox.DPSGDSetting(noise_multiplier=0.0, l2_norm_clip=1.0,
                          batch_size=8, steps=1, learning_rate=0.1)
  with pytest.raises(ValueError, match="batch_size"):
    _runs(whitebox.DPSGDSetting(noise_multiplier=1.0, l2_norm_clip=1.0,
                                batch_size=EXAMPLES + 2, steps=1,
                                learning_rate=0.1))
