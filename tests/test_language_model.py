"""Language modelling: the gated LSTM (closed units, export, costs), the text corpora, perplexity,
and table-ptb end to end on the embedded corpus."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from reproduce import contract
from reproduce.config import DataConfig, resolve
from reproduce.data import DatasetMissing, build_data, check_available
from reproduce.method import CostModel, architecture_summary, export
from reproduce.models.lstm_lm import LSTMLanguageModel
from reproduce.tasks import LanguageModelling, task_class
from reproduce.data.text import EOS, UNK, TokenLoader, encode, pydoc_lines, vocabulary

pytestmark = pytest.mark.usefixtures("fresh_seed")
V = 37


def tiny_lm(gated: bool = True, **kw) -> LSTMLanguageModel:
    args = dict(hidden=12, layers=2, embed=9, dropout=0.0, num_classes=V, gate_channels=gated)
    args.update(kw)
    return LSTMLanguageModel(**args)


def close_some(model: LSTMLanguageModel) -> dict[int, torch.Tensor]:
    """Random logits with at least one unit open and one closed per layer; the closed units."""
    closed = {}
    with torch.no_grad():
        for l, layer in enumerate(model.rnn):
            s = torch.randn(layer.hidden)
            s[0], s[1] = 0.7, -0.7
            layer.gate.logits.copy_(s)
            closed[l] = torch.nonzero(s <= 0).flatten()
    return closed


# -- the task --------------------------------------------------------------------------------------

def test_perplexity_is_exp_of_the_token_mean_loss_over_the_stream():
    task = LanguageModelling(num_classes=V)
    meter = task.meter("val")
    losses = []
    for b, t in ((3, 5), (3, 2), (1, 4)):                  # unequal windows: weights by tokens
        out, y = torch.randn(b, t, V), torch.randint(0, V, (b, t))
        meter.update(out, y)
        for i in range(b):
            for j in range(t):                              # by hand, token by token
                p = torch.softmax(out[i, j].double(), 0)[y[i, j]]
                losses.append(-math.log(float(p)))
    got = meter.compute()
    assert got[contract.VAL_LOSS] == pytest.approx(np.mean(losses), rel=1e-5)
    assert got[contract.VAL_PPL] == pytest.approx(math.exp(np.mean(losses)), rel=1e-5)
    assert task.main_metric == contract.VAL_PPL and task.direction(contract.VAL_PPL) == "minimize"
    assert task.samples(torch.zeros(4, 7)) == 28                          # tokens, not rows


def test_text_datasets_are_language_modelling():
    assert task_class(resolve({"data": {"dataset": "pydoc_text"}})) is LanguageModelling
    assert task_class(resolve({"data": {"dataset": "digits"}})).__name__ == "Classification"


# -- the gated LSTM --------------------------------------------------------------------------------

def test_closed_units_are_zero_and_absent_downstream():
    model = tiny_lm().eval()
    closed = close_some(model)
    x = torch.randint(0, V, (2, 6))
    seen = {}
    for l, layer in enumerate(model.rnn):
        layer.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(l, o[0]))
    model.reset_state()
    before = model(x)
    for l, idx in closed.items():
        assert seen[l][..., idx].abs().max() == 0                         # exactly 0
    with torch.no_grad():                      # whatever reads or writes a closed unit: scrambled
        for l, idx in closed.items():
            layer = model.rnn[l]
            rows = torch.cat([idx + j * layer.hidden for j in range(4)])
            layer.ih.weight[rows] = torch.randn(len(rows), layer.ih.in_features) * 9
            layer.ih.bias[rows] = 9.0
            layer.hh.weight[rows] = 9.0
            layer.hh.weight[:, idx] = 9.0
            reader = model.rnn[l + 1].ih if l + 1 < len(model.rnn) else model.decoder
            reader.weight[:, idx] = 9.0
    model.reset_state()
    assert torch.equal(model(x), before)


def test_export_equals_the_gated_lstm_across_windows():
    model = tiny_lm(dropout=0.3)
    closed = close_some(model)
    model.eval()
    compact = export(model)
    assert compact.widths == [12 - len(closed[0]), 12 - len(closed[1])]
    assert compact.rnn[0].ih.weight.shape == (4 * compact.widths[0], 9)
    assert compact.rnn[1].ih.weight.shape == (4 * compact.widths[1], compact.widths[0])
    assert compact.decoder.weight.shape == (V, compact.widths[1])
    model.reset_state(), compact.reset_state()
    with torch.no_grad():
        for _ in range(3):                       # the carried state matches too
            x = torch.randint(0, V, (4, 5))
            torch.testing.assert_close(compact(x), model(x), rtol=1e-5, atol=1e-5)
    arch = architecture_summary(model)
    assert [arch["sites"][f"rnn.{l}.hh"]["width"] for l in (0, 1)] == compact.widths
    assert arch["sites"]["rnn.0.hh"]["dense_width"] == 12


def test_costs_per_token_against_the_flop_counter_and_by_hand():
    def counted(m) -> float:
        m.eval().reset_state()
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            m(torch.zeros(1, 1, dtype=torch.long))              # one token
        return c.get_total_flops() / 2

    dense = tiny_lm(gated=False)
    costs = CostModel(dense, (1, 1, 1))
    e, h = 9, 12
    by_hand = 4 * h * e + 4 * h * h + 4 * h * h + 4 * h * h + h * V   # W_ih, W_hh x 2, decoder
    assert costs.dense_macs == by_hand == counted(dense)
    params = sum(p.numel() for n, p in dense.named_parameters() if not n.startswith("encoder"))
    assert costs.dense_params == params

    gated = tiny_lm()
    close_some(gated)
    macs, params = CostModel(gated, (1, 1, 1)).hard()
    compact = export(gated)
    assert macs == counted(compact)
    assert params == sum(p.numel() for n, p in compact.named_parameters()
                         if not n.startswith("encoder"))


# -- data ------------------------------------------------------------------------------------------

def test_token_loader_windows_are_contiguous_and_shifted():
    tokens = torch.arange(103)
    loader = TokenLoader(tokens, batch_size=4, bptt=7, device=torch.device("cpu"))
    xs, ys = zip(*loader)
    assert len(xs) == len(loader) and loader.tokens == 4 * 24
    x, y = torch.cat(xs, 1), torch.cat(ys, 1)
    assert torch.equal(x, torch.arange(100).view(4, 25)[:, :-1])   # each row continues the last
    assert torch.equal(y, x + 1)


def test_vocabulary_is_fixed_by_frequency_and_spelling():
    lines = [["b", "a", "b"], ["c", "a", "b", "d"]]
    vocab = vocabulary(lines, 4)
    assert vocab == {"b": 0, "a": 1, UNK: 2, EOS: 3}
    assert encode([["b", "zzz"]], vocab).tolist() == [0, 2, 3]


def test_embedded_corpus_is_real_english_with_its_vocabulary():
    lines = pydoc_lines()
    words = [w for line in lines for w in line]
    assert len(words) > 50_000 and {"the", "function", "python"} <= set(words)
    data = build_data(DataConfig(dataset="pydoc_text", batch_size=8, bptt=5))
    assert data.num_classes == 2000 and data.num_val > 1000
    x, y = next(iter(data.train))
    assert x.shape == y.shape == (8, 5) and x.dtype == torch.long
    small = build_data(DataConfig(dataset="pydoc_text", num_classes=50))
    assert small.num_classes == 50


def test_ptb_is_read_from_its_files_and_missing_files_say_where(tmp_path):
    cfg = DataConfig(dataset="ptb", root=str(tmp_path), batch_size=2, bptt=3)
    with pytest.raises(DatasetMissing, match=str(tmp_path / "ptb")) as e:
        check_available(cfg)
    assert "ptb.train.txt" in str(e.value)
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text(" the cat sat \n the dog <unk> ran \n" * 5)
    (tmp_path / "ptb" / "ptb.valid.txt").write_text(" the bird sat \n" * 10)
    data = build_data(cfg)
    assert data.num_classes == 7                       # 5 words + <unk> + <eos>
    assert data.name == "ptb" and data.num_val > 0


# -- end to end ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_table_ptb_end_to_end(tmp_path, monkeypatch, isolated_stores):
    from analysis import table_ptb
    from reproduce.pipeline import make

    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"tiny": {"seeds": [0], "config": {
        "data": {"dataset": "pydoc_text", "num_classes": 100, "batch_size": 64, "bptt": 10},
        "gates": {"bn_recalibrate": 0},
        "train": {"epochs": 1, "lr": 5.0, "momentum": 0.0, "weight_decay": 0.0,
                  "grad_clip": 0.5, "threads": 1}}}}))
    exp = tmp_path / "tiny-ptb.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny-ptb", "figures": ["table-ptb"],
        "base": {"model": {"name": "lstm_lm_small"}},
        "runs": [{"variant": "dense", "config": {"method": "dense"}},
                 {"variant": "grow-50", "config": {"method": "grow", "budget": {"target": 0.5}}},
                 {"variant": "uniform-50",
                  "config": {"method": "dense", "model": {"width_multiplier": 0.5}}}]}))
    monkeypatch.setattr(table_ptb, "EXPERIMENTS", [str(exp)])
    make("table-ptb", profile="tiny", progress=False)
    out = tmp_path / "figures"
    csv = pd.read_csv(out / "table-ptb.csv").set_index("variant")
    assert sorted(csv.index) == ["dense", "grow-50", "uniform-50"]

    from reproduce import tracking
    c = tracking.client(isolated_stores)
    exp_id = tracking.experiment_id(c, "tiny", create=False)
    store = {r.info.run_id: r for r in c.search_runs([exp_id])}
    for variant, row in csv.iterrows():
        run = store[row["run_ids"]]
        assert row["ppl_mean"] == pytest.approx(run.data.metrics[contract.VAL_PPL])
        history = c.get_metric_history(run.info.run_id, contract.VAL_PPL)
        assert [m.step for m in history] == [1]
    assert csv.loc["dense", "hidden"] == "200-200" and csv.loc["uniform-50", "hidden"] == "100-100"
    grow = store[csv.loc["grow-50", "run_ids"]].data.metrics
    assert "channels/rnn.0.hh" in grow and contract.VAL_PPL in grow
    assert csv.loc["dense", "inference_savings_mean"] == 0
    md = (out / "table-ptb.md").read_text()
    assert "val perplexity" in md and all(i in md for i in store)


# -- the recipe's training options -----------------------------------------------------------------

def test_exponential_schedule_keeps_the_lr_then_divides_it_every_epoch():
    from reproduce.config import TrainConfig
    from reproduce.train import lr_factor
    tc = TrainConfig(epochs=39, lr_schedule="exponential", milestones=[6 / 39], lr_gamma=1 / 1.2)
    assert [lr_factor(tc, e + 0.5) for e in range(6)] == [1.0] * 6      # Zaremba: 6 epochs flat
    assert lr_factor(tc, 6.5) == pytest.approx(1 / 1.2)
    assert lr_factor(tc, 10.0) == pytest.approx(1.2 ** -5)


def test_gradients_are_clipped_when_asked(tiny, monkeypatch):
    from reproduce.runner import execute
    norms = []
    original = torch.nn.utils.clip_grad_norm_

    def record(params, max_norm, *a, **k):
        norms.append(max_norm)
        return original(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record)
    tiny["train"]["epochs"] = 1
    execute(resolve(tiny), progress=False)
    assert norms == []
    tiny["train"]["grad_clip"] = 0.5
    execute(resolve(tiny), progress=False)
    assert norms and set(norms) == {0.5}
    with pytest.raises(Exception, match="grad_clip"):
        resolve({"train": {"grad_clip": -1}})
