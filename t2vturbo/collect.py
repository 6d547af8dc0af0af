"""Collect the final metrics of every run under a directory (a Hydra multirun sweep) into one table.

    python -m t2vturbo.collect SWEEP_DIR [--markdown | --csv OUT]

A run is any directory holding ``metrics.jsonl`` (found recursively). Per run: the overrides Hydra
recorded in ``.hydra/overrides.yaml`` (only those that differ between the runs, plus ``job``), the
final step and the metrics of the last logged training step, and the status (``done`` when
``export/`` exists, else ``partial``).

``metrics.jsonl`` is appended to by every (re)start of a run. A run stopped by a signal checkpoints
at the step it stopped on, so its resumed run logs only later steps; a run killed hard between
checkpoints redoes (and logs again) the steps after its last checkpoint. Rows are therefore
deduplicated by step, the later row winning (it belongs to the run that went on), see
:func:`read_metrics`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import yaml

from .cli import prog

#: Metrics shown first (when present); the rest follow alphabetically.
FIRST = ["step", "loss", "loss_cd"]
#: Per-step bookkeeping that says little about the final result.
SKIP = {"time", "lr", "step_time", "samples_per_s", "data_first_skips", "event"}


def read_metrics(path) -> list[dict]:
    """Rows of ``metrics.jsonl`` in step order, one per (step, kind of row): a step logged again by a
    resumed run replaces the earlier row. Event rows (e.g. ``nonfinite_loss``) are kept apart from
    training rows of the same step. Unreadable (torn) lines are skipped."""
    rows: dict[tuple[int, str], dict] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(r, dict) or "step" not in r:
            continue
        rows[(int(r["step"]), str(r.get("event", "")))] = r
    return [rows[k] for k in sorted(rows)]


def read_overrides(run_dir: Path) -> list[str]:
    f = run_dir / ".hydra" / "overrides.yaml"
    if not f.exists():
        return []
    return [str(o) for o in (yaml.safe_load(f.read_text()) or [])]


def collect(root) -> list[dict]:
    """One dict per run under ``root``: ``run`` (path relative to root), ``overrides`` (list),
    ``status``, ``restarts`` (how many times metrics went back to an earlier step), and the final
    metrics."""
    root = Path(root)
    runs = []
    for m in sorted(root.rglob("metrics.jsonl")):
        d = m.parent
        rows = read_metrics(m)
        train = [r for r in rows if "loss" in r and not r.get("event")]
        last = train[-1] if train else (rows[-1] if rows else {})
        raw_steps = []
        for line in m.read_text(errors="replace").splitlines():
            try:
                raw_steps.append(int(json.loads(line)["step"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                pass
        redone = sum(1 for a, b in zip(raw_steps, raw_steps[1:]) if b <= a)
        rec = {
            "run": str(d.relative_to(root)) if d != root else ".",
            "overrides": read_overrides(d),
            "status": "done" if (d / "export").is_dir() else "partial",
            "redone_rows": redone,
        }
        rec.update({k: v for k, v in last.items() if k not in SKIP})
        runs.append(rec)
    return runs


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: run, the overrides that vary between runs (one column per key), status, metrics."""
    keyvals = [dict(o.split("=", 1) if "=" in o else (o, "") for o in r["overrides"]) for r in runs]
    keys = list(dict.fromkeys(k for kv in keyvals for k in kv))
    varying = [k for k in keys if len({kv.get(k) for kv in keyvals}) > 1] or (keys if len(runs) == 1 else [])
    metric_keys = (
        set().union(*(r.keys() for r in runs)) - {"run", "overrides", "status", "redone_rows"}
        if runs
        else set()
    )
    mcols = [k for k in FIRST if k in metric_keys] + sorted(metric_keys - set(FIRST))
    header = ["run", *varying, "status", *mcols]
    rows = [
        [r["run"], *[kv.get(k, "") for k in varying], r["status"], *[_fmt(r.get(k)) for k in mcols]]
        for r, kv in zip(runs, keyvals)
    ]
    return header, rows


def to_markdown(header, rows) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    out = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(out) + "\n"


def to_text(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), *map(line, rows)]) + "\n"


def to_csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=prog("t2vturbo.collect"), description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="a multirun sweep dir (or any dir holding runs with metrics.jsonl)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--markdown", action="store_true", help="print a Markdown table")
    g.add_argument("--csv", metavar="OUT", help="write CSV to OUT ('-' for stdout)")
    g.add_argument("--json", action="store_true", help="print the records as JSON")
    a = p.parse_args(argv)
    runs = collect(a.sweep_dir)
    if not runs:
        print(f"no runs (metrics.jsonl) under {a.sweep_dir}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(runs, indent=2))
        return 0
    header, rows = table(runs)
    if a.csv:
        text = to_csv(header, rows)
        if a.csv == "-":
            sys.stdout.write(text)
        else:
            Path(a.csv).write_text(text)
            print(f"{len(runs)} run(s) -> {a.csv}")
        return 0
    sys.stdout.write(to_markdown(header, rows) if a.markdown else to_text(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
