"""TMU (METHODS §2): the NF / AF / CF features, standardisation, the twin problem's sizing and
draws, the content-keyed sharing of twin artefacts between variants (never between problems or
start models), and TMU / TMU+ pinned on the session's tiny real problem (conftest ``tiny``)."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from tmu_jax import rng, train
from tmu_jax.experiment import runs
from tmu_jax.methods import baselines, tmu
from tmu_jax.methods.tmu import classifier, features as F, twin
from tmu_jax.methods.tmu.settings import AF

N_FORGET, N_RETAIN = 30, 1970


def method_key(tiny, name):
  """The key run_method gives method ``name``."""
  return rng.named(rng.seed_key(tiny.problem.seed), f"method/{name}")


def _brute(q, r, k):
  d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
  return np.sort(d, axis=1)[:, :min(k, r.shape[0])].mean(1)


@pytest.mark.parametrize("n,m,qc,rc", [
    (10, 37, 4, 8),  # both padded, several chunks each
    (8, 16, 8, 16),  # exact chunk edges
    (5, 3, 4, 4),  # fewer references than k
    (33, 100, 512, 4096),  # one chunk each (defaults)
])
def test_nearest_distance_matches_brute_force(n, m, qc, rc):
  """Chunked running top-k equals the brute-force mean of the k smallest distances."""
  gen = np.random.default_rng(n * m)
  q = gen.normal(size=(n, 6)).astype(np.float32)
  r = gen.normal(size=(m, 6)).astype(np.float32)
  got = F.nearest_distance(jnp.asarray(q), jnp.asarray(r), k=5, query_chunk=qc, ref_chunk=rc)
  np.testing.assert_allclose(got, _brute(q, r, 5), rtol=1e-4, atol=1e-4)


def test_nf_feature_matches_brute_force(tiny):
  """NF of D_f with M_o: brute-force k-NN over L2-normalised penultimate features of class c."""
  ctx, problem = tiny.context(), tiny.problem
  x_f, _ = problem.take(problem.split.forget)
  x_c, _ = problem.take(problem.class_rows(problem.split.retain))
  got = F.nf_feature(ctx.model, tiny.original.variables, x_f, x_c, k=5, batch_size=64,
                     ref_chunk=100)
  unit = lambda x: (lambda p: p / np.linalg.norm(p, axis=1, keepdims=True))(
      np.asarray(train.predict(ctx.model, tiny.original.variables, x)[1], np.float64))
  np.testing.assert_allclose(got, _brute(unit(x_f), unit(x_c), 5), rtol=1e-4, atol=1e-5)


def test_af_at_zero_budget_is_the_clean_entropy(tiny):
  """eps = 0: x_adv = x, so AF = −Σ p log p(x) = H(p); eps > 0: AF ≥ H(p) (Gibbs), > on average."""
  ctx = tiny.context()
  x, y = tiny.problem.take(tiny.problem.split.forget)
  p = jax.nn.softmax(ctx.logits(tiny.original, x))
  entropy = np.asarray(-jnp.sum(p * jnp.log(p), -1))
  af0 = F.af_feature(ctx.model, tiny.original.variables, x, y, jax.random.key(2), eps=0.0,
                     steps=10)
  np.testing.assert_allclose(af0, entropy, rtol=1e-5, atol=1e-6)
  af = np.asarray(F.af_feature(ctx.model, tiny.original.variables, x, y, jax.random.key(2),
                               eps=8 / 255, steps=10))
  assert np.all(af >= entropy - 1e-5) and np.mean(af - entropy) > 0.1


def test_af_does_not_depend_on_batch_size(tiny):
  """Each example's PGD start is keyed by its index: batch size 7 and 1024 give the same AF."""
  ctx = tiny.context()
  x, y = tiny.problem.take(tiny.problem.split.forget)
  af = [F.af_feature(ctx.model, tiny.original.variables, x, y, jax.random.key(3), eps=4 / 255,
                     steps=10, batch_size=b) for b in (7, 1024)]
  # Equal to float32 round-off (matmuls of 7 vs 30 rows block differently: ≤ 3e-6 here);
  # other random starts move AF by orders of magnitude more (checked last).
  np.testing.assert_allclose(af[0], af[1], rtol=1e-5, atol=1e-5)
  other = F.af_feature(ctx.model, tiny.original.variables, x, y, jax.random.key(4), eps=4 / 255,
                       steps=10)
  assert np.max(np.abs(np.asarray(other) - np.asarray(af[1]))) > 1e-3


