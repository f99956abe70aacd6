import math

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import QED

from molgan.chem import is_valid
from molgan.filters import passes_filters
from molgan.metrics import properties
from molgan.rewards import (
    LOGP_RANGE,
    REWARD_COMPONENTS,
    SA_RANGE,
    KnownStructures,
    RewardFunction,
    clear_scores_cache,
    normalized_scores,
    scores_cache_info,
)


def test_components_and_ranges():
    assert REWARD_COMPONENTS == ("validity", "qed", "logp", "sa", "filters", "plausible", "uniqueness")
    assert LOGP_RANGE[0] < LOGP_RANGE[1] and SA_RANGE[0] < SA_RANGE[1]


def test_normalized_scores_of_benzene_by_hand():
    got = normalized_scores("c1ccccc1")
    assert set(got) == {"qed", "logp", "sa", "filters"}
    assert got["qed"] == pytest.approx(QED.qed(Chem.MolFromSmiles("c1ccccc1")))
    low, high = LOGP_RANGE
    assert got["logp"] == pytest.approx((1.6866 - low) / (high - low), abs=1e-5)
    assert got["sa"] == 1.0  # SA 1.0 is easier than the range's easy end
    assert got["filters"] == 1.0


def test_filters_component_is_the_moses_filter_verdict():
    cases = {
        "CC(=O)Oc1ccccc1C(=O)O": 1.0,  # aspirin
        "c1ccc2[nH]ccc2c1": 1.0,  # indole
        "C1CCCCCCCC1": 0.0,  # a 9-membered ring
        "C1=CC=CC=CC=CC=CC=CC=C1": 0.0,  # [14]annulene, the macrocycle generators find
        "C=CC=O": 0.0,  # acrolein, a Michael acceptor alert
        "N=Nc1ccccc1": 0.0,  # a diazene alert
    }
    for smiles, expected in cases.items():
        assert normalized_scores(smiles, components=("filters",)) == {"filters": expected}
        assert passes_filters(Chem.MolFromSmiles(smiles)) is bool(expected)
    out = RewardFunction({"validity": 1.0, "filters": 1.0})([*cases, "C.C"])
    assert out.tolist() == pytest.approx([*((1.0 + v) / 2 for v in cases.values()), 0.0])


def test_normalized_scores_follow_the_documented_maps():
    for s in ["CCO", "CC1=CC=CO1", "O=C1CCCN1", "NC(=O)CC#N", "C1C2CC3C1C23"]:
        props, got = properties(s), normalized_scores(s)
        low, high = LOGP_RANGE
        assert got["logp"] == pytest.approx((min(max(props["logp"], low), high) - low) / (high - low))
        easy, hard = SA_RANGE
        assert got["sa"] == pytest.approx((hard - min(max(props["sa"], easy), hard)) / (hard - easy))
        assert all(0.0 <= v <= 1.0 for v in got.values())


def test_normalized_scores_clip_at_both_ends():
    assert properties("OCC(O)C(O)C(O)C(O)CO")["logp"] < LOGP_RANGE[0]  # sorbitol
    assert normalized_scores("OCC(O)C(O)C(O)C(O)CO")["logp"] == 0.0
    assert properties("CCCCCCCCCC")["logp"] > LOGP_RANGE[1]  # decane
    assert normalized_scores("CCCCCCCCCC")["logp"] == 1.0
    hard = "C1C2C3C4C5C2C13CN45"  # a cage from QM9's hardest SA percentile
    assert properties(hard)["sa"] > SA_RANGE[1]
    assert normalized_scores(hard)["sa"] == 0.0


def test_normalized_scores_rejects_invalid():
    with pytest.raises(ValueError):
        normalized_scores("C(C)(C)(C)(C)C")


def test_repeats_hit_the_cache_and_cached_values_are_safe_to_mutate():
    clear_scores_cache()
    assert scores_cache_info().currsize == 0
    first = normalized_scores("CC(O)C(N)=O")
    first["qed"] = -1.0  # the caller owns the returned dict
    before = scores_cache_info()
    again = normalized_scores("CC(O)C(N)=O")
    after = scores_cache_info()
    assert after.hits == before.hits + 4 and after.misses == before.misses  # one per component
    assert 0.0 <= again["qed"] <= 1.0
    assert normalized_scores("CC(O)C(N)=O", components=("sa",)) == {"sa": again["sa"]}
    with pytest.raises(ValueError, match="not a scored component"):
        normalized_scores("CCO", components=("validity",))


