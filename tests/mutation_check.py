"""Mutation check: would the suite catch a privacy bug? Run on demand.

  python tests/mutation_check.py            # every mutation
  python tests/mutation_check.py noise_doubled clip_doubled

For each privacy-relevant mutation below, copies the working tree (tracked
and untracked files, not ignored ones) to a temporary directory, applies the
mutation (one exact text replacement, which must match once), runs the tests
meant to catch it (`pytest -x`, in the copy) and records whether they fail.
The unmutated copy must pass all of those tests first. Prints a markdown table
and exits 1 if any mutation survives. docs/testing.md has the latest table.
Not part of the default suite (it runs the relevant tests once per mutation,
about 10 minutes on 2 cores).
"""

import dataclasses
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Sequence, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  what: str
  path: str
  old: str
  new: str
  tests: Tuple[str, ...]


_NOISE_LINE = "  gradients = optimizer.noisy_average(clipped_sum)\n"
_TRAINING_NOISE = ("tests/test_training_noise.py",)
_GAN_TRAINER = ("tests/gan/test_trainer.py",)

MUTATIONS: Sequence[Mutation] = (
    Mutation(
        "noise_doubled", "make_private's step adds the noise twice",
        "tfdp/private.py", _NOISE_LINE,
        "  gradients = [a + b - c / optimizer.expected_batch_size for a, b, c"
        " in zip(optimizer.noisy_average(clipped_sum), "
        "optimizer.noisy_average(clipped_sum), clipped_sum)]\n",
        _TRAINING_NOISE),
    Mutation(
        "noise_dropped", "make_private's step adds no noise",
        "tfdp/private.py", _NOISE_LINE,
        "  gradients = [c / optimizer.expected_batch_size for c in "
        "clipped_sum]\n", _TRAINING_NOISE),
    Mutation(
        "exact_path_noise_doubled",
        "a DP optimizer without make_private adds the noise twice",
        "tfdp/optimizers.py",
        "    return list(zip(self.noisy_average(clipped_sum), var_list))",
        "    return list(zip([a + b - c / self.expected_batch_size for a, b, c"
        " in zip(self.noisy_average(clipped_sum), self.noisy_average("
        "clipped_sum), clipped_sum)], var_list))", _TRAINING_NOISE),
    Mutation(
        "exact_path_noise_dropped",
        "a DP optimizer without make_private adds no noise",
        "tfdp/optimizers.py",
        "    return list(zip(self.noisy_average(clipped_sum), var_list))",
        "    return list(zip([c / self.expected_batch_size for c in "
        "clipped_sum], var_list))", _TRAINING_NOISE),
    Mutation(
        "noise_scaled", "the optimizer's noise is sqrt(2) too large",
        "tfdp/optimizers.py",
        "noisy = gradient + tf.cast(noise_on, gradient.dtype) * noise",
        "noisy = gradient + tf.cast(noise_on, gradient.dtype) * noise * 1.4142",
        ("tests/test_optimizers.py",) + _TRAINING_NOISE),
    Mutation(
        "noise_per_replica", "every replica adds the noise (MirroredStrategy)",
        "tfdp/optimizers.py",
        "return tf.cast(tf.equal(context.replica_id_in_sync_group, 0), "
        "tf.float32)", "return tf.constant(1.0)",
        ("tests/test_private.py::"
         "test_mirrored_strategy_matches_one_device_and_adds_noise_once",)),
    Mutation(
        "noise_per_chunk", "accumulation adds the noise to every chunk",
        "tfdp/private.py",
        "[s + g for s, g in zip(sums, gradients)]",
        "[s + b * model.optimizer.expected_batch_size for s, b in "
        "zip(sums, model.optimizer.noisy_average(gradients))]",
        _TRAINING_NOISE),
    Mutation(
        "noise_reused", "the same noise every step (a fixed seed)",
        "tfdp/privacy/mechanisms.py",
        "    return _secret_normal(shape, dtype) * tf.cast(stddev, dtype)\n",
        "    seed = tf.constant([7, 7], tf.int64)\n",
        _TRAINING_NOISE + ("tests/privacy/test_secret_randomness.py",)),
    Mutation(
        "clip_doubled", "clip factors min(1, 2C / norm(g_i))",
        "tfdp/clipping/engine.py",
        "  clip = tf.cast(l2_norm_clip, norms.dtype)\n",
        "  clip = 2 * tf.cast(l2_norm_clip, norms.dtype)\n",
        ("tests/clipping/test_fast_engine.py", "tests/test_private.py")),
    Mutation(
        "sampling_q_off", "Poisson sampling with 1.05 q",
        "tfdp/data/sampling.py", "    q = b / n\n", "    q = 1.05 * b / n\n",
        ("tests/data/test_sampling.py",)),
    Mutation(
        "steps_counted_twice", "the accountant counts every step twice",
        "tfdp/privacy/accountant.py",
        "self._steps.assign_add(iterations - counted)",
        "self._steps.assign_add(2 * (iterations - counted))",
        ("tests/privacy/test_accountant.py", "tests/test_callbacks.py")),
    Mutation(
        "restored_steps_forgotten",
        "a restored optimizer's earlier steps are not counted",
        "tfdp/privacy/accountant.py",
        "               if int(self._lineage.numpy()) == lineage else 0)",
        "               if int(self._lineage.numpy()) == lineage else "
        "iterations)",
        ("tests/privacy/test_accountant.py", "tests/test_resume.py")),
    Mutation(
        "fixed_size_sensitivity", "fixed-size sampling accounted with "
        "sensitivity C instead of 2C",
        "tfdp/privacy/accounting.py",
        "dp_accounting.GaussianDpEvent(noise_multiplier / 2))",
        "dp_accounting.GaussianDpEvent(noise_multiplier))",
        ("tests/privacy/test_accounting.py",)),
    Mutation(
        "public_statistics_mixed", "public-batch statistics computed with "
        "the private batch mixed in",
        "tfdp/private.py",
        "public_batch_norm.update_public_statistics(self, "
        "options.public_data)",
        "public_batch_norm.update_public_statistics(self, tf.concat("
        "[options.public_data, tf.cast(x, options.public_data.dtype)]"
        ", 0))",
        ("tests/test_private.py", "tests/layers/test_public_batch_norm.py")),
    Mutation(
        "budget_gammas_swapped", "StoBatch's gamma and gamma_x swapped",
        "tfdp/stobatch/budget.py",
        "  gamma = 2.0 * delta2 / (m * sigma_max_w1)\n"
        "  gamma_x = delta2 / m\n",
        "  gamma_x = 2.0 * delta2 / (m * sigma_max_w1)\n"
        "  gamma = delta2 / m\n",
        ("tests/stobatch/test_budget.py",)),
    Mutation(
        "gan_noise_dropped", "the DP-GAN's real pass gets no noise",
        "tfdp/gan/trainer.py",
        "        return self.d_optimizer.noisy_average(sums)\n",
        "        return [s / self.batch_size for s in sums]\n", _GAN_TRAINER),
    Mutation(
        "gan_real_unclipped", "the DP-GAN's real pass is not clipped",
        "tfdp/gan/trainer.py",
        "                                    loss_fn, self.l2_norm_clip)",
        "                                    loss_fn, 1e9 * self.l2_norm_clip)",
        _GAN_TRAINER),
    Mutation(
        "gan_mean_samples_unaccounted",
        "the mean samples' release is left out of the DP-GAN's epsilon",
        "tfdp/gan/trainer.py",
        "          release_noise_multiplier=mean_noise_multiplier)",
        "          release_noise_multiplier=None)", _GAN_TRAINER),
    Mutation(
        "mean_sample_sensitivity_halved",
        "a mean sample's sensitivity is taken as half of r sqrt(d) / m",
        "tfdp/gan/mean_samples.py",
        "math.sqrt(int(np.prod(image_shape))) / mean_size\n",
        "math.sqrt(int(np.prod(image_shape))) / (2 * mean_size)\n",
        _GAN_TRAINER),
    Mutation(
        "augmult_copies_clipped_apart",
        "augmentation multiplicity clips each copy as an example (K times "
        "the examples, noise calibrated to B)",
        "tfdp/private.py",
        "                                copies_per_example=copies, "
        "center=center,",
        "                                copies_per_example=1, center=center,",
        ("tests/test_augmult.py", "tests/test_training_noise.py")),
    Mutation(
        "augmult_copies_not_summed",
        "a materialised rule averages its copies' gradients twice",
        "tfdp/clipping/layers/_common.py",
        "  return tf.reduce_sum(group_copies(per_row, copies), axis=1)",
        "  return tf.reduce_mean(group_copies(per_row, copies), axis=1)",
        ("tests/clipping/test_augmult.py",)),
    Mutation(
        "dope_center_not_subtracted",
        "DOPE-SGD clips around p but the sum misses -(sum_i c_i) p, so one "
        "example moves it by more than C",
        "tfdp/clipping/fast.py",
        "    gradient_sum = [g - tf.cast(total, g.dtype) * v",
        "    gradient_sum = [g - 0.0 * tf.cast(total, g.dtype) * v",
        ("tests/clipping/test_centered.py",
         "tests/test_public_gradients.py")),
    Mutation(
        "dope_rounding_margin_removed",
        "centred norms clipped without the float32 cancellation margin, so "
        "a term near the centre can be longer than C",
        "tfdp/clipping/layers/_common.py", "CANCELLATION_MARGIN = 1e-6",
        "CANCELLATION_MARGIN = 0.0",
        ("tests/clipping/test_centered.py",)),
    Mutation(
        "ws_conv_jacobian_ignored",
        "the weight-standardised rule takes W_hat's norm for W's",
        "tfdp/clipping/layers/weight_standardized_conv.py",
        "        tf.square(along_u) + (2.0 - ratio) * tf.square(along_v), "
        "axis=1))",
        "        0.0 * along_u, axis=1))",
        ("tests/layers/test_weight_standardization.py",)),
)