def test_standardizer_uses_twin_statistics():
  """Both problems are standardised with the twin set's mean and std (§2.3)."""
  twin_feats = np.array([[0.0, 10.0], [2.0, 30.0]])
  s = F.Standardizer.fit(twin_feats)
  np.testing.assert_allclose(s(twin_feats), [[-1, -1], [1, 1]])
  np.testing.assert_allclose(s(np.array([[1.0, 20.0]])), [[0, 0]])


def test_standardize_twin_or_own_statistics():
  """twin: D_f standardised with the twin set's statistics (§2.3); own: with its own, so D_f's
  z-scores have mean 0 and std 1 per feature and do not move under an affine shift of D_f."""
  r = np.random.default_rng(0)
  twin_feats = r.normal(size=(80, 3))
  forget = r.normal(size=(20, 3)) * 2.0 + 5.0
  t, f = F.standardize(twin_feats, forget, "twin")
  s = F.Standardizer.fit(twin_feats)
  np.testing.assert_allclose(t, s(twin_feats))
  np.testing.assert_allclose(f, s(forget))
  assert f.mean(0).min() > 1.0  # the shift survives twin statistics
  t2, own = F.standardize(twin_feats, forget, "own")
  np.testing.assert_allclose(t2, t)
  np.testing.assert_allclose(own.mean(0), 0, atol=1e-6)
  np.testing.assert_allclose(own.std(0), 1, atol=1e-5)
  _, moved = F.standardize(twin_feats, 3.0 * forget - 7.0, "own")
  np.testing.assert_allclose(moved, own, atol=1e-5)
  with pytest.raises(ValueError, match="valid: twin, own"):
    F.standardize(twin_feats, forget, "ranks")


def test_twin_size_rule():
  """|D_t| = round(|D_f|·(|D_r| + |D_f|)/|D_r|) (TMU Eq. 3)."""
  assert twin.twin_size(100, 47900) == 100
  assert twin.twin_size(4000, 44000) == 4364  # 4000·48000/44000 = 4363.6
  assert twin.twin_size(10, 10) == 20
  assert twin.twin_size(30, 1970) == 30  # the tiny problem


def test_predict_easy_thresholds():
  """half: p > 0.5; twin_rate: the round(rate·n) lowest p are hard; random: that many at random."""
  p = np.array([0.9, 0.8, 0.95, 0.7, 0.99])
  np.testing.assert_array_equal(classifier.predict_easy(p, "twin_rate", 0.4),
                                [True, False, True, False, True])
  np.testing.assert_array_equal(classifier.predict_easy(p, "half", 0.4), [True] * 5)
  rand = classifier.predict_easy(p, "random", 0.4, jax.random.key(0))
  assert (~rand).sum() == 2


def _crops(images, flip):
  """Every crop (zero padding 4) of every image, and their mirror images when ``flip``."""
  padded = np.pad(images[..., 0], ((0, 0), (4, 4), (4, 4)))
  out = [padded[:, i:i + 28, j:j + 28] for i in range(9) for j in range(9)]
  out += [o[:, :, ::-1] for o in out] if flip else []
  return {o.tobytes() for crop in out for o in crop}


