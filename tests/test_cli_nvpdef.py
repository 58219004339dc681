"""NVPDEF through the command line: configs, the real 20News corpus, topics script, perplexity under DDP."""

from __future__ import annotations

import gzip
import runpy
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, REPO, SHARED_DATA, cli_env, event_dirs, read_scalars

from gengs_lightning.cli import main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TWENTY_NEWS = SHARED_DATA / "20news" / "prodlda_vocab1995"
SMALL = [
    "--model.init_args.vocab_size=30",
    "--model.init_args.topics=[4]",
    "--model.init_args.hidden=[16]",
    "--data.init_args.val_size=20",
    "--data.init_args.batch_size=16",
]


def write_alternating_corpus(folder: Path) -> Path:
    """Even documents repeat one word (low perplexity), odd ones spread over all 30 (high perplexity)."""
    generator = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.new").write_text("".join(f"w{i} 0\n" for i in range(30)))
    for name, docs in (("train.feat", 200), ("test.feat", 200)):
        lines = []
        for d in range(docs):
            if d % 2 == 0:
                lines.append(f"1 {d % 30 + 1}:20")
            else:
                counts = torch.randint(0, 30, (40,), generator=generator).bincount(minlength=30).tolist()
                lines.append("1 " + " ".join(f"{i + 1}:{c}" for i, c in enumerate(counts) if c))
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("config", sorted((CONFIGS / "nvpdef").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_nvpdef_config_parses_and_builds(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert "gengs_lightning.models.NVPDEF" in capsys.readouterr().out


@pytest.mark.skipif(not TWENTY_NEWS.exists(), reason="the shared 20News corpus is not beside the repository")
def test_20news_config_trains_and_reports_test_perplexity(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "nvpdef" / "20news.yaml"),
            f"--data.data_dir={TWENTY_NEWS}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=20",
            "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert 1 < metrics["test/perplexity"] < 1995  # better than a uniform distribution over the vocabulary
    assert -1 <= metrics["test/npmi"] <= 1
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    script = runpy.run_path(str(REPO / "scripts" / "topics.py"))
    table = script["topics"](str(checkpoint), str(TWENTY_NEWS / "vocab.new"), 5)
    assert table.count("\n") == 51 and table.splitlines()[2].count(" ") >= 5


def _fit_small(tmp_path: Path, corpus: Path, *extra: str) -> Path:
    """Fit the small NVPDEF for two steps on ``corpus``; returns its last checkpoint."""
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "nvpdef" / "20news.yaml"),
            *SMALL,
            f"--data.data_dir={corpus}",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--test_after_fit=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'fit'}",
            *QUIET,
            *extra,
        ]
    )
    return next((tmp_path / "fit").rglob("last.ckpt"))


def test_a_folder_with_only_the_test_file_is_tested(tmp_path):
    corpus = write_alternating_corpus(tmp_path / "corpus")
    checkpoint = _fit_small(tmp_path, corpus)
    test_only = tmp_path / "test_only"
    test_only.mkdir()
    (test_only / "vocab.new").write_text((corpus / "vocab.new").read_text())
    with gzip.open(test_only / "test.feat.gz", "wt") as file:
        file.write((corpus / "test.feat").read_text())
    perplexity = {}
    for folder in (corpus, test_only):
        args = ["--config", str(CONFIGS / "nvpdef" / "20news.yaml"), *SMALL, f"--data.data_dir={folder}"]
        save_dir = f"--trainer.logger.init_args.save_dir={tmp_path / folder.name}"
        cli = main(["test", *args, f"--ckpt_path={checkpoint}", save_dir, *QUIET])
        assert cli.datamodule.num_test_docs == 200
        perplexity[folder.name] = cli.trainer.callback_metrics["test/perplexity"].item()
    assert perplexity["test_only"] == perplexity["corpus"]  # same documents, same seed


@pytest.mark.parametrize("stage", ["fit", "test"])
def test_a_vocabulary_size_mismatch_names_both_sizes_before_any_batch(tmp_path, stage):
    corpus = write_alternating_corpus(tmp_path / "corpus")
    expected = (
        r"the model's vocab_size is 31 but the data's vocabulary \(BagOfWords\) has 30 words; "
        r"set --model.init_args.vocab_size=30"
    )
    with pytest.raises(ValueError, match=expected):
        main(
            [
                stage,
                "--config",
                str(CONFIGS / "nvpdef" / "20news.yaml"),
                *SMALL,
                "--model.init_args.vocab_size=31",
                f"--data.data_dir={corpus}",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                *QUIET,
            ]
        )


def _test_perplexity(tmp_path: Path, corpus: Path, checkpoint: Path, name: str, *extra: str) -> float:
    env = cli_env()
    command = [
        sys.executable,
        "-m",
        "gengs_lightning",
        "test",
        "--config",
        str(CONFIGS / "nvpdef" / "20news.yaml"),
        *SMALL,
        f"--data.data_dir={corpus}",
        f"--ckpt_path={checkpoint}",
        f"--trainer.logger.init_args.save_dir={tmp_path / name}",
        *QUIET,
        *extra,
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ((_, value),) = read_scalars(event_dirs(tmp_path / name)[0])["test/perplexity"]
    return value


@pytest.mark.slow
def test_ddp_test_perplexity_is_the_whole_test_set(tmp_path):
    corpus = write_alternating_corpus(tmp_path / "corpus")
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "nvpdef" / "20news.yaml"),
            *SMALL,
            f"--data.data_dir={corpus}",
            "--trainer.max_epochs=10",
            "--model.init_args.optimizer.init_args.lr=0.01",
            "--test_after_fit=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'fit'}",
            *QUIET,
        ]
    )
    checkpoint = next((tmp_path / "fit").rglob("last.ckpt"))
    single = [
        _test_perplexity(tmp_path, corpus, checkpoint, f"s{seed}", f"--seed_everything={seed}") for seed in range(4)
    ]
    ddp = _test_perplexity(tmp_path, corpus, checkpoint, "ddp", "--config", str(CONFIGS / "trainer" / "ddp_cpu.yaml"))
    # rank 0 alone sees the even (one-word) documents: its perplexity is far from the whole set's
    even_only = corpus.parent / "even"
    even_only.mkdir()
    (even_only / "vocab.new").write_text((corpus / "vocab.new").read_text())
    (even_only / "train.feat").write_text((corpus / "train.feat").read_text())
    lines = (corpus / "test.feat").read_text().splitlines()
    (even_only / "test.feat").write_text("\n".join(lines[::2]) + "\n")
    rank0 = _test_perplexity(tmp_path, even_only, checkpoint, "even")
    mean, spread = statistics.mean(single), statistics.stdev(single)
    assert abs(rank0 - mean) > 8 * spread
    assert abs(ddp - mean) < 4 * spread * (1 + 1 / len(single)) ** 0.5
