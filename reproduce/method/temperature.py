"""Temperature schedules: β rises once per epoch so that σ(β·s) hardens into a binary mask.

  global            one β for all: β_t = β_0·γ^t with γ = (β_T/β_0)^(1/(T−1)), so β = β_T in the last epoch
  separate          β_i is multiplied by γ only in epochs where structure i was active
  separate_decayed  as separate, and β_i ← max(β_0, δ·β_i) in epochs where it was inactive

"Active in an epoch" = on in the hard architecture at the end of that epoch [ours].

`ramp_fraction` f ≤ 1 compresses the schedule: with R = max(1, round(f·T)) epochs of ramp,
γ = (β_T/β_0)^(1/(R−1)) and β is capped at β_T, so the global β reaches β_T in epoch R and stays
there (f = 1 is the plain schedule above).
`step()` is called between epochs (GrowthController.start_epoch), never after the last one, so β
reaches β_T exactly in the final epoch.
"""

from __future__ import annotations

from typing import Iterable

import torch

from .gates import Gate
from .options import TemperatureOptions


class TemperatureSchedule:
    """β of `gates` over `epochs` epochs, as `options` say (checked there)."""

    def __init__(self, gates: Iterable[Gate], options: TemperatureOptions, epochs: int):
        self.gates = list(gates)
        self.schedule, self.decay = options.schedule, options.decay
        self.beta_0, self.beta_final = options.beta_0, options.beta_final
        self.ramp_epochs = max(1, min(epochs, round(options.ramp_fraction * epochs)))
        self.gamma = (self.beta_final / self.beta_0) ** (1.0 / max(1, self.ramp_epochs - 1))
        self.epoch = 0
        for g in self.gates:
            g.beta.fill_(self.beta_0)

    @torch.no_grad()
    def step(self) -> None:
        """Advance β by one epoch (call between epochs)."""
        self.epoch += 1
        for g in self.gates:
            if self.schedule == "global":
                g.beta.fill_(min(self.beta_final,
                                 self.beta_0 * self.gamma ** min(self.epoch, self.ramp_epochs - 1)))
                continue
            active = g.hard() > 0
            grown = (g.beta * self.gamma).clamp_max(self.beta_final)
            if self.schedule == "separate":
                g.beta.copy_(torch.where(active, grown, g.beta))
            else:
                decayed = (g.beta * self.decay).clamp_min(self.beta_0)
                g.beta.copy_(torch.where(active, grown, decayed))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