@pytest.mark.parametrize("flip", [True, False])
def test_draw_twin_fills_a_short_pool_with_exact_copies(tiny, flip):
  """A pool of 50 drawn for 80: the 50 pool images, then 30 uint8 copies, each exactly a crop
  (and mirror, only with flip) of a pool image: augmentation moves pixels, never alters them."""
  problem = tiny.problem
  pool = problem.take(problem.class_rows(problem.split.holdout))[0]
  assert pool.shape[0] == 50
  drawn = np.asarray(twin.draw_twin(problem, jax.random.key(4), 80, flip=flip))
  assert drawn.shape == (80, 28, 28, 1) and drawn.dtype == np.uint8
  np.testing.assert_array_equal(drawn[:50], pool)
  copies = drawn[50:, ..., 0]
  assert {c.tobytes() for c in copies} <= _crops(np.asarray(pool), flip)
  mirrored = sum(c.tobytes() not in _crops(np.asarray(pool), False) for c in copies)
  assert (mirrored > 0) == flip  # flipped copies exist exactly when flips are allowed


def test_draw_twin_from_a_large_pool_has_no_repeats(tiny):
  """A pool of 50 drawn for 30: 30 distinct pool images, no augmentation."""
  problem = tiny.problem
  pool = {x.tobytes() for x in np.asarray(problem.take(
      problem.class_rows(problem.split.holdout))[0])}
  drawn = {x.tobytes() for x in np.asarray(twin.draw_twin(problem, jax.random.key(5), 30))}
  assert len(drawn) == 30 and drawn <= pool


def _new(x, *others):
  return all(x is not o for o in others)


def test_twin_artefacts_are_keyed_by_content(tiny, monkeypatch):
  """Variants with equal twin settings share one computation; another split, another M_o key or
  other twin settings in the same shared dict each get their own artefacts."""
  made = []

  def fake(ctx, s):
    made.append((ctx.problem.seed, ctx.original_key, s.twin_key))
    return dict(forget=np.asarray(ctx.problem.split.forget), n=len(made))

  monkeypatch.setattr(tmu, "compute_twin_artifacts", fake)
  shared = {}
  ctx0 = tiny.context()
  ctx0.shared = shared
  faithful = tmu.TMU()
  a = tmu.twin_artifacts(ctx0, faithful)[0]
  variant = tmu.TMU(balanced=True, threshold="twin_rate", features="nf,cf")
  assert tmu.twin_artifacts(ctx0, variant)[0] is a and len(made) == 1  # downstream-only changes

  problem1 = runs.make_problem(tiny.config, tiny.problem.dataset, 6, 1)  # another split (seed 1)
  ctx1 = tiny.context()
  ctx1.problem, ctx1.shared = problem1, shared
  b = tmu.twin_artifacts(ctx1, faithful)[0]
  assert b is not a and len(made) == 2
  np.testing.assert_array_equal(b["forget"], problem1.split.forget)  # its own problem's
  assert not np.array_equal(a["forget"], b["forget"])
  problem2 = runs.make_problem(tiny.config, tiny.problem.dataset, 0, 0)  # another forget class
  ctx2 = tiny.context()
  ctx2.problem, ctx2.shared = problem2, shared
  assert _new(tmu.twin_artifacts(ctx2, faithful)[0], a, b) and len(made) == 3

  ctx3 = tiny.context()
  ctx3.shared, ctx3.original_key = shared, "another-M_o"  # same split, another M_o
  assert _new(tmu.twin_artifacts(ctx3, faithful)[0], a, b) and len(made) == 4
  other_twins = tmu.TMU(af=AF(eps=8 / 255))
  assert tmu.twin_artifacts(ctx0, other_twins)[0] is not a and len(made) == 5
  assert tmu.twin_artifacts(ctx0, faithful)[0] is a and len(made) == 5  # still there


class _Seen(Exception):
  """Raised by the stub below once it has recorded its context."""


def test_start_model_keys_twin_artefacts(tiny, monkeypatch):
  """apply_method keys the start model: M_o by its cache key, any other start (a continual
  round's model) by its weights, so a variant from another start never reuses M_o's twins."""
  seen = []

  def record(ctx, s):
    seen.append(ctx.original_key)
    raise _Seen

  monkeypatch.setattr(tmu, "compute_twin_artifacts", record)
  for start in (tiny.original, tiny.gold, tiny.gold):
    with pytest.raises(_Seen):
      runs.apply_method(tiny.config, tiny.problem, tiny.models, start, "tmu",
                        jax.random.key(0), {})
  assert seen[0] == tiny.models.original_key
  assert seen[1] != seen[0] and seen[1] == seen[2]  # content, not identity


