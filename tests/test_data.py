from __future__ import annotations

import gzip
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from typer.testing import CliRunner

from molgan import data
from molgan.chem import (
    AROMATIC_BOND,
    AROMATIC_BOND_TYPES,
    BOND_TYPES,
    Vocab,
    canonical_smiles,
    decode_batch,
    encode,
)
from molgan.cli import app
from molgan.config import DataConfig
from molgan.data import (
    FORMAT_VERSION,
    MolDataset,
    SkipReport,
    build_qm9_file,
    cache_key,
    dataset_file,
    dataset_from_config,
    load_dataset,
    num_pairs,
    pack_bonds,
    qm9_path,
    read_smiles,
    unpack_bonds,
    vocab_for,
)
from tests.conftest import QM9_ATOMS

# One line per case; the reason each bad line is skipped for is in the comment.
MIXED_LINES = [
    "CCO",
    "C1=CC=CC=C1",
    "OCC",  # duplicate of CCO
    "c1ccccc1",  # duplicate of benzene
    "C1CC",  # unparseable
    "CCCCCCCCCC",  # too_many_atoms (10 > 9)
    "CC.O",  # multi_fragment
    "[CH3]",  # radical
    "[NH3+]CC([O-])=O",
    "N#CC(=O)O",
]


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _sdf_text(smiles: list[str]) -> str:
    blocks = [Chem.MolToMolBlock(Chem.MolFromSmiles(s)) + "$$$$\n" for s in smiles]
    broken = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)  # pentavalent carbon
    broken.UpdatePropertyCache(strict=False)
    return "".join(blocks) + Chem.MolToMolBlock(broken) + "$$$$\n"


# --------------------------------------------------------------------------- read_smiles


@pytest.mark.parametrize("name", ["mols.smi", "mols.smi.gz", "mols.txt"])
def test_read_smiles_text(tmp_path: Path, name: str) -> None:
    text = "smiles\n# a comment\nCCO ethanol 1\n\n  c1ccccc1\tbenzene\nC1CC\n"
    path = _write(tmp_path / name, text)
    assert read_smiles(path) == ["CCO", "c1ccccc1", "C1CC"]


def test_read_smiles_csv_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "mols.csv",
                  'id,SMILES,name\n1,CCO,ethanol\n2,"C(=O)O",formic acid\n3,,empty\n')
    assert read_smiles(path) == ["CCO", "C(=O)O", ""]
    path2 = _write(tmp_path / "other.csv.gz", "mol,y\nCCN,1\nCC,2\n")
    assert read_smiles(path2, smiles_column="mol") == ["CCN", "CC"]
    with pytest.raises(ValueError, match=r"no column 'smiles'.*mol"):
        read_smiles(path2)
    with pytest.raises(ValueError, match="'nope'"):
        read_smiles(path, smiles_column="nope")


@pytest.mark.parametrize("name", ["mols.sdf", "mols.sdf.gz"])
def test_read_smiles_sdf(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, _sdf_text(["CCO", "c1ccncc1"]))
    got = read_smiles(path)
    assert [canonical_smiles(s) for s in got[:2]] == ["CCO", "c1ccncc1"]
    assert got[2] == ""  # the unreadable record is kept as an empty entry, not dropped


