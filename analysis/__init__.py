"""Figures and tables, each drawn from tracked runs only.

One module per output: `figure_<N>.py` or `table_<name>.py`, each declaring EXPERIMENTS (the
experiment files whose runs it reads) and `draw(runs, stem, profile, store) -> [paths]`, where
`runs` is the frame of its finished runs and `store` the `reproduce.store.Store` they came from
(for histories and artifacts). The modules read the tracking store and nothing else: from the
package they import only the store readers (`reproduce.store`, `reproduce.study_results`), the
names runs are tracked under (`reproduce.contract`) and its errors. Shared helpers are modules
of their own (`tables`, `variants`: the run taxonomy, `stages`, `widths`, `traces`, `costs`);
outputs never import each other. Planning and training what a figure needs is
`reproduce.pipeline.make`, behind `make figure-N`.
"""

from __future__ import annotations

import os
from pathlib import Path

from reproduce.errors import ConfigError

DEFAULT_FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"


def figures_dir() -> Path:
    """Where outputs go: $FIGURES_DIR, else figures/ at the repository root."""
    return Path(os.environ.get("FIGURES_DIR") or DEFAULT_FIGURES_DIR)


def targets() -> dict[str, str]:
    """Output name -> analysis module: every analysis/figure_*.py and analysis/table_*.py.

    Each such module declares EXPERIMENTS (the experiment files whose runs it reads) and
    draw(runs, stem, profile, store) -> list of written paths.
    """
    here = Path(__file__).parent
    found = {}
    for path in sorted(here.glob("figure_*.py")) + sorted(here.glob("table_*.py")):
        kind, _, name = path.stem.partition("_")
        found[f"{kind}-{name.replace('_', '-')}"] = f"analysis.{path.stem}"
    return found


def canonical(target: str) -> str:
    t = str(target).strip().lower()
    if t.isdigit():
        t = f"figure-{t}"
    elif not t.startswith(("figure-", "table-")):
        t = f"table-{t}"
    if t not in targets():
        raise ConfigError(f"unknown figure or table {target!r}; choose one of "
                          f"{', '.join(targets())}")
    return t
