"""The error budget of ``make eval``: where the motion of the demo's result is lost, term by term.

Every term is read off rows that make eval measures on the same held-out pairs (the JSON of
lab/eval_json.py; motion correlation means). The gap is the ground truth through the VAE (the best any DiT
decoding through it could do) minus the result. Two decompositions of that gap are exact:

- along the pipeline: cross-body retargeting (self_reenact - result, each pair driven by its own ground truth,
  so retargeting across bodies and leakage drop out) plus what the self-driven pipeline still loses (vae_ceiling
  - self_reenact: the tokens, the motion maps and the DiT);
- by motion family: family f's share is n_f / N * (its ceiling - its result).

Three more terms are read beside them, each as the part of the gap that a change would recover: the sampler
(the best of 2x and 4x the workflow's steps, minus the result), unseen clips (the result's share of its VAE
ceiling on training pairs minus that on held-out pairs, times the held-out ceiling) and, in pose units and
without a share, the motion tokens (the Stage-1 probe's PCK on the driver's own pose) against the retargeter.
"""

from __future__ import annotations

import math

from ..keypoints import BODY_JOINT_NAMES
from ..synthetic.character import MOTION_KINDS

# The arm joints of the budget's "arms" rows: elbows and wrists, where a wave or a dance moves most.
ARM_JOINT_NAMES = ("right_elbow", "right_wrist", "left_elbow", "left_wrist")
ARM_JOINTS = tuple(BODY_JOINT_NAMES.index(n) for n in ARM_JOINT_NAMES)
NO_PAIRS_NOTE = "no pairs of this family in the draw"


def family_summaries(per_pair: list[dict], motions: list[str], rows, summary) -> dict[str, dict]:
    """{family: {"pairs": n, "rows": {row: {metric: summary}}}} for every family of MOTION_KINDS and any other
    family in ``motions`` (one name per pair), over that family's pairs; a family with no pairs in the draw has
    "pairs" 0, "rows" None and "note" NO_PAIRS_NOTE (never a NaN). per_pair: one {row: {metric: value}} per
    pair; summary: values -> {"mean", "std", "per_pair"}."""
    if len(per_pair) != len(motions):
        raise ValueError(f"{len(per_pair)} pairs but {len(motions)} motion names")
    out = {}
    for family in dict.fromkeys([*MOTION_KINDS, *motions]):
        members = [p for p, m in zip(per_pair, motions, strict=True) if m == family]
        if not members:
            out[family] = {"pairs": 0, "rows": None, "note": NO_PAIRS_NOTE}
            continue
        out[family] = {"pairs": len(members),
                       "rows": {row: {metric: summary([p[row][metric] for p in members]) for metric in members[0][row]}
                                for row in rows}}
    return out


def _mean(rows: dict | None, row: str, metric: str = "motion_corr") -> float:
    entry = (rows or {}).get(row)
    if entry is None or entry.get(metric) is None:
        return math.nan
    value = entry[metric]["mean"] if isinstance(entry[metric], dict) else entry[metric]
    return math.nan if value is None else float(value)


def budget_terms(video: dict, retarget: dict) -> list[dict]:
    """The budget's terms from the JSON's "video" and "retarget" entries: [{"term", "measured", "figure",
    "share"}], share = the term's motion correlation over the gap (None where the term is not in those units or
    its rows were not run; figure None likewise). The first two terms and the family terms each add up to the
    gap."""
    rows = video["rows"]
    ceiling, result = _mean(rows, "vae_ceiling"), _mean(rows, "result")
    gap = ceiling - result
    terms = []

    def add(term: str, measured: str, figure: float | None, share: bool = True) -> None:
        ok = figure is not None and math.isfinite(figure)
        terms.append({"term": term, "measured": measured, "figure": figure if ok else None,
                      "share": figure / gap if ok and share and gap > 0 else None})

    add("the gap: VAE ceiling - result", "vae_ceiling - result (motion correlation)", gap)
    self_driven = _mean(rows, "self_reenact")
    add("retargeting across bodies (and leakage)", "self_reenact - result", self_driven - result)
    add("the self-driven pipeline: tokens, motion maps, DiT", "vae_ceiling - self_reenact", ceiling - self_driven)
    best = max((v for v in (_mean(rows, "sampler_2x"), _mean(rows, "sampler_4x")) if math.isfinite(v)),
               default=math.nan)
    add("the sampler (more steps)", "best of sampler_2x, sampler_4x - result", best - result)
    seen, seen_ceiling = _mean(rows, "train_pairs"), _mean(rows, "train_pairs_vae_ceiling")
    add("unseen clips (the DiT's generalisation)",
        "(train_pairs / its ceiling - result / vae_ceiling) x vae_ceiling", (seen / seen_ceiling - result / ceiling)
        * ceiling if seen_ceiling > 0 and ceiling > 0 else None)
    n = sum(f["pairs"] for f in video.get("families", {}).values())
    for family, entry in video.get("families", {}).items():
        if not entry["pairs"]:
            terms.append({"term": f"the {family} pairs", "measured": NO_PAIRS_NOTE, "figure": None, "share": None})
            continue
        f_ceiling, f_result = _mean(entry["rows"], "vae_ceiling"), _mean(entry["rows"], "result")
        add(f"the {family} pairs ({entry['pairs']} of {n}: result {f_result:.3f}, ceiling {f_ceiling:.3f})",
            "pairs/N x (family ceiling - family result)", entry["pairs"] / n * (f_ceiling - f_result))
    r = retarget["rows"]
    for name, row, arms in (("motion tokens, probed for the driver's own pose", "token_probe", "token_probe_arms"),
                            ("the retargeter's heatmap head (identity's body)", "result", "result_arms")):
        all_pck, arm_pck = _mean(r, row, "pck"), _mean(r, arms, "pck")
        terms.append({"term": name, "measured": f"PCK@0.05 all joints {all_pck:.3f}, arms (elbows, wrists) "
                                                f"{arm_pck:.3f}", "figure": None, "share": None})
    add("the VAE itself (beyond the gap)", "1 - vae_ceiling", 1 - ceiling, share=False)
    return terms


def budget_table(video: dict | None, retarget: dict) -> list[str]:
    """Markdown lines of the table "where the motion is lost" (budget_terms), or a line saying why there is
    none."""
    if not video:
        return ["No error budget: the video rows were not run."]
    lines = ["| term | measured as | figure (motion correlation) | share of the gap |", "|---|---|---|---|"]
    for t in budget_terms(video, retarget):
        figure = "" if t["figure"] is None else f"{t['figure']:+.3f}"
        share = "" if t["share"] is None else f"{100 * t['share']:.0f}%"
        lines.append(f"| {t['term']} | {t['measured']} | {figure} | {share} |")
    return lines
