"""DP noise and batch sampling stay secret when the global seed is public.

Two processes seeded alike with tf.keras.utils.set_random_seed(0) (as the
experiments' --seed does) must draw different Gaussian and Laplace noise,
eagerly and in tf.function, and sample different batches; tf.random.normal
is the control: the global seed does make it reproducible.
"""

import pathlib

from tests import scripts

SCRIPT = pathlib.Path(__file__).with_name("secret_draws.py")


def _draws():
  return scripts.run_json_script(SCRIPT, timeout=240)


def test_noise_and_sampling_ignore_the_global_seed():
  first, second = _draws(), _draws()
  assert first["tf_random_normal"] == second["tf_random_normal"]
  for name in ("gaussian_eager", "gaussian_graph", "laplace_eager",
               "laplace_graph"):
    # Continuous draws: equal only if the seeds were.
    assert all(a != b for a, b in zip(first[name], second[name])), name
  # Two Poisson(q = 0.1) batches of 100 examples agree with probability
  # (1 - 2 q (1 - q))^100 = 0.82^100 ~ 2e-9.
  assert first["batch"] != second["batch"]