# What each TMU variant does on the tiny problem: (steps, stop, predicted hard, correct on D_f,
# correct on D_r, its easy/hard prediction right against gold on D_f). M_o: 28/30, 1952/1970.
PINNED = dict(
    tmu=(80, "", 9, 27, 1957, 21),  # random labels on the 9 hard: only 1 of them flips
    tmu_rate=(80, "", 11, 24, 1954, 21),  # the twin-rate threshold: 11 hard, same features
    tmu_plus=(8, "all_flipped", 11, 10, 1862, 23),  # runner-up labels until all 11 hard flip
)


@pytest.fixture(scope="module")
def tmu_runs(tiny):
  """tmu, a variant and tmu_plus sharing its twin settings, run as the experiment runs them
  (one shared dict, the experiment's keys), counting the twin computations."""
  config = tiny.config.copy_and_resolve_references()
  config.methods.tmu_rate = default.tmu_variant(config.methods.tmu, threshold="twin_rate")
  config.methods.tmu_plus.n_twins = 1  # TMU+'s twin settings then equal TMU's: shared too
  config.methods.tmu_plus.twin = ml_collections.ConfigDict(config.methods.tmu.twin.to_dict())
  real, calls, shared, out = tmu.compute_twin_artifacts, [], {}, {}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tmu, "compute_twin_artifacts", lambda ctx, s: calls.append(s) or real(ctx, s))
    for name in PINNED:
      state, entries, result = runs.apply_method(config, tiny.problem, tiny.models,
                                                 tiny.original, name, method_key(tiny, name),
                                                 shared)
      out[name] = (state, entries, result, len(calls))
  out["shared"] = shared
  return out


def _correct(tiny, state):
  x_f, y_f = tiny.problem.take(tiny.problem.split.forget)
  return np.asarray(jnp.argmax(tiny.models.scorer.logits(state, x_f), -1) == y_f)


@pytest.mark.parametrize("name", list(PINNED))
def test_tmu_variant_outcome(tiny, tmu_runs, name):
  """Each variant's steps, predicted-hard count, D_f / D_r correct counts and label accuracy."""
  state, entries, result, _ = tmu_runs[name]
  acc = tiny.models.scorer.accuracies(state)
  label_acc = tiny.models.scorer.label_accuracy(result.pred_easy, tiny.models.ref)
  assert (result.steps, result.stopped, entries["pred_hard"],
          round(acc["acc_forget"] * N_FORGET / 100), round(acc["acc_retain"] * N_RETAIN / 100),
          round(label_acc * N_FORGET / 100)) == PINNED[name]
  assert entries["pred_hard"] == int((~result.pred_easy).sum())
  assert entries["twin_size"] == 30 and entries["group"] == "tmu"
  assert result.arrays["forget"].shape == (N_FORGET, 3)


def test_variants_share_twin_artefacts(tmu_runs):
  """tmu, tmu_rate and tmu_plus (here with tmu's twin settings) compute the twins once."""
  assert [tmu_runs[name][3] for name in PINNED] == [1, 1, 1]
  for name in ("tmu_rate", "tmu_plus"):
    a, b = tmu_runs["tmu"][2].arrays, tmu_runs[name][2].arrays
    for k in ("twin", "twin_easy", "forget"):
      np.testing.assert_array_equal(a[k], b[k])
  assert tmu_runs["tmu"][2].arrays["twin"].shape == (30, 3)


def test_faithful_tmu_keeps_predicted_easy(tiny, tmu_runs):
  """Faithful TMU: predicted-easy samples M_o had right stay right; of the 9 predicted hard,
  random labels flip just 1 (sample 29)."""
  state, _, result, _ = tmu_runs["tmu"]
  before, after, easy = _correct(tiny, tiny.original), _correct(tiny, state), result.pred_easy
  assert np.all(after[easy & before])
  assert np.flatnonzero(~easy & ~after).tolist() == [29]


