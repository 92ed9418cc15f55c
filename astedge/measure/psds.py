"""PSDS (polyphonic sound detection score; Bilen et al., ICASSP 2020) of frame scores, as DCASE Task 4 reports it.

The score is computed by sed_scores_eval (the maintained implementation, which evaluates every threshold exactly;
DESED's baselines use it): the ``[eval]`` extra installs it (``pip install 'astedge[eval]'``; it needs pandas < 3).
Without it, :func:`psds` says why instead of a number. The two DCASE operating points:

- PSDS1 (onsets and offsets matter): DTC 0.7, GTC 0.7, no cross-triggers, alpha_st 1, max eFPR 100 per hour;
- PSDS2 (classes matter, cross-triggers cost): DTC 0.1, GTC 0.1, CTTC 0.3, alpha_ct 0.5, alpha_st 1, max eFPR 100.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

#: DCASE 2024 Task 4's two operating points (sed_scores_eval.intersection_based.psds keywords).
OPERATING_POINTS = {
    "psds1": dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0),
    "psds2": dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0),
}


def _import():
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # dcase_util's pkg_resources deprecation
        from sed_scores_eval import intersection_based
        from sed_scores_eval.base_modules.scores import create_score_dataframe
    return intersection_based, create_score_dataframe


def psds(scores: dict[str, tuple[np.ndarray, np.ndarray]], truth: dict[str, list], durations: dict[str, float],
         labels: list[str]) -> dict:
    """PSDS1 and PSDS2 of per-file scores: ``{file: (boundaries [T + 1] seconds, scores [T, len(labels)])}`` (gapless,
    ordered segments: frames, or windows' hops), against `truth` ``{file: [Event]}`` over `durations` seconds.
    Returns ``{"psds1": x, "psds2": y, "tool": ...}``, or ``{"psds1": None, "psds2": None, "reason": ...}`` when
    sed_scores_eval is not installed or fewer than two classes have true events."""
    try:
        intersection_based, create_score_dataframe = _import()
    except ImportError as err:
        reason = f"sed_scores_eval is not installed ({err}): pip install 'astedge[eval]'"
        return {"psds1": None, "psds2": None, "reason": reason}
    present = sorted({e.label for events in truth.values() for e in events if e.label in labels})
    if len(present) < 2:  # sed_scores_eval 0.0.4 fails inside its statistics on a single class
        return {"psds1": None, "psds2": None, "reason": f"PSDS needs true events of two classes or more "
                f"(here: {', '.join(present) or 'none'})"}
    columns = [labels.index(label) for label in present]
    frames = {name: create_score_dataframe(np.asarray(values)[:, columns], np.asarray(bounds), present)
              for name, (bounds, values) in scores.items()}
    reference = {name: [(e.onset, e.offset, e.label) for e in events if e.label in present]
                 for name, events in truth.items()}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for point, keywords in OPERATING_POINTS.items():
            value = intersection_based.psds(frames, reference, durations, unit_of_time="hour", **keywords)[0]
            out[point] = round(float(value), 4)
    import sed_scores_eval

    return {**out, "tool": f"sed_scores_eval {getattr(sed_scores_eval, '__version__', '0.0.4')}",
            "classes": present}
