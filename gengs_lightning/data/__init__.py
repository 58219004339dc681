"""LightningDataModules: toy targets, binary images and bags of words."""

from gengs_lightning.data.bow import BagOfWords, SparseCounts, read_feat, read_vocab
from gengs_lightning.data.images import MNIST, BinarizedMNIST, BinaryImageDataModule, Digits, Omniglot
from gengs_lightning.data.toy import ToyTargets

__all__ = [
    "BagOfWords",
    "SparseCounts",
    "read_feat",
    "read_vocab",
    "MNIST",
    "BinarizedMNIST",
    "BinaryImageDataModule",
    "Digits",
    "Omniglot",
    "ToyTargets",
]