def test_reward_computes_only_weighted_components():
    clear_scores_cache()
    RewardFunction({"validity": 1.0, "logp": 1.0, "uniqueness": 1.0})(["CCO", "CCN", "CCO"])
    info = scores_cache_info()
    assert (info.misses, info.hits, info.currsize) == (2, 1, 2)  # logp of 2 molecules, no QED/SA


def test_reward_batch_scores_each_distinct_molecule_once():
    clear_scores_cache()
    reward = RewardFunction({"qed": 1.0})
    reward(["CCO"] * 6 + ["CCN"] * 2 + [None, "C.C"])
    info = scores_cache_info()
    assert info.misses == 2  # CCO and CCN
    assert info.hits == 6  # the repeats
    reward(["CCO", "CCN"])
    assert scores_cache_info().hits == 8 and scores_cache_info().misses == 2


def test_validity_weight_alone_is_the_strict_indicator():
    batch = ["CCO", "C.C", None, "xx", "c1ccccc1", "C1.C1", "C(C)(C)(C)(C)C", "", "CN(=O)=O"]
    out = RewardFunction({"validity": 1.0})(batch)
    assert out.dtype == torch.float32 and out.shape == (9,)
    # The same verdicts as molgan.chem.is_valid: a nitro group that needs repair earns nothing.
    assert out.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert out.tolist() == [float(is_valid(s)) for s in batch]
    assert RewardFunction({"validity": 3.5, "qed": 0.0})(batch).tolist() == out.tolist()


def test_weighted_mean_of_components():
    qed = normalized_scores("c1ccccc1")["qed"]
    logp = normalized_scores("c1ccccc1")["logp"]
    out = RewardFunction({"validity": 1.0, "qed": 2.0, "logp": 1.0})(["c1ccccc1", "C.C"])
    assert out[0].item() == pytest.approx((1.0 + 2.0 * qed + logp) / 4.0, abs=1e-6)
    assert out[1].item() == 0.0
    mixed = RewardFunction({"validity": 1.0, "uniqueness": 1.0})(["CCO", "CCO", "CCN"])
    assert mixed.tolist() == pytest.approx([0.75, 0.75, 1.0])


def test_product_scales_the_uniqueness_term_by_the_property():
    qed = {s: normalized_scores(s)["qed"] for s in ("c1ccccc1", "CCO")}
    reward = RewardFunction({"validity": 5.0, "qed": 2.0, "uniqueness": 1.0}, combine="product")
    out = reward(["c1ccccc1", "c1ccccc1", "CCO", "C.C", None])
    # validity is 1 for every valid sample, so its weight does not matter in a product
    assert out.tolist() == pytest.approx(
        [qed["c1ccccc1"] ** 2 / 2, qed["c1ccccc1"] ** 2 / 2, qed["CCO"] ** 2, 0.0, 0.0], abs=1e-6)
    alone = RewardFunction({"validity": 1.0}, combine="product")(["CCO", "C1CC"])
    assert alone.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="combine must be one of"):
        RewardFunction({"qed": 1.0}, combine="sum")


def test_rewards_stay_in_unit_interval():
    batch = ["CCCCCCCCCC", "OCC(O)C(O)C(O)C(O)CO", "C1C2C3C4C5C2C13CN45", "c1ccccc1", "CCO"] * 3
    weights = dict.fromkeys(REWARD_COMPONENTS, 1.0)
    out = RewardFunction(weights, memory_size=4, known=KnownStructures.of(["CCO", "C1CC1"]))(batch)
    assert torch.all((out >= 0) & (out <= 1))
    assert RewardFunction({"logp": 1.0})(["CCCCCCCCCC"]).item() == 1.0
    assert RewardFunction({"logp": 1.0})(["OCC(O)C(O)C(O)C(O)CO"]).item() == 0.0


def test_uniqueness_within_batch_without_memory():
    reward = RewardFunction({"uniqueness": 1.0})
    batch = ["CCO", "CCO", "CCN", None, "CCO", "C.C"]
    expected = [1 / 3, 1 / 3, 1.0, 0.0, 1 / 3, 0.0]
    assert reward(batch).tolist() == pytest.approx(expected)
    assert reward(batch).tolist() == pytest.approx(expected)  # nothing remembered


