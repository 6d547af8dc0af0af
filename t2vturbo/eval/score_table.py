"""VBench Quality / Semantic / Total scores from per-dimension results, beside published rows.

``python -m t2vturbo.eval.score_table RESULTS.json [MORE.json ...] [--markdown] [--json OUT]``

Input: the JSON files VBench writes (``{dimension: [score, per-video list]}``, e.g.
``evaluation_results/NAME_eval_results.json``; one run per dimension is fine, pass them all).
Keys may use underscores or spaces (``dynamic_degree`` / ``dynamic degree``); a bare number is
accepted as a score too.  When a dimension appears in several files the last one wins.

Computation (VBench ``scripts/cal_final_score.py``, constants in
:mod:`t2vturbo.eval.vbench_constants`):

* each raw score ``x_d`` is normalised with the published bounds: ``n_d = (x_d - min_d) / (max_d - min_d)``
  (not clipped, exactly as VBench);
* ``Quality = sum_d w_d n_d / sum_d w_d`` over the 7 quality dimensions (``w = 0.5`` for dynamic
  degree, 1 otherwise); ``Semantic`` likewise over the 9 semantic dimensions;
* ``Total = (4 Quality + 1 Semantic) / 5``.  All three are printed in percent.

VBench's own script scores a missing dimension as a raw 0 (which drives the normalised value
negative for dimensions whose minimum is above 0).  Here a missing dimension is left out instead
and the group score is the weighted mean of the dimensions present, flagged ``partial`` (``*`` in
the table): it is *not* comparable with the published numbers until all 16 dimensions are in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cli import prog
from .vbench_constants import (
    ALL_DIMS,
    DIM_WEIGHT,
    NORMALIZE,
    QUALITY_DIMS,
    QUALITY_WEIGHT,
    REFERENCE_ROWS,
    SEMANTIC_DIMS,
    SEMANTIC_WEIGHT,
    dim_key,
)

__all__ = [
    "compute_scores",
    "format_table",
    "group_score",
    "load_results",
    "main",
    "normalize",
    "parse_results",
    "total_score",
]


def parse_results(data: Mapping[str, Any]) -> dict[str, float]:
    """``{dimension: [score, per-video...]}`` (VBench's format) or ``{dimension: score}`` -> ``{dim: score}``.

    Unknown keys are ignored; dimension names are canonicalised with :func:`dim_key`.
    """
    out: dict[str, float] = {}
    for k, v in data.items():
        d = dim_key(k)
        if d not in NORMALIZE:
            continue
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError(f"dimension {k!r}: empty result list")
            v = v[0]
        if isinstance(v, Mapping):
            v = v.get("score", v.get("overall"))
        try:
            x = float(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"dimension {k!r}: cannot read a score from {v!r}") from e
        if not math.isfinite(x):
            raise ValueError(f"dimension {k!r}: score is {x}")
        out[d] = x
    return out


def load_results(paths: str | Path | Iterable[str | Path]) -> dict[str, float]:
    """Merge the per-dimension scores of one or more VBench result JSON files (later files win)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: dict[str, float] = {}
    for p in paths:
        data = json.loads(Path(p).read_text())
        if not isinstance(data, Mapping):
            raise ValueError(f"{p}: expected a JSON object {{dimension: [score, per-video list]}}")
        out.update(parse_results(data))
    return out


def normalize(dim: str, raw: float) -> float:
    """VBench's min-max normalisation of one raw dimension score (not clipped)."""
    lo, hi = NORMALIZE[dim_key(dim)]
    return (float(raw) - lo) / (hi - lo)


def group_score(results: Mapping[str, float], dims: Sequence[str]) -> tuple[float | None, int]:
    """(weighted mean of normalised scores over the ``dims`` present, number present); None if none."""
    num = den = 0.0
    n = 0
    for d in dims:
        if d in results:
            num += DIM_WEIGHT[d] * normalize(d, results[d])
            den += DIM_WEIGHT[d]
            n += 1
    return (num / den if den else None), n


def total_score(quality: float, semantic: float) -> float:
    """``(4 Quality + Semantic) / 5`` (same units as the inputs)."""
    return (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)


def compute_scores(results: Mapping[str, Any]) -> dict[str, Any]:
    """Quality / Semantic / Total in percent (None where no dimension of a group is present).

    ``results`` maps dimension -> raw score (or VBench's ``[score, per-video]``).  Also returns
    ``normalized`` (per dimension, percent, unweighted), ``quality_dims`` / ``semantic_dims``
    (how many were present), ``missing`` and ``partial``.
    """
    res = parse_results(results)
    q, nq = group_score(res, QUALITY_DIMS)
    s, ns = group_score(res, SEMANTIC_DIMS)
    total = total_score(q, s) if q is not None and s is not None else None
    missing = [d for d in ALL_DIMS if d not in res]
    return {
        "quality": None if q is None else 100.0 * q,
        "semantic": None if s is None else 100.0 * s,
        "total": None if total is None else 100.0 * total,
        "quality_dims": nq,
        "semantic_dims": ns,
        "partial": bool(missing),
        "missing": missing,
        "raw": {d: res[d] for d in ALL_DIMS if d in res},
        "normalized": {d: 100.0 * normalize(d, res[d]) for d in ALL_DIMS if d in res},
    }


def _fmt(x: float | None, flag: bool = False) -> str:
    return "-" if x is None else f"{x:.2f}{'*' if flag else ''}"


def format_table(
    scores: Mapping[str, Any],
    name: str = "this run",
    markdown: bool = False,
    references: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """Per-dimension table plus the Quality / Semantic / Total summary beside the reference rows."""
    refs = REFERENCE_ROWS if references is None else references
    q_partial = scores["quality_dims"] < len(QUALITY_DIMS)
    s_partial = scores["semantic_dims"] < len(SEMANTIC_DIMS)
    summary = [
        (
            name,
            _fmt(scores["quality"], q_partial),
            _fmt(scores["semantic"], s_partial),
            _fmt(scores["total"], q_partial or s_partial),
        )
    ]
    summary += [(k, _fmt(v["quality"]), _fmt(v["semantic"]), _fmt(v["total"])) for k, v in refs.items()]
    dims = [
        (
            d,
            "quality" if d in QUALITY_DIMS else "semantic",
            f"{100 * scores['raw'][d]:.2f}",
            f"{scores['normalized'][d]:.2f}",
            f"{DIM_WEIGHT[d]:g}",
        )
        for d in ALL_DIMS
        if d in scores["raw"]
    ]
    dims += [
        (d, "quality" if d in QUALITY_DIMS else "semantic", "missing", "-", f"{DIM_WEIGHT[d]:g}")
        for d in scores["missing"]
    ]
    lines: list[str] = []
    if markdown:
        lines += ["| Model | Quality | Semantic | Total |", "|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary]
        lines += ["", "| Dimension | Group | Raw (%) | Normalised (%) | Weight |", "|---|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in dims]
    else:
        w = max(len(r[0]) for r in summary)
        lines.append(f"{'Model':<{w}}  {'Quality':>8}  {'Semantic':>8}  {'Total':>8}")
        lines += [f"{a:<{w}}  {b:>8}  {c:>8}  {d:>8}" for a, b, c, d in summary]
        lines.append("")
        wd = max(len(r[0]) for r in dims) if dims else 9
        lines.append(f"{'Dimension':<{wd}}  {'group':<8}  {'raw %':>8}  {'norm %':>8}  {'weight':>6}")
        lines += [f"{a:<{wd}}  {b:<8}  {c:>8}  {d:>8}  {e:>6}" for a, b, c, d, e in dims]
    if scores["missing"]:
        lines += [
            "",
            f"* partial: {len(scores['missing'])} of {len(ALL_DIMS)} dimensions missing "
            f"({', '.join(scores['missing'])}); not comparable with the reference rows.",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog("t2vturbo.eval.score_table"), description=__doc__.split("\n")[0])
    ap.add_argument(
        "results", nargs="+", help="VBench result JSON file(s): {dimension: [score, per-video list]}"
    )
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--name", default="this run", help="row label for these results")
    ap.add_argument("--json", help="also write the computed scores here")
    args = ap.parse_args(argv)
    try:
        scores = compute_scores(load_results(args.results))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not scores["raw"]:
        print("error: no VBench dimension found in the given file(s)", file=sys.stderr)
        return 2
    print(format_table(scores, name=args.name, markdown=args.markdown))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