def test_tmu_plus_flips_every_predicted_hard(tiny, tmu_runs):
  """TMU+: every predicted-hard sample ends misclassified; but runner-up training also flips 7
  of the 17 predicted-easy samples M_o had right (the easy ones are *not* all kept)."""
  state, _, result, _ = tmu_runs["tmu_plus"]
  before, after, easy = _correct(tiny, tiny.original), _correct(tiny, state), result.pred_easy
  assert not after[~easy].any()
  assert (int((easy & before).sum()), int((easy & before & after).sum())) == (17, 10)


def test_tmu_through_run_method_saves_features(tiny, tmu_runs, tmp_path):
  """run_method scores TMU as run above (label_acc 21/30) and saves its per-sample features;
  given the run's shared dict it reuses the twins."""
  out = runs.run_method(tiny.config, str(tmp_path), tiny.problem, tiny.models, "tmu",
                        shared=tmu_runs["shared"])
  assert not out["cached"] and out["label_acc"] == pytest.approx(100 * PINNED["tmu"][5] / 30)
  assert out["pred_hard"] == PINNED["tmu"][2]
  assert round(out["acc_forget"] * N_FORGET / 100) == PINNED["tmu"][3]
  saved = np.load(tmp_path / out["features_file"])
  np.testing.assert_array_equal(saved["forget"], tmu_runs["tmu"][2].arrays["forget"])
  assert saved["p_easy"].shape == (N_FORGET,)
  json.dumps(out)  # JSON-able as results.json needs


def test_twins_as_one_ensemble(tiny):
  """twin.ensemble trains the M_t of every draw as one program: twin j is the single fit on the
  shared stream with twin j's weights (its own D_t rows 1, the other draws' 0) to 1e-6, and
  each M_t learns its own D_t (accuracy above M_o's after 2 epochs)."""
  s = tmu.TMU(n_twins=2, twin=tmu.settings.Twin(epochs=2, repeat=3, ensemble=True))
  ctx = tiny.context()
  size = twin.twin_size(len(tiny.problem.split.forget), len(tiny.problem.split.retain))
  x_twins = [twin.draw_twin(tiny.problem, jax.random.key(10 + j), size) for j in range(2)]
  keys = jnp.stack([jax.random.key(20 + j) for j in range(2)])
  together = twin.train_twins_together(ctx, s, x_twins, keys)
  x_p, y_p = tiny.problem.take(tiny.problem.train_portion)
  images = jnp.concatenate([x_p] + [x for x in x_twins for _ in range(3)])
  labels = jnp.concatenate([y_p, jnp.full((2 * 3 * size,), tiny.problem.forget_class,
                                          jnp.int32)])
  opt = train.Optimizer("sgd", s.twin.lr, 0.9, ctx.recipe.weight_decay)
  y_t = jnp.full((size,), tiny.problem.forget_class, jnp.int32)
  for j in range(2):
    w = np.r_[np.ones(len(y_p)), np.repeat(np.arange(2) == j, 3 * size)].astype(np.float32)
    stream = train.Stream(dict(image=images, label=labels, weight=jnp.asarray(w)), 128)
    single, _ = train.fit(train.start_from(tiny.original, opt), stream, spec=ctx.spec_for(opt),
                          epochs=2, key=keys[j], verbose=False)
    member = train.ensemble.member(together, j)
    d = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(member.params),
                                                           jax.tree.leaves(single.params)))
    assert d <= 1e-6
    own = train.accuracy(ctx.model, member.variables, x_twins[j], y_t)
    before = train.accuracy(ctx.model, tiny.original.variables, x_twins[j], y_t)
    print(f"twin {j}: M_o {before:.1f}% on its D_t, M_t {own:.1f}%")
    assert own > before  # it learns its own D_t


