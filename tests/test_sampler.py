"""Pair samplers: the smart sampler's distribution, exact resume, disjoint ranks, and make_pair_sampler."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import chisquare

from s2rcli.data.pairing import pair_features, save_pairs
from s2rcli.data.sampler import RandomPairSampler, SmartPairSampler, make_pair_sampler
from s2rcli.data.spfeat import SpfeatFile
from s2rcli.errors import S2RError

NEIGHBORS = np.array([[4, 1, 7], [2, 4, 0], [5, 6, 3]])
PROBS = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_draws_follow_the_probabilities():
    sampler = SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=3)
    draws = _take(sampler, 20_000)
    observed = np.zeros((3, 3))
    for syn, real in draws:
        row = NEIGHBORS[real].tolist()
        assert syn in row  # a real image is only ever paired with one of its neighbours
        observed[real, row.index(syn)] += 1
    per_real = observed.sum(axis=1)
    assert chisquare(per_real, np.full(3, 20_000 / 3)).pvalue > 1e-3  # real images uniform
    expected = PROBS * per_real[:, None]
    assert chisquare(observed.ravel(), expected.ravel()).pvalue > 1e-3
    np.testing.assert_allclose(observed / per_real[:, None], PROBS, atol=0.02)


def test_zero_probability_neighbours_are_never_drawn():
    probs = np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    draws = _take(SmartPairSampler(NEIGHBORS, probs, n_synthetic=8, seed=0), 3000)
    assert {s for s, r in draws if r == 0} == {1}
    assert {s for s, r in draws if r == 1} == {2, 0}
    assert {s for s, r in draws if r == 2} == {3}


def test_resume_continues_bit_exactly():
    a = SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=11)
    _take(a, 37)
    state = a.state_dict()
    rest = _take(a, 50)
    b = SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=11)
    b.load_state_dict(state)
    assert _take(b, 50) == rest
    assert state["kind"] == "SmartPairSampler" and state["position"] == 37
    with pytest.raises(ValueError, match="RandomPairSampler"):
        RandomPairSampler(8, 3).load_state_dict(state)


def test_same_seed_same_stream_other_seed_other_stream():
    one = _take(SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=5), 200)
    assert one == _take(SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=5), 200)
    assert one != _take(SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=6), 200)


def test_ranks_take_disjoint_interleaved_draws():
    single = _take(SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=2), 300)
    ranks = [_take(SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=8, seed=2, rank=r, world_size=3), 100)
             for r in range(3)]
    for r in range(3):
        assert ranks[r] == single[r::3]  # rank r draws k = r, r+3, ...: together the whole stream, once
    assert ranks[0] != ranks[1]


def test_invalid_tables_are_rejected():
    with pytest.raises(ValueError):
        SmartPairSampler(NEIGHBORS, PROBS[:2], n_synthetic=8)
    with pytest.raises(ValueError):
        SmartPairSampler(NEIGHBORS, PROBS, n_synthetic=5)  # index 7 does not exist
    with pytest.raises(ValueError):
        SmartPairSampler(NEIGHBORS, PROBS * 2, n_synthetic=8)


# --- make_pair_sampler ----------------------------------------------------------------------


class Named:
    def __init__(self, names):
        self.names = list(names)

    def __len__(self):
        return len(self.names)


def _pairs_file(tmp_path, real_names, syn_names, k=2):
    rng = np.random.default_rng(0)
    real_f = rng.random((len(real_names), 4)).astype(np.float32)
    syn_f = rng.random((len(syn_names), 4)).astype(np.float32)
    result = pair_features(real_f, syn_f, k=k)

    def file(names, feats):
        return SpfeatFile(features=feats, names=np.asarray(names), levels=(1,), space="toy4", num_classes=4,
                          spec="fake:/x", class_pixels=np.zeros((len(names), 4), np.int64), source="labels")

    return save_pairs(tmp_path / "pairs.npz", result, file(real_names, real_f), file(syn_names, syn_f)), result


def test_make_pair_sampler_maps_names_onto_dataset_order(tmp_path):
    real_names = [f"r{i}" for i in range(5)]
    syn_names = [f"s{i}" for i in range(9)]
    path, result = _pairs_file(tmp_path, real_names, syn_names)
    # the datasets list the same images in another order
    real_ds, syn_ds = Named(real_names[::-1]), Named(syn_names[3:] + syn_names[:3])
    sampler = make_pair_sampler(True, path, syn_ds, real_ds, seed=1, rank=0, world_size=1)
    assert isinstance(sampler, SmartPairSampler)
    allowed = {real_names[i]: {syn_names[j] for j in result.neighbors[i]} for i in range(5)}
    seen = set()
    for syn, real in _take(sampler, 400):
        assert syn_ds.names[syn] in allowed[real_ds.names[real]]
        seen.add(real)
    assert seen == set(range(5))


def test_make_pair_sampler_random_and_errors(tmp_path):
    sampler = make_pair_sampler(False, None, Named("abc"), Named("xy"), seed=0, rank=1, world_size=2)
    assert isinstance(sampler, RandomPairSampler) and (sampler.n_synthetic, sampler.n_real) == (3, 2)
    assert sampler.rank == 1 and sampler.world_size == 2
    with pytest.raises(S2RError, match="needs a pairs file"):
        make_pair_sampler(True, None, Named("abc"), Named("xy"), seed=0, rank=0, world_size=1)
    with pytest.raises(S2RError, match="pairs file not found"):
        make_pair_sampler(True, tmp_path / "nope.npz", Named("abc"), Named("xy"), seed=0, rank=0, world_size=1)
    path, _ = _pairs_file(tmp_path, ["r0", "r1"], ["s0", "s1", "s2"])
    with pytest.raises(S2RError, match="does not match the real dataset") as err:
        make_pair_sampler(True, path, Named(["s0", "s1", "s2"]), Named(["r0", "other"]), seed=0, rank=0, world_size=1)
    assert "r1" in str(err.value) and "prepare pairs" in str(err.value)
    with pytest.raises(S2RError, match="does not match the synthetic dataset"):
        make_pair_sampler(True, path, Named(["s0", "s1", "s2", "s3"]), Named(["r0", "r1"]), seed=0, rank=0,
                          world_size=1)
