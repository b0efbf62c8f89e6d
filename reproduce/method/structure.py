"""What the method needs to know about a network: its gated layers and its removable blocks.

A model the method can grow is a `GatedModel`. It declares

    sites()    every conv / linear layer whose cost depends on gates (`Site`): which channel gate
               feeds its input channels, which one gates its outputs, which block gate contains
               it, the BatchNorm right after it, its stage and its role in the network;
    blocks()   every block that counts toward a stage's depth (`Block`), with its block gate, or
               None when the block can never be removed;
    arch       the constructor arguments that rebuild the same network;
    ungated()  modules no gate touches that hold weights (copied as they are on export);
    compact()  the same network with `sizes[gate]` channels per channel gate and the `removed`
               blocks replaced by what a closed block computes (the identity for a residual block).

Costs, export, the growth controller and the tracked architecture summaries read only this
interface, so a new model family plugs in by implementing it (see models/resnet_cifar.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# A layer's role (recorded per layer in architecture.json, so figures never parse layer names).
ROLES = ("stream", "inner", "plain", "shortcut", "head", "recurrent")


@dataclass(frozen=True)
class Site:
    """One conv or linear layer whose cost depends on gates."""
    name: str                   # module path of the conv / linear layer
    in_gate: str | None         # channel gate on its input channels (None: fixed width)
    out_gate: str | None        # channel gate on its output channels (None: fixed width)
    block: str | None = None    # block gate of the removable block containing it
    bn: str | None = None       # BatchNorm right after it (sliced with the outputs on export)
    stage: int = 0
    depthwise: bool = False
    role: str = "plain"         # one of ROLES
    # output rows per gated structure: an LSTM layer stacks its 4 gate blocks (i, f, g, o) along
    # the outputs, so hidden unit k owns rows k, H + k, 2H + k, 3H + k of its weight matrices
    out_blocks: int = 1

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"site {self.name}: unknown role {self.role!r}; choose one of "
                             f"{', '.join(ROLES)}")


@dataclass(frozen=True)
class Block:
    """A block that counts toward its stage's depth; `gate` is None if it is never removed."""
    name: str                   # module path of the block
    stage: int
    gate: str | None = None


class GatedModel(nn.Module):
    """Base class of every model the method can grow (see the module docstring)."""

    arch: dict
    # True when every channel gate that follows a site's BN is applied directly to that BN's output
    # and nothing else reads the BN's output: restructured execution then folds the gate into
    # the BN's affine transform (gates.Fold), one pass over the activations less
    gates_follow_bn: bool = False

    def sites(self) -> list[Site]:
        raise NotImplementedError

    def blocks(self) -> list[Block]:
        return []

    def removable_blocks(self) -> list[Block]:
        return [b for b in self.blocks() if b.gate is not None]

    def compact(self, sizes: dict[str, int], removed: set[str]) -> "GatedModel":
        """A gate-free copy of this architecture with the given widths and removed blocks."""
        return type(self)(**self.arch, gate_channels=False, gate_blocks=False, sizes=sizes,
                          removed=removed)

    def layer_info(self) -> dict[str, dict]:
        """Stage and role of every gated layer, in network order (JSON-ready)."""
        return {s.name: {"stage": s.stage, "role": s.role} for s in self.sites()}

    def ungated(self) -> list[str]:
        """Modules outside every site whose tensors export copies unchanged (e.g. an embedding)."""
        return []


class StagedModel(GatedModel):
    """A network of stages of blocks (`layer<k>.<j>`), `arch["depths"]` blocks per stage, whose
    first block of each stage is never removed and whose others carry a block gate
    `layer<k>.<j>.block_gate` when `gate_blocks`; `removed` blocks (export) count no depth."""

    gate_channels: bool
    gate_blocks: bool
    removed: frozenset

    def gate(self, name: str) -> str | None:
        """`name` when the model has channel gates, else None (fixed width)."""
        return name if self.gate_channels else None

    def blocks(self) -> list[Block]:
        out = []
        for k, depth in enumerate(self.arch["depths"]):
            for j in range(depth):
                name = f"layer{k + 1}.{j}"
                if name in self.removed:
                    continue
                gated = self.gate_blocks and j > 0
                out.append(Block(name, k + 1, f"{name}.block_gate" if gated else None))
        return out


def inside(site: Site, removed: set[str]) -> bool:
    """Whether a layer lies inside one of the removed blocks."""
    return any(site.name.startswith(b + ".") for b in removed)