def test_twin_retain_fraction_subsamples_d_r_only(tiny):
  """twin.retain_fraction = 0.25: M_t's rows besides D_t are a quarter of D_r (drawn from the
  problem's seed, the same for every variant) and all of D_f; 1.0 is the whole T."""
  ctx = tiny.context()
  split = tiny.problem.split
  full = twin.twin_portion(ctx, tmu.TMU())
  np.testing.assert_array_equal(full, tiny.problem.train_portion)
  s = tmu.TMU(twin=tmu.settings.Twin(retain_fraction=0.25))
  part = twin.twin_portion(ctx, s)
  assert set(split.forget) <= set(part)
  kept = np.setdiff1d(part, split.forget)
  assert set(kept) <= set(split.retain) and len(kept) == round(0.25 * len(split.retain))
  np.testing.assert_array_equal(part, twin.twin_portion(tiny.context(jax.random.key(9)), s))


def test_heldout_auc_by_draw():
  """The held-out AUC (one fold per twin draw) is near 1 when the label is a feature's sign and
  near 0.5 when the labels are shuffled (a classifier that only memorizes scores chance)."""
  r = np.random.default_rng(0)
  z = r.normal(size=(4 * 60, 3)).astype(np.float32)
  easy = z[:, 0] > 0
  s = tmu.TMU(clf=tmu.settings.Classifier(epochs=30))
  good = tmu.heldout_auc(s, z, easy, 4, jax.random.key(0))
  chance = tmu.heldout_auc(s, z, r.permutation(easy), 4, jax.random.key(0))
  print("held-out AUC", good, "shuffled", chance)
  assert good > 0.95
  assert 0.3 < chance < 0.7
  assert np.isnan(tmu.heldout_auc(s, z, easy, 1, jax.random.key(0)))


def test_classifier_members_average_and_member_zero_is_the_single_classifier():
  """``clf.members`` = 3 trains three classifiers as one ensemble: member 0 is the classifier
  ``members`` = 1 trains from the same key, the others differ, and p(easy) is their mean."""
  r = np.random.default_rng(1)
  z = r.normal(size=(200, 3)).astype(np.float32)
  easy = (z[:, 0] + 0.5 * r.normal(size=200)) > 0
  one = tmu.TMUPlus(clf=tmu.settings.Classifier(epochs=5))
  three = tmu.TMUPlus(clf=tmu.settings.Classifier(epochs=5, members=3))
  key = jax.random.key(3)
  single = classifier.train_label_classifier(one, z, easy, key, False)
  ens = classifier.train_label_classifier(three, z, easy, key, False)
  assert train.ensemble.size(ens) == 3
  p1 = classifier.easy_probability(single, z)
  parts = [classifier.easy_probability(train.ensemble.member(ens, i), z) for i in range(3)]
  np.testing.assert_allclose(parts[0], p1, atol=1e-5)
  assert np.abs(parts[1] - parts[0]).max() > 1e-3  # its own init and batch order
  np.testing.assert_allclose(classifier.easy_probability(ens, z), np.mean(parts, axis=0),
                             atol=1e-6)
  assert classifier.auc(classifier.easy_probability(ens, z), easy) > 0.8


def test_disjoint_twin_draws_share_no_image(tiny):
  """twin.disjoint: draws that the pool fills whole share no image (distinct = n·|D_t|); the
  default independent draws of the same sizes repeat some (this key); a draw past the
  pool's end is topped up (as draw_twin does) and so overlaps the others."""
  problem = tiny.problem
  pool = len(problem.class_rows(problem.split.holdout))
  key = jax.random.key(4)
  size = pool // 3
  draws = twin.draw_disjoint_twins(problem, key, size, 3)
  assert [int(d.shape[0]) for d in draws] == [size] * 3
  assert twin.distinct_images(draws) == 3 * size
  independent = [twin.draw_twin(problem, jax.random.fold_in(key, j), size) for j in range(3)]
  assert twin.distinct_images(independent) < 3 * size
  over = twin.draw_disjoint_twins(problem, key, size, 4)  # the 4th block does not fit
  assert twin.distinct_images(over[:3]) == 3 * size
  assert twin.distinct_images(over) < 4 * size


