"""Word-level text corpora for language modelling, as streams of BPTT windows on the device.

  ptb         Penn Treebank (Mikolov et al.'s preprocessing): DATA_DIR/ptb/ptb.{train,valid}.txt,
              one sentence per line, 10k words with <unk> already in place; <eos> ends each line.
  pydoc_text  embedded smoke corpus: the documentation topics that ship with Python itself
              (`pydoc_data.topics`, real English prose about the language), lower-cased and split
              into words, numbers and single punctuation marks; <eos> ends each non-empty line.
              Topics in sorted order; the last `data.val_fraction` of the lines is the validation
              stream. Vocabulary: the `data.num_classes` − 2 most frequent training words (ties by
              spelling) plus <unk> and <eos> (default 2000 in all). The text is the running
              Python's own, so two Python versions may give slightly different corpora.

A corpus becomes `batch_size` parallel rows (the token stream cut into equal, contiguous pieces);
each batch is the next `bptt` columns (x) and the same columns shifted by one token (y), so the
hidden state of row i at the end of one window is the right start of the next. No shuffling:
every epoch sees the same windows in the same order, as in the standard recipe.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Iterator

import torch
from torch import Tensor

from ..config import DataConfig, data_root
from .loaders import DataBundle
from .registry import DatasetDefaults, register_dataset

UNK, EOS = "<unk>", "<eos>"
PYDOC_VOCAB = 2000           # pydoc_text's vocabulary size unless data.num_classes says otherwise
EVAL_BATCH = 10              # validation rows (the PyTorch word-language-model example's)
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


class TokenLoader:
    """BPTT windows over a token stream laid out as `batch_size` contiguous rows."""

    def __init__(self, tokens: Tensor, batch_size: int, bptt: int, device: torch.device):
        cols = len(tokens) // batch_size
        if cols < 2:
            raise ValueError(f"{len(tokens)} tokens are too few for {batch_size} rows")
        self.data = tokens[:cols * batch_size].view(batch_size, cols).to(device)
        self.bptt = bptt

    def __len__(self) -> int:
        return -(-(self.data.shape[1] - 1) // self.bptt)

    @property
    def tokens(self) -> int:
        """Predicted tokens per pass."""
        return self.data.shape[0] * (self.data.shape[1] - 1)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        cols = self.data.shape[1]
        for i in range(0, cols - 1, self.bptt):
            n = min(self.bptt, cols - 1 - i)
            yield self.data[:, i:i + n], self.data[:, i + 1:i + 1 + n]


def vocabulary(lines: list[list[str]], size: int | None = None) -> dict[str, int]:
    """Word -> id: the `size` − 2 most frequent words (ties by spelling), then <unk> and <eos>;
    every word when size is None."""
    counts = Counter(w for line in lines for w in line if w not in (UNK, EOS))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    if size is not None:
        words = words[:max(0, size - 2)]
    return {w: i for i, w in enumerate([*words, UNK, EOS])}


def encode(lines: list[list[str]], vocab: dict[str, int]) -> Tensor:
    unk = vocab[UNK]
    ids = [vocab.get(w, unk) for line in lines for w in [*line, EOS]]
    return torch.tensor(ids, dtype=torch.long)


def pydoc_lines() -> list[list[str]]:
    """Every non-empty line of Python's bundled documentation topics, as lower-case words."""
    from pydoc_data.topics import topics
    out = []
    for key in sorted(topics):
        for line in topics[key].splitlines():
            words = _WORD.findall(line.lower())
            if words:
                out.append(words)
    return out


def ptb_folder(root: str) -> str:
    return os.path.join(root, "ptb")


def ptb_missing(root: str) -> list[str]:
    folder = ptb_folder(root)
    return [f for f in PTB_FILES[:2] if not os.path.isfile(os.path.join(folder, f))]


def check_ptb(cfg: DataConfig) -> str | None:
    root = data_root(cfg)
    if not ptb_missing(root):
        return None
    return (f"Penn Treebank not found: looked for {ptb_folder(root)} (missing "
            f"{', '.join(ptb_missing(root))}). Put Mikolov et al.'s ptb.train.txt, ptb.valid.txt "
            f"and ptb.test.txt there (e.g. from the `data/` folder of the simple-examples archive, "
            f"https://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz), or set DATA_DIR / "
            f"data.root to the folder that holds ptb/.")


def _read_ptb(root: str, name: str) -> list[list[str]]:
    with open(os.path.join(ptb_folder(root), name), encoding="utf-8") as f:
        return [line.split() for line in f]


def text_bundle(cfg: DataConfig, device: torch.device, train: list[list[str]],
                val: list[list[str]], vocab: dict[str, int]) -> DataBundle:
    """BPTT streams of a corpus's train and validation lines, encoded with vocab."""
    tr = TokenLoader(encode(train, vocab), cfg.batch_size, cfg.bptt, device)
    va = TokenLoader(encode(val, vocab), EVAL_BATCH, cfg.bptt, device)
    # in_channels / image_size 1: the model's input is one token id per position
    return DataBundle(tr, va, len(vocab), 1, 1, tr.tokens, va.tokens, cfg.dataset)


def build_ptb(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    root = data_root(cfg)
    train, val = _read_ptb(root, PTB_FILES[0]), _read_ptb(root, PTB_FILES[1])
    return text_bundle(cfg, device, train, val, vocabulary(train, cfg.num_classes or None))


def build_pydoc_text(cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    lines = pydoc_lines()
    cut = int(round(len(lines) * (1.0 - cfg.val_fraction)))
    train, val = lines[:cut], lines[cut:]
    return text_bundle(cfg, device, train, val,
                       vocabulary(train, cfg.num_classes or PYDOC_VOCAB))


register_dataset("ptb", task="language_modelling", build=build_ptb, check=check_ptb,
                 source="placed by hand in DATA_DIR/ptb (ptb.train.txt, ptb.valid.txt; README: Data)")
register_dataset("pydoc_text", task="language_modelling", build=build_pydoc_text,
                 defaults=DatasetDefaults(num_classes=PYDOC_VOCAB),
                 source="Python's own documentation topics (pydoc_data; no download)")
