"""Word-level LSTM language model (Zaremba et al. 2014) with gates on every layer's hidden units.

    embedding (E) -> dropout -> LSTM layer 1 (H) -> dropout -> ... -> LSTM layer L -> dropout
                  -> decoder (H -> vocabulary)

The LSTM cell is written out (x·W_ihᵀ + h·W_hhᵀ per step, gate blocks i, f, g, o stacked along
the outputs, as torch.nn.LSTM stacks them) so that hidden unit k of layer l can be gated:
`rnn.<l>.gate` multiplies h_t, the only way a unit's state leaves it (its cell c_t is read only
by its own h_t). A closed unit outputs exactly 0 to its own recurrence, to the next layer and to
the decoder, so export removes its rows k, H + k, 2H + k, 3H + k from W_ih, W_hh and the bias,
its column from W_hh, and its column from the next layer's W_ih (or the decoder).

Hidden state is carried from one forward call to the next (truncated BPTT: the state is detached
between windows) while the batch size stays the same; `reset_state()` starts a new pass over a
corpus (the training loop and evaluation call it).

Sizes by name, both from Zaremba et al. 2014 (no weight tying, uniform init ±0.05):
  lstm_lm        medium: 2 layers of 650 units, embedding 650, dropout 0.5
  lstm_lm_small  small:  2 layers of 200 units, embedding 200, no dropout
`width_multiplier` scales the hidden units only (the uniform-width baseline: a smaller hidden size).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..method.gates import ChannelGate
from ..method.structure import GatedModel, Site
from .layers import scaled
from .registry import register_model

INIT_RANGE = 0.05          # Zaremba et al. 2014


class GatedLSTMLayer(nn.Module):
    """One LSTM layer over a (B, T, in) sequence; `gate` multiplies h_t (Identity: ungated)."""

    def __init__(self, cin: int, hidden: int, gated: bool):
        super().__init__()
        self.hidden = hidden
        self.ih = nn.Linear(cin, 4 * hidden)               # input to the gate blocks, with bias
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)  # recurrence
        self.gate = ChannelGate(hidden) if gated else None

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        g = None if self.gate is None else self.gate.value().to(x.dtype)  # once per window
        zx = self.ih(x)                   # every step's input projection in one matmul
        outs = []
        for t in range(x.shape[1]):
            i, f, u, o = (zx[:, t] + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
            h = torch.sigmoid(o) * torch.tanh(c)
            if g is not None:
                h = h * g
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


class LSTMLanguageModel(GatedModel):
    """Input: token ids (B, T); output: next-token logits (B, T, vocabulary)."""

    def __init__(self, hidden: int = 650, layers: int = 2, embed: int = 650, dropout: float = 0.5,
                 num_classes: int = 10000, in_channels: int = 1, width_multiplier: float = 1.0,
                 gate_channels: bool = True, gate_blocks: bool = False,
                 sizes: dict[str, int] | None = None, removed=frozenset()):
        super().__init__()
        self.arch = dict(hidden=hidden, layers=layers, embed=embed, dropout=dropout,
                         num_classes=num_classes, in_channels=in_channels,
                         width_multiplier=width_multiplier)
        self.gate_channels = gate_channels
        sizes = sizes or {}
        width = scaled(hidden, width_multiplier)
        self.widths = [sizes.get(f"rnn.{l}.gate", width) for l in range(layers)]
        self.encoder = nn.Embedding(num_classes, embed)
        self.drop = nn.Dropout(dropout)
        cin, rnn = embed, []
        for w in self.widths:
            rnn.append(GatedLSTMLayer(cin, w, gate_channels))
            cin = w
        self.rnn = nn.ModuleList(rnn)
        self.decoder = nn.Linear(cin, num_classes)
        for m in self.modules():           # weights and biases; gate logits are the method's
            if isinstance(m, (nn.Linear, nn.Embedding)):
                for p in m.parameters():
                    nn.init.uniform_(p, -INIT_RANGE, INIT_RANGE)
        self._carry: list[tuple[Tensor, Tensor]] | None = None

    def reset_state(self) -> None:
        """Forget the carried hidden state (the start of a pass over a corpus)."""
        self._carry = None

    def example_input(self) -> Tensor:
        """One token: what the cost counter probes (costs are per token)."""
        return torch.zeros(1, 1, dtype=torch.long)

    def forward(self, tokens: Tensor) -> Tensor:
        b = tokens.shape[0]
        x = self.drop(self.encoder(tokens))
        carry = self._carry if self._carry and self._carry[0][0].shape[0] == b else None
        new = []
        for l, layer in enumerate(self.rnn):
            if carry is None:
                zero = x.new_zeros(b, layer.hidden)
                state = (zero, zero)
            else:
                state = carry[l]
            x, (h, c) = layer(x, state)
            new.append((h.detach(), c.detach()))    # truncated BPTT: no gradient across windows
            x = self.drop(x)
        self._carry = new
        return self.decoder(x)

    # -- structure description (used by costs and export) ---------------------------------------
    def sites(self) -> list[Site]:
        sites, prev = [], None
        for l in range(len(self.rnn)):
            gate = f"rnn.{l}.gate" if self.gate_channels else None
            sites += [Site(f"rnn.{l}.ih", prev, gate, stage=l + 1, role="plain", out_blocks=4),
                      Site(f"rnn.{l}.hh", gate, gate, stage=l + 1, role="recurrent", out_blocks=4)]
            prev = gate
        sites.append(Site("decoder", prev, None, stage=len(self.rnn), role="head"))
        return sites

    def ungated(self) -> list[str]:
        return ["encoder"]


@register_model("lstm_lm", input_size=(1, 1, 1), num_classes=10000, min_size=1)
def lstm_lm(**kwargs) -> LSTMLanguageModel:
    """Zaremba et al. 2014, medium: 2 × 650, dropout 0.5."""
    return LSTMLanguageModel(hidden=650, layers=2, embed=650, dropout=0.5, **kwargs)


@register_model("lstm_lm_small", input_size=(1, 1, 1), num_classes=10000, min_size=1)
def lstm_lm_small(**kwargs) -> LSTMLanguageModel:
    """Zaremba et al. 2014, small: 2 × 200, no dropout."""
    return LSTMLanguageModel(hidden=200, layers=2, embed=200, dropout=0.0, **kwargs)