def test_read_smiles_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.smi"):
        read_smiles(tmp_path / "missing.smi")
    bad = _write(tmp_path / "mols.json", "[]")
    with pytest.raises(ValueError, match=r"unsupported molecule file 'mols.json'"):
        read_smiles(bad)


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_skips_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "mixed.smi", "\n".join(MIXED_LINES) + "\n")
    with caplog.at_level(logging.INFO, logger="molgan.data"):
        ds = load_dataset(path, cache_dir=tmp_path / "cache")
    assert ds.report.read == 10
    assert ds.report.kept == 4
    assert ds.report.skipped == {"duplicate": 2, "unparseable": 1, "too_many_atoms": 1,
                                 "multi_fragment": 1, "radical": 1}
    summary = ds.report.summary()
    assert summary == ("read 10, kept 4, skipped 6 (duplicate 2, multi_fragment 1, radical 1, "
                       "too_many_atoms 1, unparseable 1)")
    assert summary in caplog.text
    assert ds.smiles == [canonical_smiles(s) for s in ["CCO", "c1ccccc1", "[NH3+]CC([O-])=O",
                                                "N#CC(=O)O"]]
    assert ds.source == "mixed.smi" and len(ds) == 4
    assert ds.atoms.dtype == torch.uint8 and ds.atoms.shape == (4, 9)
    # Bonds are kept as upper triangles: 9 * 8 / 2 = 36 pairs per molecule, not 81.
    assert ds.pairs.dtype == torch.uint8 and ds.pairs.shape == (4, 36)
    assert ds.vocab.atoms == ("*", "C", "N", "O", "N+", "O-")
    # Rows and SMILES stay aligned.
    atoms, bonds = ds.graphs(torch.arange(4))
    assert bonds.dtype == torch.uint8 and bonds.shape == (4, 9, 9)
    assert decode_batch(atoms, bonds, ds.vocab) == ds.smiles


def test_hydrogen_counts_a_graph_cannot_carry_are_skipped(tmp_path: Path) -> None:
    # Hypervalent hydrides: the graph would decode to PH3 / dimethyl sulfide instead.
    path = _write(tmp_path / "h.smi", "[PH5]\nC[SH2]C\nCC\nO=[SH2]\nC[SiH3]\n")
    ds = load_dataset(path, use_cache=False)
    assert ds.report.skipped == {"roundtrip_mismatch": 3}
    assert ds.smiles == ["CC", "C[SiH3]"]
    assert ds.vocab.atoms == ("*", "C", "Si")  # labels of skipped molecules do not enter


def test_load_dataset_with_fixed_vocab(tmp_path: Path, qm9_vocab: Vocab) -> None:
    path = _write(tmp_path / "mols.csv", "smiles\nCCO\nCCCl\nCS\nC[N-]C\n")
    ds = load_dataset(path, vocab=qm9_vocab, cache_dir=tmp_path)
    assert ds.vocab == qm9_vocab
    assert ds.report.skipped == {"unsupported_atom": 2}
    assert ds.smiles == ["CCO", "C[N-]C"]
    assert ds.atoms[1].tolist()[:3] == [1, qm9_vocab.atom_index["N-"], 1]
    with pytest.raises(ValueError, match="max_atoms"):
        load_dataset(path, vocab=qm9_vocab, max_atoms=12, cache_dir=tmp_path)


def test_load_dataset_sdf_counts_unreadable_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "mols.sdf.gz", _sdf_text(["CCO", "CC(=O)O"]))
    ds = load_dataset(path, cache_dir=tmp_path)
    assert ds.smiles == ["CCO", "CC(=O)O"]
    assert ds.report.skipped == {"unparseable": 1}


def test_load_dataset_without_usable_molecule(tmp_path: Path) -> None:
    path = _write(tmp_path / "junk.smi", "C1CC\nxyz\nCCCCCCCCCCCC\n")
    with pytest.raises(ValueError, match=r"no usable molecule in .*junk\.smi.*read 3, kept 0"):
        load_dataset(path, cache_dir=tmp_path)
    empty = _write(tmp_path / "empty.csv", "smiles\n")
    with pytest.raises(ValueError, match="no usable molecule"):
        load_dataset(empty, cache_dir=tmp_path)


