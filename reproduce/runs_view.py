"""How the suite's MLflow experiments present themselves in MLflow's UI: a curated runs view and a
description, both stored as experiment tags (no MLflow import here: plain names and JSON).

- The curated view is MLflow's own "shared view" mechanism: an experiment tag
  `mlflow.sharedViewState.<key>` holds the runs page's state as JSON, and a link carrying
  `?viewStateShareKey=<key>` opens it (`tracking.runs_table_url`). The suite's MLflow app
  (`reproduce.mlflow_app`) also makes it the first view of a browser that has none of its own.
- The description (`mlflow.note.content`, shown on the experiment page) says how to tell the
  runs of one experiment file apart and what a step is. A description someone wrote in the UI
  (one without the suite's last line) is left alone.

The state's format is that of MLflow 3.17's UI (server/js: `sharedViewState`, the runs page's UI
state keys `selectedColumns`, `compareRunCharts`, `compareRunSections`, ...); the browser tests
check that the UI shows it.
"""

from __future__ import annotations

import json

from .contract import MACS, USAGE, VAL_ACC, channels

SHARE_KEY = "reproduce"
VIEW_TAG = f"mlflow.sharedViewState.{SHARE_KEY}"
DESCRIPTION_TAG = "mlflow.note.content"
DESCRIPTION_MARK = ("_Written by the reproduction suite, which updates it; delete this line to "
                    "keep your own description._")

# Channel ratios per stage: 3 stages for the CIFAR ResNets, up to 5 for VGG and MobileNet. A
# column or curve of a metric that no shown run has stays empty.
STAGES = 5
TAG_COLUMNS = ("variant", "seed")     # the rest of a run's identity is in its name
STAGE_RATIOS = tuple(channels(f"stage{k}") for k in range(1, STAGES + 1))   # channels/stage<k>
METRIC_COLUMNS = (VAL_ACC, USAGE, MACS, *STAGE_RATIOS)
SECTION = "Reproduction"
RUN_NAME = "attributes.`Run Name`"          # the runs table's column ids (ag-grid colId)


def column(kind: str, name: str) -> str:
    """A runs-table column key as the UI spells it: tags.`variant`, metrics.`val/acc`."""
    return f"{kind}.`{name}`"


def _line(uuid: str, name: str, keys: list[str]) -> dict:
    """A line chart over steps (epochs) of one or several metrics."""
    return {"uuid": uuid, "type": "LINE", "displayName": name, "metricSectionId": SECTION.lower(),
            "runsCountToCompare": 10, "deleted": False, "isGenerated": False,
            "metricKey": keys[0], "selectedMetricKeys": keys, "lineSmoothness": 0,
            "xAxisKey": "step", "xAxisScaleType": "linear", "scaleType": "linear",
            "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
            "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True,
            "range": {}}


def runs_view() -> dict:
    """The runs page's state: the columns above and a chart section with the growth at a glance
    (channel ratios per stage, val/acc, cost/macs, budget/usage per epoch; final accuracy
    against final MACs)."""
    stages = list(STAGE_RATIOS)
    charts = [
        _line("reproduce-stage-ratios", "channels kept per stage (ratio)", stages),
        _line("reproduce-val-acc", VAL_ACC, [VAL_ACC]),
        _line("reproduce-macs", MACS, [MACS]),
        _line("reproduce-usage", USAGE, [USAGE]),
        {"uuid": "reproduce-acc-vs-macs", "type": "SCATTER", "displayName": "val/acc vs cost/macs",
         "metricSectionId": SECTION.lower(), "runsCountToCompare": 100, "deleted": False,
         "isGenerated": False, "xaxis": {"key": MACS, "type": "METRIC"},
         "yaxis": {"key": VAL_ACC, "type": "METRIC"}},
    ]
    columns = [column("tags", t) for t in TAG_COLUMNS] + [column("metrics", m) for m in METRIC_COLUMNS]
    return {
        "selectedColumns": columns,
        # the run's name wide enough for `<variant>-s<seed> · <model> · <experiment>`, then the
        # columns in the order above (the UI's own order is alphabetical, metrics first)
        "columnOrder": [RUN_NAME, "runDateAndNestInfo", *columns],
        "columnWidths": {RUN_NAME: 280, column("tags", "seed"): 70,
                         **{c: 110 for c in columns if c != column("tags", "seed")}},
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": SECTION.lower(), "name": SECTION, "display": True,
                                "isReordered": False, "deleted": False, "isGenerated": False}],
        # kept in this order, the suite's section first: otherwise the UI sorts the sections by
        # name, the generated ones (blocks, budget, channels, ...) included
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


def description(profile: str) -> str:
    """The experiment's description (Markdown); its first line is what the page shows folded."""
    return "\n".join([
        f"Every run of the reproduction suite with `PROFILE={profile}`. One experiment file's "
        f"runs: `tags.experiment = 'figure-7'` in the search box. A step is an epoch.",
        "",
        "- **Runs** are named `<variant>-s<seed> · <model> · <experiment file>`. Filter with "
        "`tags.experiment = 'figure-7'` (the runs that file declares), `tags.figures LIKE "
        "'%figure-7%'` (every run the figure draws, also those shared with other figures), "
        "`tags.variant = 'grow'`, `tags.seed = '0'`.",
        "- **Steps** are epochs: the metrics of step *e* were measured after *e* epochs of "
        "training; step 0 is the seed architecture before training.",
        "- **The suite's view** of this table (variant, seed, val/acc, budget/usage, cost/macs, "
        "channels kept per stage, and a chart section of them): `python -m reproduce links` "
        f"prints its link (`?viewStateShareKey={SHARE_KEY}`).",
        "- **Search trials** are nested under their study's `search:<study>` run.",
        "",
        DESCRIPTION_MARK,
    ])


def experiment_tags(profile: str, have: dict[str, str] | None = None) -> dict[str, str]:
    """The tags the suite keeps on the profile's experiment, given the tags it has: the view
    always (it is the suite's), the description unless someone replaced it."""
    have = have or {}
    tags = {VIEW_TAG: json.dumps(runs_view(), separators=(",", ":"))}
    note = have.get(DESCRIPTION_TAG)
    if not note or note.rstrip().endswith(DESCRIPTION_MARK):
        tags[DESCRIPTION_TAG] = description(profile)
    return tags
