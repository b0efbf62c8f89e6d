"""One shareable report per profile: figures/report-<profile>.html (self-contained) and .pdf.

    python -m reproduce report --profile smoke        # make report PROFILE=smoke

Everything comes from what is in the figures folder for that profile (each output's
`<name>.runs.json` sidecar says which runs drew it) and from the tracking store (the runs' tags
and time metrics): every figure, every table, the paper's numbers beside ours with the
difference and the table's own verdict on seed noise (its `*beyond_noise` columns, "n/a" where
a table has none), each row's runs linked to MLflow's UI (`make mlflow-ui`), and the environment:
devices, package versions, commits, CPU- or GPU-hours summed from the runs' tracked times.
The HTML embeds its images as data URIs and fetches nothing; the PDF is matplotlib's PdfPages.
"""

from __future__ import annotations

import base64
import html
import math
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

from . import contract, tracking
from .store import Store

RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
LABEL_COLUMNS = ("model", "family", "variant", "budget", "epochs")
PACKAGES = ("torch", "mlflow", "optuna")


# ------------------------------------------------------------------------------ gathering

def outputs(folder: Path, profile: str) -> list[dict]:
    """The folder's outputs of `profile`, from their sidecars, in natural order."""
    from analysis.index import sidecars
    return [s for s in sidecars(folder) if s.get("profile") == profile]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=tracking.REPO_ROOT,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def compute_hours(runs: pd.DataFrame) -> dict[str, float]:
    """Hours of compute the runs' epochs took, by kind: CPU-hours (wall-clock × threads on a
    CPU) and GPU-hours (wall-clock on one GPU), from each run's final time/train_s_total."""
    out = {"CPU-hours": 0.0, "GPU-hours": 0.0}
    if runs.empty or contract.TRAIN_TIME_TOTAL not in runs:
        return out
    for device, seconds in zip(runs["device"].fillna(""), runs[contract.TRAIN_TIME_TOTAL]):
        if pd.isna(seconds):
            continue
        if device.startswith("cpu"):
            threads = re.search(r"\((\d+) threads?\)", device)
            out["CPU-hours"] += seconds / 3600 * (int(threads.group(1)) if threads else 1)
        else:
            out["GPU-hours"] += seconds / 3600
    return out


def environment(runs: pd.DataFrame, profile: str, uri: str) -> dict[str, str]:
    hours = compute_hours(runs)
    devices = runs["device"].fillna("unknown").value_counts() if len(runs) else pd.Series()
    commits = runs["git_commit"].fillna("unknown").value_counts() if len(runs) else pd.Series()
    env = {"profile": profile,
           "runs": f"{len(runs)} finished runs behind the outputs below",
           "device": "; ".join(f"{d} ({n} runs)" for d, n in devices.items()) or "none",
           **{k: f"{v:.2f}" for k, v in hours.items()},
           **{p: _version(p) for p in PACKAGES},
           "report drawn at commit": _head(),
           "runs trained at commit": "; ".join(f"{c[:12]}{'-dirty' if c.endswith('-dirty') else ''}"
                                               f" ({n} runs)" for c, n in commits.items()) or "none",
           "tracking store": uri,
           "drawn": time.strftime("%Y-%m-%d %H:%M:%S")}
    return env


