"""The growing method in one object: what it adds to an ordinary training loop.

    controller = GrowthController(model, input_shape=(3, 32, 32), epochs=160,
                                  gates=GateOptions(), temperature=TemperatureOptions(),
                                  budget=BudgetOptions(target=0.5), rng_seed=0)
    for epoch in range(epochs):
        controller.start_epoch()                      # temperature schedule (from epoch 2 on)
        for x, y in data:
            controller.sample()                       # q ~ Bernoulli(σ(β·s)), once per iteration
                                                      # (or per `gates.resample_every` iterations)
            loss = task_loss(model(x), y) + controller.penalty()
            loss.backward(); controller.after_backward()
            opt_weights.step(); opt_masks.step()
            controller.after_step(batch_size)         # budget λ, training-cost accounting
        controller.end_epoch()                        # costs and channel ratios of the epoch

Objective: task loss + λ_t · Σ_i w_i·p_i with p_i = σ(β_i·s_i) and w_i the cost of structure i
normalised by the mean structure cost (or by the dense total). While pruning (λ > 0) the weights
are always cost-proportional; while growing (λ < 0) too by default (`growth_push = cost`), or
uniform (`growth_push = uniform`: every structure pushed alike).

`execution="restructured"` computes only the sampled sub-network in training (execution.py),
each gate's channels rounded up to a multiple of `channel_multiple`; `after_backward` then gives
the parameters it skipped their (zero) gradient.

Host synchronisations per iteration (on an accelerator): `sample` copies every gate's p to the
host and the samples back, once each for all gates; `after_step` copies the hard architecture to
the host once (the budget's usage, plus the expected cost when `usage = expected`). The training
cost and the restructured plan are computed from the host copy of the samples, without a sync.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor, nn

from .budget import BudgetController
from .costs import CostModel
from .execution import Execution
from .gates import (BlockGate, ChannelGate, Gate, gates_of, open_all, sample_gates, set_sampling,
                    write_samples)
from .options import (SEED_SELECTIONS, BudgetOptions, GateOptions, OptionError,
                      TemperatureOptions, seed_blocks_per_stage)
from .structure import Block, GatedModel
from .temperature import TemperatureSchedule


def init_seed(gates: list[tuple[str, Gate]], fraction: float = 0.25, blocks: str = "one_per_stage",
              selection: str = "first", s_on: float = 0.5, s_off: float = -0.1,
              generator: torch.Generator | None = None, s_off_spread: float = 0.0,
              stage_blocks: list[Block] | None = None, s_on_spread: float = 0.0,
              on_generator: torch.Generator | None = None, spread_blocks: bool = False) -> None:
    """Seed architecture: a fraction of every channel group and n blocks per stage on.

    Seed channels start at logit s_on; the other channels at s_off − spread·u_i, u_i ~ U(0, 1)
    (from `generator`). With spread = 0 all non-seed channels of a gate share one logit, so a
    uniform push moves them across 0 together and the hard usage jumps by a whole gate at once;
    a spread makes them cross one after another, so growth is gradual and the budget controller
    sees the usage rise. `s_on_spread` does the same for the seed channels (s_on + spread·u_i):
    starting from the full network every channel is a seed channel, and without it the pruning
    push closes a whole gate at once. Its draws come from `on_generator` (default `generator`),
    so a caller can leave the non-seed draws as they were without it. `spread_blocks`: closed
    block gates start spread the same way (one draw each, in gate order); without it every block
    shares s_off and all cross 0 together.

    Blocks without a block gate (the first of each stage) are always on, so `one_per_stage` closes
    every gated block and `<n>_per_stage` opens the first n − 1 gated blocks of each stage (in
    network order; `stage_blocks` = the model's blocks()). fraction = 1 with blocks = "all"
    starts from the full network (pruning).
    """
    if selection not in SEED_SELECTIONS:
        raise OptionError(f"seed architecture: selection must be one of "
                          f"{', '.join(SEED_SELECTIONS)}; got {selection!r}")
    per_stage = seed_blocks_per_stage(blocks)
    seed_on: set[str] = set()
    if per_stage is not None and per_stage > 1:
        if stage_blocks is None:
            raise OptionError(f"gates.seed_blocks = {blocks!r} needs the model's blocks "
                              f"(stage_blocks) to know each stage's order")
        count: dict[int, int] = {}
        for b in stage_blocks:
            count[b.stage] = count.get(b.stage, 0) + 1
            if b.gate is not None and count[b.stage] <= per_stage:
                seed_on.add(b.gate)
    with torch.no_grad():
        for name, g in gates:
            if isinstance(g, BlockGate):
                on = per_stage is None or name in seed_on
                g.logits.fill_(s_on if on else s_off)
                if spread_blocks and s_off_spread and not on:
                    u = torch.rand(1, generator=generator)
                    g.logits.sub_(s_off_spread * u.to(g.logits.device))
                continue
            k = min(g.n, max(1, round(fraction * g.n)))
            if selection == "random":
                idx = torch.randperm(g.n, generator=generator)[:k]
            else:
                idx = torch.arange(k)
            g.logits.fill_(s_off)
            if s_off_spread:
                u = torch.rand(g.n, generator=generator)
                g.logits.sub_(s_off_spread * u.to(g.logits.device))
            g.logits[idx.to(g.logits.device)] = s_on
            if s_on_spread:
                u = torch.rand(k, generator=on_generator or generator)
                g.logits[idx.to(g.logits.device)] += s_on_spread * u.to(g.logits.device)


class GrowthController:
    """Gates, temperature, budget and costs of one model, attached to a training loop."""

    def __init__(self, model: GatedModel, input_shape: tuple[int, ...], *, epochs: int,
                 gates: GateOptions = GateOptions(),
                 temperature: TemperatureOptions = TemperatureOptions(),
                 budget: BudgetOptions = BudgetOptions(), rng_seed: int = 0,
                 execution: str = "masked", channel_multiple: int = 1):
        self.model = model
        self.gate_options, self.budget_options = gates, budget
        self.named_gates = gates_of(model)
        self.gates = [g for _, g in self.named_gates]
        self._by_name = dict(self.named_gates)
        set_sampling(model, gates.sampling)
        for g in self.gates:
            if isinstance(g, ChannelGate):
                g.min_active = min(gates.min_channels, g.n)
        self.draws = 0                # sample() calls that drew or held q (the period's clock)
        self.epochs_started = 0
        self.generator = torch.Generator().manual_seed(rng_seed)   # same stream on every rank
        init_seed(self.named_gates, gates.seed_fraction, gates.seed_blocks, gates.seed_selection,
                  gates.s_on, gates.s_off, torch.Generator().manual_seed(rng_seed + 1),
                  gates.s_off_spread, stage_blocks=model.blocks(), s_on_spread=gates.s_on_spread,
                  on_generator=torch.Generator().manual_seed(rng_seed + 2),
                  spread_blocks=gates.spread_blocks)
        self.costs = CostModel(model, input_shape)
        self.temperature = TemperatureSchedule(self.gates, temperature, epochs)
        # a model without gates (the dense baseline) has nothing to push: λ stays 0
        self.budget = BudgetController(budget if self.gates else
                                       replace(budget, metric="none", lambda_base=0.0))
        self.cost_weights, self.uniform_weights = self._penalty_weights(budget.cost,
                                                                        budget.normalize)
        # layer growing: weights follow the current architecture (budget.block_costs)
        self._current_costs = (budget.block_costs == "current" and budget.cost != "uniform"
                               and any(isinstance(g, BlockGate) for g in self.gates))
        self._weights_of: Tensor | None = None     # the hard state the weights were computed for
        self._refresh_weights()
        self.train_macs_epoch = 0.0
        self.train_macs_total = 0.0
        self.dense_train_macs_total = 0.0   # the dense model over the same schedule
        self.epochs = epochs
        seed_usage = self.current_usage()
        self.budget.start_ramp(seed_usage)
        self.budget.set_epoch(1, epochs)
        self.budget.update(seed_usage)
        self.execution = Execution(model, execution, gates.sampling, channel_multiple)
        self._sampled: _Sample | None = None    # host copy of this iteration's q
        self._held: _Sample | None = None       # host copy of the period's q

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What is not in the model's own state: sampling RNG, budget, schedule, cost totals.
        (Logits, β and the current samples are model parameters and buffers.)"""
        return {"generator": self.generator.get_state(), "epochs_started": self.epochs_started,
                "draws": self.draws,
                "lambda": self.budget.lam, "usage": self.budget.usage,
                "ramp_from": self.budget.ramp_from,
                "temperature": self.temperature.state_dict(),
                "train_macs_epoch": self.train_macs_epoch,
                "train_macs_total": self.train_macs_total,
                "dense_train_macs_total": self.dense_train_macs_total}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epochs_started = state["epochs_started"]
        self.draws = state.get("draws", 0)     # checkpoints from before periodic sampling: 0
        self._held = None                      # the held q is read back from the gates
        self.budget.lam, self.budget.usage = state["lambda"], state["usage"]
        self.budget.ramp_from = state.get("ramp_from", self.budget.ramp_from)
        self.budget.set_epoch(max(1, self.epochs_started), self.epochs)
        self.temperature.load_state_dict(state["temperature"])
        self.train_macs_epoch = state["train_macs_epoch"]
        self.train_macs_total = state["train_macs_total"]
        self.dense_train_macs_total = state["dense_train_macs_total"]
        self._refresh_weights()                # for the logits just loaded

    # -- parameters ---------------------------------------------------------------------------
    def mask_parameters(self) -> list[nn.Parameter]:
        return [g.logits for g in self.gates]

    def weight_parameters(self) -> list[nn.Parameter]:
        masks = {id(p) for p in self.mask_parameters()}
        return [p for p in self.model.parameters() if id(p) not in masks]

    # -- per iteration ------------------------------------------------------------------------
    def sample(self, replay: Tensor | None = None) -> None:
        """Draw this iteration's sub-network (and plan its restructured forward). `replay`: the
        samples of every gate, concatenated in gate order, to use instead of drawing (e.g. to
        time a recorded schedule).

        With `resample_every` = k, q is drawn at the k-th calls 0, k, 2k, ... and held in
        between: the same sub-network trains for k iterations, its gate values g = q·p moving
        with the logits. The held q is the gates' `sample` buffers (model state), so a resumed
        run holds the same q; one transfer reads it back to the host after a resume."""
        if not self.gates:
            return
        if replay is not None:
            q = replay.detach().float().cpu()
            write_samples(self.gates, q)
            self._held = None             # a period in progress continues from these samples
        elif self.gate_options.sampling == "deterministic":
            open_all(self.gates)      # nothing is skipped: every channel is computed
            q = torch.ones(sum(g.n for g in self.gates))
        elif self.gate_options.sampling == "hard":   # fixed masks: the hard architecture trains
            q = torch.cat([g.hard().detach() for g in self.gates])
            write_samples(self.gates, q)
            q = q.cpu()
        else:
            if self.draws % self.gate_options.resample_every == 0:
                self._held = self._sample(sample_gates(self.gates, self.generator).cpu())
            elif self._held is None:                    # resumed inside a period
                self._held = self._sample(torch.cat([g.sample.detach().float()
                                                     for g in self.gates]).cpu())
            self.draws += 1
            self._sampled = self._held                  # the same object: the plan is reused
            self.execution.plan(self._held.state, self._held.q)
            return
        self._sampled = self._sample(q)
        self.execution.plan(self._sampled.state, self._sampled.q)

    def _sample(self, q: Tensor) -> "_Sample":
        """The concatenated samples `q` (host), and the same per gate."""
        return _Sample(q, dict(zip((n for n, _ in self.named_gates), q.split(self.costs.sizes))))

    def _sampled_macs(self, sampled: "_Sample") -> float:
        """Forward MACs of a sampled architecture, counted once per sample (a held q is
        counted once for its whole period)."""
        if sampled.macs is None:
            sampled.macs = self.costs.count_flat(sampled.q)[0]
        return sampled.macs

    def after_backward(self) -> None:
        """Between backward and the optimizer steps: parameters a restructured forward skipped
        get the zero gradient masked execution gives them (a no-op in masked execution)."""
        self.execution.complete_grads()

    def penalty(self) -> Tensor:
        """λ_t · Σ_i w_i·p_i (zero when λ = 0 or there are no gates)."""
        lam = self.budget.lam
        if not self.gates or lam == 0.0:
            return torch.zeros((), device=self._device())
        p = torch.cat([g.probs() for g in self.gates])
        grow_uniform = lam < 0 and self.budget_options.growth_push == "uniform"
        w = (self.uniform_weights if grow_uniform else self.cost_weights).to(p.device, p.dtype)
        return lam * (w * p).sum()

    def after_step(self, batch_size: int) -> None:
        """Account the iteration's training cost (forward + backward ≈ 3 × forward) and update λ."""
        sampled, self._sampled = self._sampled, None
        macs = self._sampled_macs(sampled) if sampled is not None else \
            float(self.costs.count(self.costs.sampled_state())[0])
        self.execution.clear()
        self.train_macs_epoch += 3.0 * macs * batch_size
        self.dense_train_macs_total += 3.0 * self.costs.dense_macs * batch_size
        self._refresh_weights()
        self.budget.update(self.current_usage())

    @contextmanager
    def hard_architecture(self):
        """Forwards inside this block run the hard architecture g = 1[s > 0] (yielded: per gate,
        0/1, on the host). In restructured execution only what is on is computed: layers run on
        their active channels (in evaluation mode with their running statistics) and closed
        blocks are skipped, which gives the masked forward's outputs (up to floating-point
        summation order) at the sub-network's cost. Evaluation runs in it, and the BN
        re-estimation before it; in masked execution and without gates it plans nothing."""
        state = self.costs.hard_state()
        self.execution.plan(state)
        try:
            yield state
        finally:
            self.execution.clear()

    @torch.no_grad()
    def recalibrate_bn(self, batches, num_batches: int) -> None:
        """Re-estimate BatchNorm statistics for the hard architecture g = 1[s > 0].

        In training BN's running statistics are collected under the sampled gates (q·p), whose
        activations differ from the hard architecture that is evaluated. Before an evaluation,
        reset every BN's running mean/var and recompute them as the plain average over
        `num_batches` training batches, forward only, in train mode with hard gates (as
        slimmable networks do). Weights and logits are untouched. The forward MACs of these
        passes (hard architecture × batch size, no backward) are counted in the epoch's training
        cost; the dense reference does not do them, so the savings stay honest. A model without
        gates (a dense baseline) re-estimates its statistics the same way, when asked to.
        """
        if num_batches <= 0:
            return
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:                             # nothing to re-estimate (e.g. an LSTM)
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None                   # cumulative average over the batches
        was_training = self.model.training
        self.model.train()
        set_sampling(self.model, "hard")
        epoch = getattr(batches, "epoch", None)  # do not advance a loader's epoch counter
        try:
            with self.hard_architecture() as hard_state:
                hard_macs = float(self.costs.count(hard_state)[0])
                for i, (x, _) in enumerate(batches):
                    if i >= num_batches:
                        break
                    self.model(x)
                    self.train_macs_epoch += hard_macs * x.shape[0]
        finally:
            if epoch is not None:
                batches.epoch = epoch
            set_sampling(self.model, self.gate_options.sampling)
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            self.model.train(was_training)

    def current_usage(self) -> float:
        if self.budget.metric == "none":
            return self.costs.hard()[0] / self.costs.dense_macs
        use_params = self.budget.metric == "params"
        if self.budget_options.usage == "expected":
            with torch.no_grad():
                macs, params = self.costs.count(self.costs.prob_state())
            macs, params = float(macs), float(params)
        else:
            macs, params = self.costs.hard()
        return params / self.costs.dense_params if use_params else macs / self.costs.dense_macs

    # -- per epoch ----------------------------------------------------------------------------
    def start_epoch(self) -> None:
        """Open an epoch: β advances between epochs (so the last epoch trains at β_T)."""
        if self.epochs_started:
            self.temperature.step()
        self.epochs_started += 1
        self.budget.set_epoch(self.epochs_started, self.epochs)

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch: the hard architecture, its costs and the β it trained with."""
        self.train_macs_total += self.train_macs_epoch
        stats = self.architecture_stats()
        stats["cost/train_macs"] = self.train_macs_epoch
        self.train_macs_epoch = 0.0
        return stats

    def architecture_stats(self) -> dict[str, float]:
        """Costs, budget state, per-layer and per-stage channel ratios, and mean β per layer."""
        macs, params = self.costs.hard()
        stats = {
            "cost/macs": macs, "cost/params": params,
            "cost/dense_macs": self.costs.dense_macs, "cost/dense_params": self.costs.dense_params,
            "cost/train_macs_total": self.train_macs_total,
            "cost/dense_train_macs_total": self.dense_train_macs_total,
            "cost/inference_savings": 1.0 - macs / self.costs.dense_macs,
            "cost/train_savings": 1.0 - self.train_macs_total / max(1.0, self.dense_train_macs_total),
            "budget/lambda": self.budget.lam, "budget/usage": self.budget.usage,
        }
        if self.budget.ramp > 0:                # the target moves: log where it stood
            stats["budget/target"] = self.budget.target
        stats.update(self.costs.stage_summary())
        for layer, ratio in self.costs.layer_ratios().items():
            stats[f"channels/{layer}"] = ratio
        for layer, beta in self.layer_temperatures().items():
            stats[f"temperature/{layer}"] = beta
        return stats

    def constant_keys(self) -> set[str]:
        """Keys of `architecture_stats` whose value cannot change while this controller trains:
        the dense model's costs, the block count of a stage none of whose blocks is gated, and
        every temperature when β is fixed (β_0 = β_T)."""
        keys = {"cost/dense_macs", "cost/dense_params"}
        gated = {b.stage for b in self.costs.blocks if b.gate is not None}
        keys |= {f"blocks/stage{b.stage}" for b in self.costs.blocks if b.stage not in gated}
        if self.temperature.beta_0 == self.temperature.beta_final:
            keys |= {f"temperature/{layer}" for layer in self.layer_temperatures()}
        return keys

    def shared_temperature(self) -> bool:
        """Whether one β holds for every structure (the global schedule): the per-layer
        temperatures of `architecture_stats` then repeat one number."""
        return self.temperature.schedule == "global"

    def layer_temperatures(self) -> dict[str, float]:
        return {s.name: float(self._gate(s.out_gate).beta.mean())
                for s in self.costs.sites if s.out_gate is not None}

    def structure_state(self) -> dict[str, list]:
        """Per-structure β, logit and hard state, flat and aligned (for the columnar trace)."""
        out: dict[str, list] = {"gate": [], "index": [], "kind": [], "beta": [], "logit": [],
                                "active": []}
        for name, g in self.named_gates:
            n = g.n
            out["gate"] += [name] * n
            out["index"] += list(range(n))
            out["kind"] += ["block" if isinstance(g, BlockGate) else "channel"] * n
            out["beta"] += g.beta.detach().cpu().tolist()
            out["logit"] += g.logits.detach().cpu().tolist()
            out["active"] += (g.hard().detach() > 0).cpu().tolist()
        return out

    # -- helpers ------------------------------------------------------------------------------
    def _penalty_weights(self, cost: str, normalize: str) -> tuple[Tensor, Tensor]:
        """Per-structure penalty weights: cost-proportional, and uniform with the same mean."""
        per_gate = self.costs.structure_costs(cost)
        c = torch.cat([torch.full((g.n,), per_gate[name]) for name, g in self.named_gates]) \
            if self.gates else torch.zeros(0)
        if normalize == "mean":
            scale = c.mean() if c.numel() else torch.tensor(1.0)
        elif cost == "uniform":
            scale = torch.tensor(float(max(1, c.numel())))
        else:
            scale = torch.tensor(self.costs.dense_params if cost == "params" else self.costs.dense_macs)
        w = c / scale
        uniform = torch.full_like(c, float(w.mean()) if c.numel() else 1.0)
        return w, uniform

    def _refresh_weights(self) -> None:
        """With `budget.block_costs = current` (block-gated models): w_i = what structure i costs
        in the current hard architecture, ∂cost/∂state_i (a block: its layers at the current
        widths; a channel: its layers' other sides, times their blocks' states), over the dense
        network's cost per channel, 2·dense / Σ output channels (each conv counted on both its
        sides, as a channel's dense cost is). So a block is pushed as the channels inside it,
        whether or not the model also gates channels, and a block of a narrow seed weighs what it
        costs at that width. `normalize = total`: over the dense total instead. Recomputed only
        when the hard architecture changes."""
        if not self._current_costs:
            return
        hard = self.costs.hard_state()
        key = torch.cat([hard[n] for n, _ in self.named_gates])
        if self._weights_of is not None and torch.equal(key, self._weights_of):
            return
        self._weights_of = key
        state = {n: hard[n].double().requires_grad_() for n, _ in self.named_gates}
        macs, params = self.costs.count(state)
        use_params = self.budget_options.cost == "params"
        (params if use_params else macs).backward()
        c = torch.cat([state[n].grad.float() for n, _ in self.named_gates])
        dense = self.costs.dense_params if use_params else self.costs.dense_macs
        if self.budget_options.normalize == "total":
            scale = dense
        else:
            scale = 2.0 * dense / max(1, sum(sh.cout * sh.rows for sh in self.costs.shapes))
        w = c / scale
        self.cost_weights = w
        self.uniform_weights = torch.full_like(w, float(w.mean()) if w.numel() else 1.0)

    def _gate(self, name: str) -> Gate:
        return self._by_name[name]

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


class _Sample:
    """A sampled architecture on the host: the concatenated q (gate order), the same per gate,
    and its forward MACs once counted."""

    __slots__ = ("q", "state", "macs")

    def __init__(self, q: Tensor, state: dict[str, Tensor]):
        self.q, self.state = q, state
        self.macs: float | None = None


__all__ = ["GrowthController", "init_seed"]
