"""Print the top words of every topic of a trained NVPDEF checkpoint.

python scripts/topics.py logs/nvpdef_20news/version_0/checkpoints/last.ckpt --vocab data/20news/vocab.new
python scripts/topics.py <ckpt> --vocab <vocab.new> --top 15
"""

from __future__ import annotations

import argparse

import torch

from gengs_lightning.data import read_vocab
from gengs_lightning.models import NVPDEF


def topics(checkpoint: str, vocab_path: str | None, top: int | None) -> str:
    """The markdown table of the checkpoint's topics (word ids if no vocabulary is given)."""
    model = NVPDEF.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    if top is not None:
        model.top_words = top
    vocab = read_vocab(vocab_path) if vocab_path else None
    if vocab is not None and len(vocab) != model.vocab_size:
        raise SystemExit(f"{vocab_path} has {len(vocab)} words but the model was trained on {model.vocab_size}")
    return model.topic_table(vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--vocab", default=None, help="the corpus's vocab.new (words instead of ids)")
    parser.add_argument("--top", type=int, default=None, help="words per topic (default: the model's)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(topics(args.checkpoint, args.vocab, args.top))


if __name__ == "__main__":
    main()