def _number(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def comparison(csv: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """Paper against ours, one row per table row and metric the paper names: ours (mean ± std),
    paper, difference, the table's seed-noise verdict, and the row's run ids."""
    papers = [c.removeprefix("paper_") for c in csv.columns
              if c.startswith("paper_") and c != "paper_source"]
    if not papers:
        return [], []
    main = papers[0]
    shown = [m for m in papers if m == main or csv[f"paper_{m}"].map(_number).notna().any()]
    noise = [c for c in csv.columns if c.endswith("beyond_noise")]
    labels = [c for c in LABEL_COLUMNS if c in csv.columns]
    rows = []
    for _, r in csv.iterrows():
        label = " · ".join(str(r[c]) for c in labels if str(r[c]) not in ("", "nan", "–"))
        verdicts = []
        for col in noise:
            prefix = col.removesuffix("beyond_noise")
            ref = r.get(f"{prefix}reference", "")
            value = "" if pd.isna(r[col]) else str(r[col])
            if value:
                ref_txt = f" vs {ref}" if isinstance(ref, str) and ref else ""
                verdicts.append(f"{value}{ref_txt}")
        for m in shown:
            ours_col = next((c for c in (f"{m}_mean", f"{m}_m_mean", m) if c in csv.columns), None)
            if ours_col is None and m == "found_net" and "depth" in csv.columns:
                ours_col = "depth"
            ours, paper = (r[ours_col] if ours_col else None), r[f"paper_{m}"]
            o, p = _number(ours), _number(paper)
            std = _number(r.get(ours_col.replace("_mean", "_std"))) if ours_col and \
                ours_col.endswith("_mean") else None
            ours_txt = (_fmt(o, 4) + (f" ± {_fmt(std, 2)}" if std else "")) if o is not None \
                else ("" if ours is None or pd.isna(ours) else str(ours))
            paper_txt = _fmt(p, 4) if p is not None else ("" if pd.isna(paper) else str(paper)) or "–"
            rows.append({"row": label, "metric": m, "ours": ours_txt or "–", "paper": paper_txt,
                         "difference": f"{o - p:+.3g}" if o is not None and p is not None else "–",
                         "beyond seed noise": "; ".join(verdicts) or "n/a",
                         "run_ids": [x for x in str(r.get("run_ids", "")).split(";") if x]})
    return ["row", "metric", "ours", "paper", "difference", "beyond seed noise"], rows


# ------------------------------------------------------------------------------ HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1500px;
padding:24px;color:#222}
h1{font-size:26px;margin:0 0 4px}h2{margin-top:40px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-top:24px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f5f8}tr:nth-child(even) td{background:#fafbfc}
img{max-width:100%;border:1px solid #eee}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
.env td:first-child{font-weight:600;white-space:nowrap}.small{color:#666;font-size:12px}
.yes{color:#b00020;font-weight:600}nav a{margin-right:10px}.scroll{overflow-x:auto}
"""


def _inline(text: str, link) -> str:
    """Markdown inline: `code`, [text](url), run ids as links to their MLflow pages."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            inner = part[1:-1]
            out.append(f"<code>{link(inner) if RUN_ID.fullmatch(inner) else html.escape(inner)}</code>")
            continue
        esc = html.escape(part)
        esc = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
                     lambda mt: f'<a href="{mt.group(2)}">{mt.group(1)}</a>'
                     if mt.group(2).startswith("http") else mt.group(1), esc)
        out.append(RUN_ID.sub(lambda mt: link(mt.group(0)), esc))
    return "".join(out)


def markdown_html(text: str, link) -> str:
    """The subset of Markdown the tables write: headings, bullets, pipe tables, paragraphs."""
    out, table, bullets = [], [], []

    def flush():
        if table:
            head, body = table[0], [r for r in table[2:]]
            out.append('<div class="scroll"><table><tr>' + "".join(f"<th>{_inline(c, link)}</th>"
                       for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{_inline(c, link)}</td>" for c in r) + "</tr>" for r in body)
                + "</table></div>")
            table.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_inline(b, link)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            if bullets:
                flush()
            table.append([c.strip() for c in s.strip("|").split("|")])
            continue
        if s.startswith("- "):
            if table:
                flush()
            bullets.append(s[2:])
            continue
        flush()
        if s.startswith("#"):
            level = min(4, len(s) - len(s.lstrip("#")) + 2)
            out.append(f"<h{level}>{_inline(s.lstrip('#').strip(), link)}</h{level}>")
        elif s:
            out.append(f"<p>{_inline(s, link)}</p>")
    flush()
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


class Report:
    """What one profile's report shows, gathered once for its HTML and its PDF."""

    def __init__(self, folder: Path, profile: str, store: Store | None = None):
        self.folder, self.profile = Path(folder), profile
        self.entries = outputs(self.folder, profile)
        self.store = store or Store()
        ids = {r["run_id"] for e in self.entries for r in e.get("runs", []) if r.get("run_id")}
        runs = self.store.runs(profile)
        self.runs = runs[runs["run_id"].isin(ids)] if len(runs) else runs
        self.env = environment(self.runs, profile, self.store.client.tracking_uri)
        exp = tracking.experiment_id(self.store.client, profile, create=False)
        self.experiment_id = exp or "0"
        self.names = {r["run_id"]: f"{r.get('variant', '')} s{r.get('seed', '')}".strip()
                      for e in self.entries for r in e.get("runs", []) if r.get("run_id")}

    def url(self, run_id: str) -> str:
        return tracking.run_url(self.experiment_id, run_id)

    def link(self, run_id: str, text: str | None = None) -> str:
        return (f'<a href="{html.escape(self.url(run_id))}" title="{run_id}">'
                f'{html.escape(text or run_id)}</a>')

    def figures(self) -> list[tuple[dict, list[Path]]]:
        return [(e, [self.folder / f for f in e["files"] if f.endswith(".png")])
                for e in self.entries if any(f.endswith(".png") for f in e["files"])]

    def tables(self) -> list[tuple[dict, Path | None, pd.DataFrame | None]]:
        out = []
        for e in self.entries:
            md = next((self.folder / f for f in e["files"] if f.endswith(".md")), None)
            csv = next((self.folder / f for f in e["files"] if f.endswith(".csv")), None)
            if md is None and csv is None:
                continue
            out.append((e, md, pd.read_csv(csv, dtype=object) if csv else None))
        return out

    def html(self) -> str:
        title = f"Reproduction report — {self.profile} profile"
        figs, tabs = self.figures(), self.tables()
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}"
                 f"</title><style>{CSS}</style></head><body>",
                 f"<h1>{title}</h1>",
                 "<p class='small'>Growing Efficient Deep Networks by Structured Continuous "
                 "Sparsification (Yuan, Savarese, Maire, ICLR 2021). Every number below is read "
                 "from the tracked runs; run links open their page in <code>make mlflow-ui</code> "
                 f"({html.escape(tracking.ui_base())}).</p>",
                 "<nav>" + "".join(f"<a href='#{e['output']}'>{e['output']}</a>"
                                   for e in self.entries) + "</nav>",
                 "<h2 id='environment'>Environment</h2><table class='env'>"
                 + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                           for k, v in self.env.items()) + "</table>"]
        parts.append("<h2 id='paper'>The paper's numbers beside ours</h2>"
                     "<p class='small'>Difference = ours − paper. <em>Beyond seed noise</em> is "
                     "the table's own verdict on its row (against the row it names, paired over "
                     "seeds); n/a where the table has none. A blank paper value is not known "
                     "here (analysis/reference.csv).</p>")
        for e, _, csv in tabs:
            if csv is None:
                continue
            columns, rows = comparison(csv)
            if not rows:
                continue
            parts.append(f"<h3>{e['output']}</h3><div class='scroll'><table><tr>"
                         + "".join(f"<th>{c}</th>" for c in columns) + "<th>runs</th></tr>")
            for r in rows:
                cells = "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns)
                runs = ", ".join(self.link(i, self.names.get(i, i[:8])) for i in r["run_ids"])
                parts.append(f"<tr>{cells}<td>{runs}</td></tr>")
            parts.append("</table></div>")
        parts.append("<h2 id='figures'>Figures</h2>")
        for e, pngs in figs:
            parts.append(f"<h3 id='{e['output']}'>{e['output']}</h3>")
            for png in pngs:
                parts.append(f"<img alt='{png.name}' src='{_data_uri(png)}'>")
            parts.append(self._runs_line(e))
        parts.append("<h2 id='tables'>Tables</h2>")
        for e, md, _ in tabs:
            parts.append(f"<section id='{e['output']}'>")
            if md is not None:
                parts.append(markdown_html(md.read_text(), self.link))
            parts.append(self._runs_line(e) + "</section>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def _runs_line(self, e: dict) -> str:
        runs = ", ".join(self.link(r["run_id"], f"{r.get('experiment', '')}/"
                                   f"{self.names.get(r['run_id'])}")
                         for r in e.get("runs", []) if r.get("run_id"))
        return (f"<p class='small'>Drawn {html.escape(str(e.get('drawn_at', '?')))} from "
                f"{html.escape(', '.join(e.get('experiments', [])))}; runs: {runs}</p>")

    # -------------------------------------------------------------------------- PDF
    def pdf(self, path: Path) -> Path:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.backends.backend_pdf import PdfPages

        landscape = (11.69, 8.27)
        with PdfPages(path) as pdf:
            fig = plt.figure(figsize=landscape)
            fig.text(0.05, 0.93, f"Reproduction report — {self.profile} profile", fontsize=20,
                     weight="bold")
            fig.text(0.05, 0.89, "Growing Efficient Deep Networks by Structured Continuous "
                     "Sparsification (ICLR 2021)", fontsize=11, color="0.35")
            y = 0.82
            for k, v in self.env.items():
                fig.text(0.05, y, k, fontsize=10, weight="bold")
                fig.text(0.27, y, v[:130], fontsize=10)
                y -= 0.035
            pdf.savefig(fig)
            plt.close(fig)
            for e, _, csv in self.tables():
                if csv is None:
                    continue
                columns, rows = comparison(csv)
                if rows:
                    self._table_pages(pdf, f"{e['output']}: the paper's numbers beside ours",
                                      columns + ["runs"],
                                      [[str(r[c]) for c in columns]
                                       + [", ".join(i[:8] for i in r["run_ids"][:3])]
                                       for r in rows], landscape)
            for e, pngs in self.figures():
                for png in pngs:
                    img = plt.imread(png)
                    fig = plt.figure(figsize=landscape)
                    ax = fig.add_axes((0.03, 0.08, 0.94, 0.84))
                    ax.imshow(img)
                    ax.axis("off")
                    fig.text(0.03, 0.95, e["output"], fontsize=14, weight="bold")
                    ids = ", ".join(r["run_id"][:8] for r in e.get("runs", [])[:12])
                    fig.text(0.03, 0.03, f"runs: {ids}" + (" …" if len(e.get("runs", [])) > 12
                                                           else ""), fontsize=7, color="0.4")
                    pdf.savefig(fig)
                    plt.close(fig)
            for e, md, _ in self.tables():
                if md is None:
                    continue
                header, body = _pipe_table(md.read_text())
                if header:
                    self._table_pages(pdf, e["output"], header, body, landscape)
        return path

    @staticmethod
    def _table_pages(pdf, title: str, header: list[str], body: list[list[str]], size,
                     per_page: int = 26) -> None:
        import matplotlib.pyplot as plt
        for start in range(0, max(1, len(body)), per_page):
            chunk = body[start:start + per_page] or [[""] * len(header)]
            fig = plt.figure(figsize=size)
            fig.text(0.03, 0.95, title + (f" (rows {start + 1}–{start + len(chunk)})"
                                          if len(body) > per_page else ""),
                     fontsize=13, weight="bold")
            ax = fig.add_axes((0.02, 0.04, 0.96, 0.86))
            ax.axis("off")
            t = ax.table(cellText=[[c[:40] for c in row] for row in chunk],
                         colLabels=[h[:28] for h in header], loc="upper center", cellLoc="left")
            t.auto_set_font_size(False)
            t.set_fontsize(6 if len(header) > 9 else 7.5)
            t.auto_set_column_width(list(range(len(header))))
            pdf.savefig(fig)
            plt.close(fig)


def _pipe_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first pipe table of a Markdown text: header and rows (`code` marks removed)."""
    lines = [s.strip() for s in text.splitlines() if s.strip().startswith("|")]
    if len(lines) < 2:
        return [], []
    cells = [[c.strip().replace("`", "") for c in s.strip("|").split("|")] for s in lines]
    return cells[0], [r for r in cells[2:]]


def write(profile: str, folder: Path | None = None, store: Store | None = None) -> list[Path]:
    """figures/report-<profile>.html and .pdf from the outputs present for that profile."""
    from analysis import figures_dir
    folder = Path(folder or figures_dir())
    report = Report(folder, profile, store)
    if not report.entries:
        raise FileNotFoundError(f"no figure or table of profile {profile!r} in {folder}: draw them "
                                f"first (make figures tables PROFILE={profile})")
    page = folder / f"report-{profile}.html"
    page.write_text(report.html())
    pdf = report.pdf(folder / f"report-{profile}.pdf")
    return [page, pdf]


__all__ = ["Report", "comparison", "compute_hours", "markdown_html", "write"]
