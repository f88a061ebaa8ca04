"""Ensembles in the experiment (METHODS §5b) on the session's tiny real problem: the gold
ensemble grows from the cache without retraining, a method's seeds as one ensemble are its
single runs with the member keys, and the ε score passes the protocol's two sanity checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import methods, train
from tmu_jax.evaluation import epsilon as eps_lib
from tmu_jax.evaluation.settings import Evaluation
from tmu_jax.experiment import ensembles, evaluate
from tmu_jax.train import ensemble as E


def _max_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                           jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """One gold-ensemble cache for the module: the sanity check grows what the growth test left."""
  return str(tmp_path_factory.mktemp("gold_cache"))


def _gold(tiny, size, cache):
  config = tiny.config.copy_and_resolve_references()
  config.cache_dir = cache
  return ensembles.gold_ensemble(config, tiny.workdir, tiny.problem, tiny.gold,
                                 tiny.models.gold_key, size)


def test_gold_ensemble_grows_from_the_cache(tiny, cache):
  """G = 3 trains members 1–2; G = 5 then trains only 3–4 and keeps 0–2 bit for bit; G = 2 is
  a slice of the cache (nothing trained); member 0 is M_g; members differ."""
  ens3, info = _gold(tiny, 3, cache)
  assert (info["trained"], info["cached"], E.size(ens3)) == (2, 0, 3)
  ens5, info = _gold(tiny, 5, cache)
  assert (info["trained"], info["cached"], E.size(ens5)) == (2, 2, 5)
  assert _max_diff(E.members(ens5, 0, 3).params, ens3.params) == 0.0
  ens2, info = _gold(tiny, 2, cache)
  assert (info["trained"], info["cached"], E.size(ens2)) == (0, 2, 2)
  assert _max_diff(E.member(ens5, 0).params, tiny.gold.params) == 0.0
  assert _max_diff(E.member(ens5, 1).params, E.member(ens5, 2).params) > 1e-3


def test_method_seeds_are_single_runs_with_the_member_keys(tiny):
  """finetune and neg_grad (with its in-graph stop rule) run as 2 seeds in one program equal
  the single runs whose key is member 1's and member 2's (tolerance 1e-6; measured 0)."""
  key = jax.random.key(3)
  keys = train.member_keys(key, 3)
  for name, settings in (("finetune", methods.get("finetune").settings(epochs=1)),
                         ("neg_grad", methods.get("neg_grad").settings(max_steps=20))):
    fn = methods.get(name).fn
    ctx = tiny.context(key)
    ctx.members = 2
    both = fn(ctx, settings)
    for i in (1, 2):
      single = fn(tiny.context(keys[i]), settings)
      assert _max_diff(E.member(both.state, i - 1).params, single.state.params) <= 1e-6, name


def _null_quality(n: int, settings, examples: int = 2000) -> float:
  """F of two samples of n from one distribution (the ceiling at n models a side: the max over
  many rules is biased up, so identical distributions do not score F = 1 at small n)."""
  rng = np.random.default_rng(0)
  e = eps_lib.epsilon_per_example(rng.normal(size=(n, examples)),
                                  rng.normal(size=(n, examples)), settings)
  return eps_lib.forgetting_quality(e, settings)


def test_epsilon_sanity_checks_on_a_real_problem(tiny, cache):
  """METHODS §5b's sanity checks, N = 6 (12 gold models): the held-out gold half scored as the
  'unlearned' half scores the maximum attainable at N = 6 — the F of two samples of one
  distribution, 0.22 (measured: 0.2125 on the 30 forget images), not 1 — and the untouched M_o
  (which memorized D_f: its accuracy there is far above gold's) scores F = 0, and still far
  below retraining without the point-mass guard."""
  n = 6
  ens, _ = _gold(tiny, 2 * n, cache)
  scorer, ref = tiny.models.scorer, tiny.models.ref
  scored = [scorer.score_and_logits(E.member(ens, i), ref) for i in range(2 * n)]
  gold = evaluate.Scored([s for s, _ in scored], np.stack([np.asarray(l) for _, l in scored]))
  labels = np.asarray(tiny.problem.take(tiny.problem.split.forget)[1])
  side = evaluate.gold_side(gold, labels, n, Evaluation(), 1.0)
  heldout = evaluate.Scored(gold.scores[n:], gold.logits_forget[n:])
  retrain = evaluate.epsilon_entry(heldout, side)
  row, logits = scorer.score_and_logits(tiny.original, ref)
  assert row["acc_forget"] > gold.values("acc_forget").mean() + 15  # M_o memorized D_f
  untouched = evaluate.Scored([row], np.asarray(logits)[None]).repeat(n)
  original = evaluate.epsilon_entry(untouched, side)
  ceiling = _null_quality(n, side.settings)
  print("F retrain", retrain["forget_quality"], "ceiling", ceiling, "F original",
        original["forget_quality"])
  # 30 examples, points std 0.07 under the null: ±0.06 is over 4 standard errors.
  assert abs(retrain["forget_quality"] - ceiling) <= 0.06
  assert original["forget_quality"] == 0.0
  loose = evaluate.gold_side(gold, labels, n, Evaluation(point_mass_ratio=0.0), 1.0)
  unguarded = evaluate.epsilon_entry(untouched, loose)["forget_quality"]
  print("F original without the point-mass guard", unguarded)
  assert unguarded <= ceiling / 2
  assert 0.9 <= retrain["final_score"] / retrain["forget_quality"] <= 1.1


def test_label_auc_is_the_auc_against_gold_correctness(tiny):
  """Scorer.label_auc ranks scores against M_g's correctness on D_f: gold's own correctness as
  the score gives 1, its negation 0, and random scores equal the pairwise AUC (ties ½)."""
  from tmu_jax import metrics  # pylint: disable=import-outside-toplevel
  scorer, ref = tiny.models.scorer, tiny.models.ref
  y_f = tiny.problem.take(tiny.problem.split.forget)[1]
  easy = np.asarray(metrics.correct(ref.gold_logits_forget, y_f)).astype(bool)
  assert 0 < easy.sum() < easy.size
  assert scorer.label_auc(easy.astype(np.float32), ref) == 1.0
  assert scorer.label_auc(-easy.astype(np.float32), ref) == 0.0
  p = np.random.default_rng(0).random(easy.size)
  pairwise = (p[easy][:, None] > p[~easy][None]).mean()
  assert abs(scorer.label_auc(p, ref) - pairwise) < 1e-9