def _copy_tree(destination: pathlib.Path) -> None:
  files = subprocess.run(
      ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
      capture_output=True, check=True).stdout.decode().split("\0")
  for name in filter(None, files):
    source = ROOT / name
    if source.is_file():
      target = destination / name
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, target)


def _apply(tree: pathlib.Path, mutation: Mutation) -> None:
  path = tree / mutation.path
  text = path.read_text()
  count = text.count(mutation.old)
  if count != 1:
    raise SystemExit(f"{mutation.name}: the text to mutate occurs {count} "
                     f"times in {mutation.path}; update the mutation")
  path.write_text(text.replace(mutation.old, mutation.new))


def _run_tests(tree: pathlib.Path, tests: Sequence[str]) -> Tuple[bool, str]:
  """(passed, the first failing test or the last lines) of pytest -x."""
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
       *tests], cwd=tree, capture_output=True, text=True)
  failed = [line.split()[1] for line in result.stdout.splitlines()
            if line.startswith(("FAILED ", "ERROR "))]
  return result.returncode == 0, (failed[0] if failed else
                                  result.stdout.strip()[-300:])


def main(names: List[str]) -> int:
  chosen = [m for m in MUTATIONS if not names or m.name in names]
  unknown = set(names) - {m.name for m in MUTATIONS}
  if unknown:
    raise SystemExit(f"unknown mutations {sorted(unknown)}; known: "
                     f"{[m.name for m in MUTATIONS]}")
  with tempfile.TemporaryDirectory() as directory:
    tree = pathlib.Path(directory)
    _copy_tree(tree)
    tests = sorted({t for m in chosen for t in m.tests})
    passed, detail = _run_tests(tree, tests)
    if not passed:
      raise SystemExit(f"The tests fail without any mutation: {detail}")
  rows, survived = [], 0
  for mutation in chosen:
    with tempfile.TemporaryDirectory() as directory:
      tree = pathlib.Path(directory)
      _copy_tree(tree)
      _apply(tree, mutation)
      started = time.perf_counter()
      passed, detail = _run_tests(tree, mutation.tests)
      seconds = time.perf_counter() - started
    survived += passed
    rows.append(f"| `{mutation.name}` | {mutation.what} | `{mutation.path}` | "
                f"{'**SURVIVED**' if passed else 'caught by `' + detail + '`'}"
                f" | {seconds:.0f} |")
    print(rows[-1], flush=True)
  print("\n| mutation | what it does | file | result | s |\n|---|---|---|---|---|")
  print("\n".join(rows))
  print(f"\n{len(rows) - survived} of {len(rows)} mutations caught.")
  return 1 if survived else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