def test_short_pool_draws_put_pool_images_first(tiny):
  """A draw larger than the pool holds every pool image in its first rows, then augmented
  copies; original_mask marks exactly those rows (the rows rate_from = "originals" counts)."""
  problem = tiny.problem
  rows = problem.class_rows(problem.split.holdout)
  pool = np.asarray(problem.take(rows)[0])
  size = len(rows) + 7
  draw = np.asarray(twin.draw_twin(problem, jax.random.key(2), size))
  as_set = lambda a: {x.tobytes() for x in a}
  assert as_set(draw[:len(rows)]) == as_set(pool)
  assert not as_set(draw[len(rows):]) <= as_set(pool)  # the copies are new images
  mask = twin.original_mask(size, len(rows), 2)
  assert mask.shape == (2 * size,) and mask.sum() == 2 * len(rows)
  assert mask[:len(rows)].all() and not mask[len(rows):size].any()
  assert twin.original_mask(5, 100, 3).all()  # a pool that holds the draw: every row


def test_oracle_reference_uses_gold_labels_and_only_it_sees_gold(tiny):
  """tmu_plus_oracle's easy/hard split is M_g's correctness on D_f (label accuracy 100) and it
  is not a main-table method; a method that does not declare needs "gold" gets no gold."""
  seen = {}

  def recording(real, name):
    def wrapped(ctx, *args, **kwargs):
      seen[name] = ctx.gold_easy
      return real(ctx, *args, **kwargs)
    return wrapped

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tmu, "aligned_unlearning", recording(tmu.aligned_unlearning, "tmu_plus_oracle"))
    mp.setattr(baselines, "start", recording(baselines.start, "finetune"))
    _, entries, result = runs.apply_method(tiny.config, tiny.problem, tiny.models,
                                           tiny.original, "tmu_plus_oracle",
                                           method_key(tiny, "tmu_plus_oracle"), {})
    runs.apply_method(tiny.config, tiny.problem, tiny.models, tiny.original, "finetune",
                      method_key(tiny, "finetune"), {})
  y_f = np.asarray(tiny.problem.take(tiny.problem.split.forget)[1])
  gold_right = np.asarray(tiny.models.ref.gold_logits_forget).argmax(-1) == y_f
  assert 0 < gold_right.sum() < len(gold_right)  # both kinds present: the test can fail
  np.testing.assert_array_equal(result.pred_easy, gold_right)
  np.testing.assert_array_equal(seen["tmu_plus_oracle"], gold_right)
  assert seen["finetune"] is None
  assert tiny.models.scorer.label_accuracy(result.pred_easy, tiny.models.ref) == 100.0
  assert entries["paper"] is False and entries["pred_hard"] == int((~gold_right).sum())


