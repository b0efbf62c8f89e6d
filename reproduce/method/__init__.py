"""The method of Yuan, Savarese & Maire (ICLR 2021) in plain PyTorch.

Read in this order: structure (what a growable model declares), gates (the continuous relaxation and its sampling), temperature (how masks
harden), budget (how the penalty follows a resource target), costs (what a structure costs),
growth (all of it attached to a training loop), export (the final compact network).
No tracking or search library is imported here: the method drops into any training loop.
"""

from .budget import BudgetController
from .costs import CostModel
from .export import architecture_summary, export, hard_architecture
from .gates import (BlockGate, ChannelGate, Gate, PassThroughGate, gates_of, sample_gates,
                    set_sampling)
from .growth import GrowthController, init_seed
from .structure import Block, GatedModel, Site
from .temperature import TemperatureSchedule

__all__ = ["Block", "BlockGate", "GatedModel", "BudgetController", "ChannelGate", "CostModel", "Gate", "GrowthController",
           "PassThroughGate",
           "Site", "TemperatureSchedule", "architecture_summary", "export", "gates_of",
           "hard_architecture", "init_seed", "sample_gates", "set_sampling"]
