"""figures/INDEX.md: what is in the figures folder right now, and which tracked runs made it.

Regenerated after every draw from the `<name>.runs.json` sidecars (figures and tables alike), so
it always matches the files present. What each output shows is in figures/README.md (by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

INDEX = "INDEX.md"


def sidecars(out_dir: Path) -> list[dict]:
    """Every readable sidecar of the folder, with the output files that share its name.

    Figure and table sidecars (analysis.draw) list `runs`; a search's (analysis.search_plots)
    lists `trials` with their MLflow run ids, and its files share the spec's name.
    """
    found = []
    def natural(path: Path):                   # figure-4 before figure-11
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]

    for path in sorted(Path(out_dir).glob("*.runs.json"), key=natural):
        try:
            side = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name = path.name.removesuffix(".runs.json")
        side.setdefault("output", name)
        # an Optuna search's sidecar lists trials, each with its MLflow run, and names its spec
        side.setdefault("runs", [{"run_id": t.get("mlflow_run_id"), "experiment": side.get("spec"),
                                  "variant": f"trial {t.get('number')}", "seed": "",
                                  "config_hash": ""} for t in side.get("trials", [])])
        side.setdefault("experiments", [side["spec"]] if side.get("spec") else [])
        pattern = f"{side['spec']}-*.*" if side.get("spec") else f"{name}.*"
        side["files"] = sorted(p.name for p in path.parent.glob(pattern)
                               if not p.name.endswith(".runs.json"))
        found.append(side)
    return found


def write_index(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    entries = sidecars(out_dir)
    lines = ["# Index of generated figures and tables", "",
             "Generated from the `*.runs.json` sidecars in this folder after every draw; "
             "what each output shows, and its make target, is in [README.md](README.md). "
             "Run ids are MLflow run ids in the tracking store the outputs were drawn from.", "",
             "| output | files | profile | experiment files | runs | drawn |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| [{e.get('output')}](#{e.get('output')}) | "
                     f"{', '.join(f'[{f}]({f})' for f in e['files']) or '(missing)'} | "
                     f"{e.get('profile', '?')} | {', '.join(e.get('experiments', []))} | "
                     f"{len(e.get('runs', []))} | {e.get('drawn_at', '?')} |")
    for e in entries:
        lines += ["", f"## {e.get('output')}", "",
                  f"Profile `{e.get('profile', '?')}`, drawn {e.get('drawn_at', '?')} from "
                  f"{', '.join(f'experiments/{x}.yaml' for x in e.get('experiments', []))}.", "",
                  "| run id | experiment | variant | seed | config hash |", "|---|---|---|---|---|"]
        for r in e.get("runs", []):
            lines.append(f"| `{r.get('run_id')}` | {r.get('experiment')} | {r.get('variant')} | "
                         f"{r.get('seed')} | `{r.get('config_hash')}` |")
    path = out_dir / INDEX
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    from . import figures_dir
    print(f"wrote {write_index(figures_dir())}")