def test_unlearning_without_the_stop_rule_and_without_the_easy_samples(tiny):
  """``unlearn.stop_when_flipped = False`` runs every epoch (steps = epochs × ceil(rows /
  batch)); ``keep_easy = False`` leaves predicted-easy D_f out of those rows. On the oracle
  (gold's labels, so the split is fixed) the default stops early instead."""
  config = tiny.config.copy_and_resolve_references()
  hard_repeat = config.methods.tmu_plus.unlearn.hard_repeat
  y_f = np.asarray(tiny.problem.take(tiny.problem.split.forget)[1])
  n_easy = int((np.asarray(tiny.models.ref.gold_logits_forget).argmax(-1) == y_f).sum())
  n_hard = N_FORGET - n_easy
  steps = {}
  for name, keep, stop in (("o_default", True, True), ("o_all_epochs", True, False),
                           ("o_no_easy", False, False)):
    v = default.tmu_variant(config.methods.tmu_plus, base_method="tmu_plus_oracle")
    v.unlearn.keep_easy, v.unlearn.stop_when_flipped = keep, stop
    # A batch of n_easy rows: leaving the easy rows out is then exactly one step an epoch less.
    v.unlearn.batch_size, v.unlearn.epochs = n_easy, 2
    config.methods[name] = v
    _, _, result = runs.apply_method(config, tiny.problem, tiny.models, tiny.original, name,
                                     method_key(tiny, name), {})
    steps[name] = (result.steps, result.stopped)
  assert 0 < n_easy < N_FORGET
  rows = lambda easy: N_RETAIN + easy + hard_repeat * n_hard
  per_epoch = lambda easy: -(-rows(easy) // n_easy)
  assert per_epoch(n_easy) == per_epoch(0) + 1
  assert steps["o_all_epochs"] == (2 * per_epoch(n_easy), "")
  assert steps["o_no_easy"] == (2 * per_epoch(0), "")
  assert steps["o_default"][1] == "all_flipped" and steps["o_default"][0] < per_epoch(n_easy)


@pytest.mark.parametrize("n,m,qc,rc", [(10, 37, 4, 8), (5, 3, 4, 4), (33, 100, 512, 4096)])
def test_neighbour_label_share_matches_brute_force(n, m, qc, rc):
  """The chunked running top-k's labels: the share of the k nearest references labelled cls."""
  gen = np.random.default_rng(n + m)
  q = gen.normal(size=(n, 6)).astype(np.float32)
  r = gen.normal(size=(m, 6)).astype(np.float32)
  labels = gen.integers(0, 3, size=m)
  got = F.neighbour_label_share(jnp.asarray(q), jnp.asarray(r), jnp.asarray(labels), 1, k=5,
                                query_chunk=qc, ref_chunk=rc)
  d = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
  near = np.argsort(d, axis=1)[:, :min(5, m)]
  np.testing.assert_allclose(got, (labels[near] == 1).mean(1), atol=1e-6)


def test_kf_feature_is_the_pixel_cosine_neighbour_share(tiny):
  """KF of D_f: the share of its 10 nearest D_r images (cosine of the pixel vectors) that are
  of the forget class, by brute force; and in [0, 1]."""
  problem = tiny.problem
  x_f, _ = problem.take(problem.split.forget)
  x_r, y_r = problem.take(problem.split.retain)
  got = np.asarray(F.kf_feature(x_f, x_r, y_r, problem.forget_class, k=10, ref_chunk=300))
  unit = lambda x: (lambda p: p / np.linalg.norm(p, axis=1, keepdims=True))(
      np.asarray(x, np.float64).reshape(x.shape[0], -1))
  near = np.argsort(-(unit(x_f) @ unit(x_r).T), axis=1)[:, :10]
  np.testing.assert_allclose(got, (np.asarray(y_r)[near] == problem.forget_class).mean(1),
                             atol=1e-6)
  assert 0.0 <= got.min() and got.max() <= 1.0 and got.std() > 0


def test_kf_variant_adds_a_fourth_column_on_the_shared_twins(tiny, tmu_runs):
  """features = nf,af,cf,kf: the same twin artefacts (no second twin computation), NF/AF/CF
  unchanged, a fourth column equal to kf_columns, and the classifier on four inputs."""
  config = tiny.config.copy_and_resolve_references()
  config.methods.tmu_plus.n_twins = 1
  config.methods.tmu_plus.twin = ml_collections.ConfigDict(config.methods.tmu.twin.to_dict())
  config.methods.tmu_plus_kf = default.tmu_variant(config.methods.tmu_plus, base_method="tmu_plus",
                                                   features="nf,af,cf,kf")
  shared = tmu_runs["shared"]
  _, entries, result = runs.apply_method(config, tiny.problem, tiny.models, tiny.original,
                                         "tmu_plus_kf", method_key(tiny, "tmu_plus"), shared)
  assert entries["twins_reused"]
  base = tmu_runs["tmu_plus"][2].arrays
  assert result.arrays["twin"].shape == (30, 4) and result.arrays["forget"].shape == (N_FORGET, 4)
  np.testing.assert_array_equal(result.arrays["twin"][:, :3], base["twin"])
  np.testing.assert_array_equal(result.arrays["forget"][:, :3], base["forget"])
  art = next(v for k, v in shared.items() if k[0] == "tmu/twins")
  _, s = runs.settings_of(config, "tmu_plus_kf")
  twin_kf, forget_kf = tmu.kf_columns(tiny.problem, s, art)
  np.testing.assert_array_equal(result.arrays["twin"][:, 3], twin_kf)
  np.testing.assert_array_equal(result.arrays["forget"][:, 3], forget_kf)
  assert result.pred_easy.shape == (N_FORGET,)
