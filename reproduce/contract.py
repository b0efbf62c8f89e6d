"""The tracking contract: every tag, metric and artifact name that runs write and analysis reads.

Keep these names stable (stored runs and figures depend on them); add freely. The method core
never imports this module: `GrowthController.architecture_stats` produces the same strings and a
test checks that they are the ones declared here.
"""

from __future__ import annotations

# -- tags of every tracked run ---------------------------------------------------------------
TAGS = ("model", "dataset", "profile", "variant", "seed", "figures", "config_hash", "git_commit",
        "experiment", "device")      # device: what trained it, e.g. "cpu (2 threads)" or a GPU name

# -- artifacts --------------------------------------------------------------------------------
ARTIFACT_CONFIG = "config.yaml"                  # the resolved config
ARTIFACT_ARCH = "architecture.json"              # final per-layer widths, stage and role, depths
ARTIFACT_TRACES = "traces/structures.csv.gz"     # per-structure β, logit, state per epoch
ARTIFACT_MODEL = "model/compact.pt"              # the exported compact model
ARTIFACT_README = "README.md"                    # how to load the compact model
ARTIFACT_DYNAMICS = "channel_dynamics.png"       # the run's retained channels per layer per epoch

# -- per-epoch metrics (step = epochs completed; step 0 is the seed architecture) -----------
VAL_ACC = "val/acc"                  # classification top-1, percent (the task's main metric)
VAL_TOP5 = "val/top5"
VAL_LOSS = "val/loss"
TRAIN_ACC = "train/acc"
TRAIN_LOSS = "train/loss"
VAL_PPL = "val/ppl"                  # language modelling: exp(mean token cross-entropy), main
TRAIN_PPL = "train/ppl"
VAL_MIOU = "val/miou"                # segmentation: mean IoU over classes, percent, main
VAL_PIXEL_ACC = "val/pixel_acc"      # segmentation: pixel accuracy, percent
LR = "lr"
EPOCH_TIME = "time/epoch_s"                      # wall clock of the epoch (training, BN
                                                 # recalibration, evaluation); on a GPU measured
                                                 # with the device synchronised at both ends
TRAIN_TIME_TOTAL = "time/train_s_total"          # cumulative wall-clock of the run's epochs
EPOCH_CPU_TIME = "time/epoch_cpu_s"              # CPU runs: the process's CPU time of the same
                                                 # span (all its threads), less sensitive than
                                                 # the wall clock to other work on the machine
TRAIN_CPU_TIME_TOTAL = "time/train_cpu_s_total"  # CPU runs: cumulative CPU time of the epochs

MACS = "cost/macs"                                # inference MACs of the hard architecture
PARAMS = "cost/params"
DENSE_MACS = "cost/dense_macs"
DENSE_PARAMS = "cost/dense_params"
TRAIN_MACS = "cost/train_macs"                    # this epoch's training MACs
TRAIN_MACS_TOTAL = "cost/train_macs_total"        # cumulative
DENSE_TRAIN_MACS_TOTAL = "cost/dense_train_macs_total"
INFERENCE_SAVINGS = "cost/inference_savings"
TRAIN_SAVINGS = "cost/train_savings"
LAMBDA = "budget/lambda"
USAGE = "budget/usage"
TARGET = "budget/target"                          # a ramped target's value (budget.target_ramp)
PHASE = "phase"                                   # pruning baselines: 0 pre-training, 1 fine-tuning;
                                                  # autogrow: 0 growing, 1 training on
GROWTH_STEP = "autogrow/step"                     # autogrow: growth steps taken so far

# families of per-layer / per-stage metrics: PREFIX + layer name or stage number
CHANNELS = "channels/"               # channels/<layer> retained ratio 0-1, channels/stage<k>
BLOCKS = "blocks/"                   # blocks/stage<k>: active blocks
TEMPERATURE = "temperature/"         # temperature/<layer>: mean β of the layer's structures
METRIC_PREFIXES = (CHANNELS, BLOCKS, TEMPERATURE)
# under the global schedule every structure has the same β: one series instead of one per layer
# (runs tracked before it have the per-layer series)
TEMPERATURE_GLOBAL = f"{TEMPERATURE}global"

# What cannot change during a run is logged once, as a param of the metric's name, not as a
# per-epoch series: cost/dense_macs, cost/dense_params, blocks/stage<k> of a stage without block
# gates, the temperature under a fixed β. Runs tracked before that have them as metrics;
# `final_metrics` reads both the same way. (Config params are dotted keys, never these.)
CONSTANT_PREFIXES = ("cost/", BLOCKS, TEMPERATURE)


def channels(layer: str) -> str:
    return f"{CHANNELS}{layer}"


def stage_blocks(stage: int) -> str:
    return f"{BLOCKS}stage{stage}"


def temperature(layer: str) -> str:
    return f"{TEMPERATURE}{layer}"


# Final-epoch metrics a search can optimise or constrain, and ratios derived from them.
RUN_METRICS = (VAL_ACC, VAL_PPL, VAL_MIOU, VAL_PIXEL_ACC, VAL_LOSS, TRAIN_ACC, TRAIN_LOSS, MACS, PARAMS, TRAIN_MACS_TOTAL,
               INFERENCE_SAVINGS, TRAIN_SAVINGS, USAGE, LAMBDA)
MACS_RATIO = "cost/macs_ratio"
PARAMS_RATIO = "cost/params_ratio"
TRAIN_MACS_RATIO = "cost/train_macs_ratio"
DERIVED_METRICS = {MACS_RATIO: (MACS, DENSE_MACS),
                   PARAMS_RATIO: (PARAMS, DENSE_PARAMS),
                   TRAIN_MACS_RATIO: (TRAIN_MACS_TOTAL, DENSE_TRAIN_MACS_TOTAL)}


def final_metrics(metrics: dict, params: dict) -> dict:
    """A run's last value of every metric, with the constants it logged once as params."""
    out = dict(metrics)
    for key, value in params.items():
        if key.startswith(CONSTANT_PREFIXES) and key not in out:
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def with_derived(stats: dict) -> dict:
    """A run's metrics plus the ratios to the dense model (cost/macs_ratio, ...)."""
    out = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float))}
    for name, (num, den) in DERIVED_METRICS.items():
        if num in out and out.get(den):
            out[name] = out[num] / out[den]
    return out


# Layer roles recorded in architecture.json (so no figure parses layer names); the method
# declares the same vocabulary (method/structure.py: ROLES), and a test ties the two.
ROLE_STREAM = "stream"      # writes channels shared along a residual stream (one gate per stage)
ROLE_INNER = "inner"        # writes channels read only inside its block
ROLE_PLAIN = "plain"        # a plain (non-residual) layer with its own channel gate
ROLE_SHORTCUT = "shortcut"  # a projection shortcut writing the stream
ROLE_HEAD = "head"          # the classifier (a language model's decoder)
ROLE_RECURRENT = "recurrent"  # a recurrent layer's hidden-to-hidden weights