def test_worker_pool_matches_serial(tmp_path: Path, qm9_smiles: list[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lines = qm9_smiles[::200] + MIXED_LINES + qm9_smiles[::201]
    path = _write(tmp_path / "mols.smi", "\n".join(lines) + "\n")
    serial = load_dataset(path, use_cache=False, workers=1)
    monkeypatch.setattr(data, "_PARALLEL_MIN", 1)  # let a small file use the pool
    monkeypatch.setattr(data, "_CHUNK", 97)  # many chunks with different local label tables
    pooled = load_dataset(path, use_cache=False, workers=2)
    assert pooled.smiles == serial.smiles and pooled.vocab == serial.vocab
    assert torch.equal(pooled.atoms, serial.atoms) and torch.equal(pooled.pairs, serial.pairs)
    assert pooled.report == serial.report
    assert serial.report.skipped["duplicate"] >= 2


def test_max_atoms_setting(tmp_path: Path) -> None:
    path = _write(tmp_path / "mols.smi", "CCCCCCCCCC\nCCO\n")
    ds = load_dataset(path, max_atoms=12, cache_dir=tmp_path)
    assert ds.smiles == ["CCCCCCCCCC", "CCO"] and ds.atoms.shape == (2, 12)
    assert ds.vocab.max_atoms == 12


def test_limit_reads_only_the_first_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "mols.smi", "CCO\nC1CC\nCCN\nCCC\n")
    assert read_smiles(path, limit=2) == ["CCO", "C1CC"]
    ds = load_dataset(path, limit=3, cache_dir=tmp_path)
    assert ds.report.read == 3 and ds.report.skipped == {"unparseable": 1}
    assert ds.smiles == ["CCO", "CCN"]
    assert load_dataset(path, cache_dir=tmp_path).smiles == ["CCO", "CCN", "CCC"]
    assert cache_key(path, 9, None, None, 3) != cache_key(path, 9, None, None)
    with pytest.raises(ValueError, match="limit"):
        load_dataset(path, limit=0, cache_dir=tmp_path)


# --------------------------------------------------------------------------- compact bonds


def test_pack_and_unpack_bonds_are_inverse() -> None:
    n = 7
    gen = np.random.default_rng(0)
    upper = np.triu(gen.integers(0, 4, size=(5, n, n), dtype=np.uint8), k=1)
    bonds = upper + upper.transpose(0, 2, 1)  # symmetric, zero diagonal: a graph's bonds
    pairs = pack_bonds(bonds)
    assert pairs.shape == (5, num_pairs(n)) == (5, 21) and pairs.dtype == np.uint8
    # Pair k is (i, j) = the k-th entry of triu_indices, the order of the generator's pairs.
    rows, cols = torch.triu_indices(n, n, 1)
    assert pairs[2, 4] == bonds[2, rows[4], cols[4]]
    back = unpack_bonds(torch.from_numpy(pairs), n)
    assert back.dtype == torch.uint8 and torch.equal(back, torch.from_numpy(bonds))
    with pytest.raises(ValueError, match=r"must be \(B, 28\) for N=8, got \(5, 21\)"):
        unpack_bonds(torch.from_numpy(pairs), 8)


def test_graphs_of_a_batch_are_the_molecules_graphs(tmp_path: Path) -> None:
    smiles = ["CCO", "c1ccccc1", "N#CC(=O)O", "CC(C)(C)N", "C1CC1O"]
    ds = load_dataset(_write(tmp_path / "m.smi", "\n".join(smiles)), use_cache=False)
    index = torch.tensor([3, 0, 3, 1])
    atoms, bonds = ds.graphs(index)
    assert atoms.shape == (4, 9) and bonds.shape == (4, 9, 9) and bonds.dtype == torch.uint8
    for row, i in enumerate(index.tolist()):
        want_atoms, want_bonds = encode(ds.smiles[i], ds.vocab)
        assert torch.equal(atoms[row].long(), want_atoms)
        assert torch.equal(bonds[row].long(), want_bonds)
    assert decode_batch(atoms, bonds, ds.vocab) == [ds.smiles[i] for i in index.tolist()]


def test_subset_keeps_rows_and_smiles_aligned(tmp_path: Path) -> None:
    ds = load_dataset(_write(tmp_path / "m.smi", "CCO\nCCN\nCCC\nCOC\n"), use_cache=False)
    part = ds.subset(torch.tensor([2, 0]))
    assert part.smiles == ["CCC", "CCO"] and part.vocab == ds.vocab and len(part) == 2
    assert decode_batch(*part.graphs(torch.arange(2)), part.vocab) == part.smiles
    moved = part.to("cpu")
    assert torch.equal(moved.pairs, part.pairs) and moved.smiles == part.smiles


# --------------------------------------------------------------------------- dataset names


def test_dataset_names_resolve_to_their_files() -> None:
    assert dataset_file(None) == dataset_file("qm9") == (qm9_path(), "qm9")
    path, source = dataset_file("moses")
    assert source == "moses" and path.name == "train.csv.gz" and path.is_file()
    assert dataset_file("x/mols.smi") == (Path("x/mols.smi"), "mols.smi")


def _without_molsets(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def not_found(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_found)


def test_moses_without_molsets_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from molgan.moses_files import INSTALL_HINT, MosesNotInstalled

    _without_molsets(monkeypatch)
    with pytest.raises(MosesNotInstalled, match=re.escape(INSTALL_HINT)):
        load_dataset("moses", max_atoms=27)
    result = CliRunner().invoke(app, ["data", "prepare", "moses"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: the MOSES data is not installed; "
                                                  f"run: {INSTALL_HINT}"]


# --------------------------------------------------------------------------- cache


def test_cache_hit_and_keys(tmp_path: Path) -> None:
    path = _write(tmp_path / "mols.smi", "CCO\nCCN\nC1CC\n")
    cache = tmp_path / "cache"
    first = load_dataset(path, cache_dir=cache)
    assert not first.cache_hit
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    second = load_dataset(path, cache_dir=cache)
    assert second.cache_hit
    assert second.smiles == first.smiles and second.vocab == first.vocab
    assert torch.equal(second.atoms, first.atoms) and torch.equal(second.pairs, first.pairs)
    assert second.report == first.report and second.source == "mols.smi"

    key = cache_key(path, 9, None, None)
    assert files[0].name == f"{key}.safetensors"
    assert cache_key(path, 10, None, None) != key
    assert cache_key(path, 9, Vocab(QM9_ATOMS, 9), None) != key
    assert cache_key(path, 9, None, "smiles") != key
    _write(path, "CCO\nCCN\nC1CC\nCCC\n")
    assert cache_key(path, 9, None, None) != key
    third = load_dataset(path, cache_dir=cache)
    assert not third.cache_hit and "CCC" in third.smiles
    assert FORMAT_VERSION >= 1


def test_corrupted_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "mols.smi", "CCO\nCCN\n")
    cache = tmp_path / "cache"
    load_dataset(path, cache_dir=cache)
    (file,) = cache.glob("*.safetensors")
    file.write_bytes(file.read_bytes()[:40])  # truncated, as after a crash of another writer
    with caplog.at_level(logging.WARNING, logger="molgan.data"):
        ds = load_dataset(path, cache_dir=cache)
    assert not ds.cache_hit and ds.smiles == ["CCO", "CCN"]
    assert "rebuilding" in caplog.text
    assert load_dataset(path, cache_dir=cache).cache_hit  # the rebuilt file is valid
    file.write_bytes(b"\x00" * 100)
    assert load_dataset(path, cache_dir=cache).smiles == ["CCO", "CCN"]


def test_cache_can_be_disabled_and_defaults_to_env(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "mols.smi", "CCO\n")
    monkeypatch.setenv("MOLGAN_CACHE_DIR", str(tmp_path / "env-cache"))
    assert not load_dataset(path, use_cache=False).cache_hit
    assert not (tmp_path / "env-cache").exists()
    load_dataset(path)
    assert len(list((tmp_path / "env-cache").glob("*.safetensors"))) == 1


# --------------------------------------------------------------------------- split / subset


def _small_dataset(tmp_path: Path) -> MolDataset:
    chains = ["C" * k for k in range(1, 10)] + ["O" + "C" * k for k in range(1, 9)]
    chains += ["N" + "C" * k for k in range(1, 9)] + ["F" + "C" * k for k in range(1, 9)]
    return load_dataset(_write(tmp_path / "chains.smi", "\n".join(chains)), cache_dir=tmp_path)


def test_split_deterministic_disjoint_complete(tmp_path: Path) -> None:
    ds = _small_dataset(tmp_path)
    m = len(ds)
    assert m == 33
    train, valid, test = ds.split(seed=5)
    assert (len(train), len(valid), len(test)) == (26, 3, 4)
    allidx = torch.cat([train, valid, test])
    assert sorted(allidx.tolist()) == list(range(m))
    again = ds.split(seed=5)
    assert all(torch.equal(x, y) for x, y in zip((train, valid, test), again, strict=True))
    assert not torch.equal(ds.split(seed=6)[0], train)
    tr, va, te = ds.split(seed=0, fractions=(1.0, 0.0, 0.0))
    assert len(tr) == m and len(va) == len(te) == 0
    with pytest.raises(ValueError, match="sum to 1"):
        ds.split(fractions=(0.5, 0.2, 0.1))
    with pytest.raises(ValueError):
        ds.split(fractions=(0.5, 0.5))


def test_skip_report_summary() -> None:
    assert SkipReport(read=3, kept=3, skipped={}).summary() == "read 3, kept 3, skipped 0"
    r = SkipReport(read=9, kept=2, skipped={"b": 3, "a": 3, "c": 1})
    assert r.summary() == "read 9, kept 2, skipped 7 (a 3, b 3, c 1)"
    assert SkipReport.from_dict(r.to_dict()) == r


# --------------------------------------------------------------------------- QM9


def test_bundled_qm9_file(qm9_smiles: list[str]) -> None:
    path = qm9_path()
    assert path.is_file() and path.stat().st_size < 1_000_000
    assert len(qm9_smiles) == 130_831
    assert qm9_smiles[:3] == ["C", "N", "O"]
    assert (path.parent / "QM9_SOURCE.md").is_file()


@pytest.mark.slow
def test_load_bundled_qm9() -> None:
    ds = load_dataset()
    assert ds.source == "qm9"
    assert ds.report.read == 130_831
    assert ds.report.kept == len(ds) > 130_000
    assert set(ds.report.skipped) <= {"duplicate"}
    assert ds.vocab.atoms == QM9_ATOMS and ds.vocab.max_atoms == 9
    again = load_dataset()
    assert again.cache_hit and again.smiles == ds.smiles


@pytest.mark.slow
def test_build_qm9_file_is_reproducible(tmp_path: Path) -> None:
    pytest.importorskip("pandas")  # present whenever the qm9 extra is installed
    import importlib.util

    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack (extra 'qm9') not installed")
    report = build_qm9_file(tmp_path / "qm9.smi.gz")
    assert report.read == report.kept == 130_831
    assert (tmp_path / "qm9.smi.gz").read_bytes() == qm9_path().read_bytes()


# --------------------------------------------------------------------------- CLI


def test_cli_data_prepare(tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.smi", "\n".join(MIXED_LINES) + "\n")
    runner = CliRunner()
    args = ["data", "prepare", str(path), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "read 10, kept 4, skipped 6" in result.output
    assert "'N+'" in result.output and "(cached)" not in result.output
    result = runner.invoke(app, args)
    assert "(cached)" in result.output
    result = runner.invoke(app, [*args[:3], "--max-atoms", "10", *args[3:]])
    assert "kept 5" in result.output


def test_cli_data_prepare_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    # Usage errors, as for a bad option: exit 2 and one line.
    result = runner.invoke(app, ["data", "prepare", str(tmp_path / "nope.smi")])
    assert result.exit_code == 2
    assert "not found" in result.output
    bad = _write(tmp_path / "junk.smi", "C1CC\n")
    result = runner.invoke(app, ["data", "prepare", str(bad), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no usable molecule" in result.output


def test_cli_data_prepare_a_config_and_a_limit(tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.smi", "\n".join(MIXED_LINES) + "\n")
    config = _write(tmp_path / "run.yaml",
                    f"data:\n  path: {path}\n  limit: 3\n  atoms: [C, O]\n  max_atoms: 6\n")
    runner = CliRunner()
    cache = tmp_path / "c"
    result = runner.invoke(app, ["data", "prepare", "--config", str(config), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "read 3, kept 2, skipped 1 (duplicate 1)" in result.output
    assert "atoms=['*', 'C', 'O'] max_atoms=6" in result.output
    # It is the cache that training on that config reads.
    (file,) = cache.glob("*.safetensors")
    assert file.name == f"{cache_key(path, 6, Vocab(('*', 'C', 'O'), 6), None, 3)}.safetensors"
    result = runner.invoke(app, ["data", "prepare", str(path), "--limit", "3", "--cache-dir", str(cache)])
    assert "read 3, kept 2, skipped 1" in result.output and "(cached)" not in result.output


def test_cli_data_prepare_config_excludes_data_options(tmp_path: Path) -> None:
    config = _write(tmp_path / "run.yaml", "data:\n  max_atoms: 6\n")
    result = CliRunner().invoke(app, ["data", "prepare", "--config", str(config), "qm9", "--limit", "4"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --config takes the data settings from the config; "
                                     "drop PATH, --limit")
    bad = _write(tmp_path / "bad.yaml", "data:\n  limit: 0\n")
    result = CliRunner().invoke(app, ["data", "prepare", "--config", str(bad)])
    assert result.exit_code == 2 and "data.limit" in result.output


def test_cli_train_without_molsets_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from molgan.moses_files import INSTALL_HINT

    _without_molsets(monkeypatch)
    moses_config = Path(__file__).resolve().parent.parent / "configs" / "moses.yaml"
    result = CliRunner().invoke(app, ["train", "-c", str(moses_config), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: the MOSES data is not installed; "
                                                  f"run: {INSTALL_HINT}"]
    assert not (tmp_path / "r").exists()


def test_cli_data_qm9_without_qm9pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "qm9pack", None)
    result = CliRunner().invoke(app, ["data", "qm9", "--out", str(tmp_path / "q.smi.gz")])
    assert result.exit_code == 1
    assert "pip install 'molgan[qm9]'" in result.output
    assert not (tmp_path / "q.smi.gz").exists()


def test_dataset_from_config_is_load_dataset_with_the_config_settings(tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.smi", "CCO\nC[NH3+]\nCC(=O)[O-]\nFC(F)F\nCN\nCCCCC\n")
    config = DataConfig(path=str(path), max_atoms=4, atoms=("O", "*", "C", "N"))
    # The padding label comes first wherever the config lists it.
    assert vocab_for(config) == Vocab(atoms=("*", "O", "C", "N"), max_atoms=4)
    ds = dataset_from_config(config)
    direct = load_dataset(path, max_atoms=4, vocab=vocab_for(config), cache_dir=tmp_path / "c")
    assert ds.smiles == direct.smiles == ["CCO", "CN"]
    assert torch.equal(ds.atoms, direct.atoms) and torch.equal(ds.pairs, direct.pairs)
    assert ds.report.skipped == {"unsupported_atom": 3, "too_many_atoms": 1}


def test_without_atoms_the_config_asks_for_no_fixed_vocabulary(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.smi", "CCO\nC[NH3+]\n")
    config = DataConfig(path=str(path))
    assert vocab_for(config) is None
    assert set(dataset_from_config(config).vocab.atoms) == {"*", "C", "O", "N+"}


# --------------------------------------------------------------------------- aromatic bonds

AROMATIC_LINES = "c1ccccc1O\nc1cc[nH]c1\nCc1ccco1\nCCO\nc1ccc2[nH]ccc2c1\n"


def test_aromatic_data_has_its_own_cache_and_vocabulary(tmp_path: Path) -> None:
    path = _write(tmp_path / "arom.smi", AROMATIC_LINES)
    cache = tmp_path / "cache"
    kekulized = load_dataset(path, cache_dir=cache)
    aromatic = load_dataset(path, cache_dir=cache, aromatic=True)
    assert not aromatic.cache_hit  # not the kekulized file
    assert len(list(cache.glob("*.safetensors"))) == 2
    # The kekulized key is the one it had before the option existed.
    assert cache_key(path, 9, None, None, aromatic=False) == cache_key(path, 9, None, None)
    assert cache_key(path, 9, None, None, aromatic=True) != cache_key(path, 9, None, None)
    assert aromatic.smiles == kekulized.smiles
    assert kekulized.vocab.bonds == BOND_TYPES and aromatic.vocab.bonds == AROMATIC_BOND_TYPES
    assert aromatic.vocab.atoms == ("*", "C", "O", "NH")
    assert int(kekulized.pairs.max()) == 2 and int((aromatic.pairs == AROMATIC_BOND).sum()) == 6 + 5 + 5 + 10
    again = load_dataset(path, cache_dir=cache, aromatic=True)
    assert again.cache_hit and again.vocab == aromatic.vocab
    assert torch.equal(again.pairs, aromatic.pairs)
    atoms, bonds = again.graphs(torch.arange(len(again)))
    assert decode_batch(atoms, bonds, again.vocab) == again.smiles


def test_aromatic_config_and_its_fixed_vocabulary(tmp_path: Path) -> None:
    path = _write(tmp_path / "arom.smi", AROMATIC_LINES)
    config = DataConfig(path=str(path), atoms=("C", "O", "N"), aromatic=True)
    assert vocab_for(config) == Vocab(("*", "C", "O", "N"), 9, AROMATIC_BOND_TYPES)
    # Pyrrole-type nitrogens are the label NH: a fixed list without it skips their molecules.
    ds = dataset_from_config(config)
    assert ds.report.skipped == {"unsupported_atom": 2} and len(ds) == 3
    with_nh = dataset_from_config(config.model_copy(update={"atoms": ("C", "O", "N", "NH")}))
    assert len(with_nh) == 5 and with_nh.report.skipped == {}
    with pytest.raises(ValueError, match="'NH' fixes a hydrogen count"):
        vocab_for(DataConfig(atoms=("C", "NH")))
    with pytest.raises(ValueError, match="aromatic"):
        load_dataset(path, vocab=vocab_for(config), use_cache=False)  # aromatic not asked for


def test_cli_data_prepare_sets_aromatic(tmp_path: Path) -> None:
    path = _write(tmp_path / "arom.smi", AROMATIC_LINES)
    config = _write(tmp_path / "run.yaml", f"data:\n  path: {path}\n  atoms: [C, O, N]\n")
    runner = CliRunner()
    cache = ["--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, ["data", "prepare", "--config", str(config), "--set",
                                 "data.aromatic=true", "--set", "data.atoms=[C,O,NH]", *cache])
    assert result.exit_code == 0, result.output
    assert "read 5, kept 5, skipped 0" in result.output
    assert "atoms=['*', 'C', 'O', 'NH'] max_atoms=9 bonds=['none', 'single', 'double', " \
           "'triple', 'aromatic']" in result.output
    result = runner.invoke(app, ["data", "prepare", str(path), "--aromatic", *cache])
    assert result.exit_code == 0 and "'aromatic']" in result.output
    for bad, message in ((["--set", "data.aromatic=true"], "error: --set needs --config"),
                         (["--config", str(config), "--set", "data.aromatic=maybe"],
                          "data.aromatic"),
                         (["--config", str(config), "--set", "data.atoms=[C,NH]"], "'NH'"),
                         (["--config", str(config), "--aromatic"], "drop --aromatic")):
        result = runner.invoke(app, ["data", "prepare", *bad, *cache])
        assert result.exit_code == 2, bad
        assert len(result.output.strip().splitlines()) == 1 and message in result.output, bad