def test_uniqueness_rolling_memory_counts_and_evicts():
    reward = RewardFunction({"uniqueness": 1.0}, memory_size=2)
    assert reward(["CCO", "CCO", "CCN"]).tolist() == pytest.approx([0.5, 0.5, 1.0])
    # memory now holds the last two valid SMILES: CCO, CCN
    assert reward(["CCO"]).tolist() == pytest.approx([0.5])  # 1 in batch + 1 in memory
    # memory: CCN, CCO
    assert reward([None, "C.C", "xx"]).tolist() == [0.0, 0.0, 0.0]  # invalid ones not remembered
    assert reward(["CCC"]).tolist() == pytest.approx([1.0])
    # memory: CCO, CCC (CCN evicted)
    assert reward(["CCN"]).tolist() == pytest.approx([1.0])
    # memory: CCC, CCN
    assert reward(["CCC", "CCN", "CCO"]).tolist() == pytest.approx([0.5, 0.5, 1.0])
    reward.reset_memory()
    assert reward(["CCC"]).tolist() == pytest.approx([1.0])


def test_uniqueness_counts_repeats_per_context_and_divides_by_the_largest_count():
    reward = RewardFunction({"uniqueness": 1.0}, memory_size=10)
    # The same molecule under two labels is new under each; twice under one label is a repeat.
    out = reward(["CCO", "CCO", "CCO", "CCN"], contexts=[("a",), ("b",), ("a",), ("a",)])
    assert out.tolist() == pytest.approx([1 / 2, 1, 1 / 2, 1])
    # Memory: CCO twice under a, once under b. Under both labels the larger count decides.
    assert reward(["CCO"], contexts=[("b", "a")]).tolist() == pytest.approx([1 / 3])
    assert reward.occurrences(["CCO", "CCO", "CCN", "CCC"], [("a",), ("b",), ("b",), ("a",)]) == [3, 2, 1, 1]
    # Without contexts a call counts over all samples, apart from the labelled keys.
    assert reward(["CCO"]).tolist() == pytest.approx([1.0])
    with pytest.raises(ValueError, match="at least one label"):
        reward(["CCO"], contexts=[()])


def test_labelled_memory_evicts_whole_samples_and_survives_a_checkpoint():
    reward = RewardFunction({"uniqueness": 1.0}, memory_size=2)
    reward(["CCO", "CCN", "CCC"], contexts=[("a", "x"), ("a", "y"), ("b", "x")])
    # The oldest sample (CCO under a and x) left with both its keys: 2 samples, 4 keys.
    assert sum(reward._memory_counts.values()) == 4
    copy = RewardFunction({"uniqueness": 1.0}, memory_size=2)
    copy.load_memory_state(reward.memory_state())
    assert copy.memory_state() == reward.memory_state()
    asked = ["CCO", "CCN", "CCC"], [("x",), ("y",), ("x",)]
    assert copy(asked[0], contexts=asked[1]).tolist() == pytest.approx([1, 1 / 2, 1 / 2])
    assert reward(asked[0], contexts=asked[1]).tolist() == pytest.approx([1, 1 / 2, 1 / 2])


def test_memory_is_bounded():
    reward = RewardFunction({"uniqueness": 1.0}, memory_size=5)
    for k in range(1, 30):
        reward(["C" * k, "C" * k])
    assert len(reward._memory) == 5
    assert sum(reward._memory_counts.values()) == 5


def test_empty_batch():
    out = RewardFunction({"validity": 1.0})([])
    assert out.shape == (0,) and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"validity": 1.0, "novelty": 1.0}, "unknown reward component"),
        ({"qed": -0.5}, ">= 0"),
        ({"qed": math.nan}, ">= 0"),
        ({"qed": math.inf}, ">= 0"),
        ({"qed": 0.0, "sa": 0.0}, "all be 0"),
        ({}, "all be 0"),
    ],
)
def test_weight_validation(weights, message):
    with pytest.raises(ValueError, match=message):
        RewardFunction(weights)


def test_memory_size_validation():
    with pytest.raises(ValueError, match="memory_size"):
        RewardFunction({"validity": 1.0}, memory_size=-1)


def test_plausible_accepts_only_ring_systems_and_bonds_of_the_reference(qm9_smiles: list[str]) -> None:
    known = KnownStructures.of([*qm9_smiles[:3000], "not a molecule"])
    assert "C1CC1" in known.ring_systems and "C=O" in known.bonds
    reward = RewardFunction({"validity": 1.0, "plausible": 1.0}, known=known)
    # A QM9 molecule; a strained cage of peroxides; an O-O bond; a ring system QM9 has.
    smiles = [qm9_smiles[5], "O1OC23C4OC12C31OC41", "COOC", "CC1CC1", None]
    assert "O-O" not in known.bonds
    assert reward(smiles).tolist() == [1.0, 0.5, 0.5, 1.0, 0.0]
    with pytest.raises(ValueError, match="known structures"):
        RewardFunction({"plausible": 1.0})
