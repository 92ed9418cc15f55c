"""Option groups the runtime commands share, declared once, and the ClassifierOptions they build.

Typer reads a command's options from its signature. A parameter whose default is a :class:`Group` stands for the
group's options: :func:`grouped` puts them in its place (same flags, same order in ``--help``) and hands the
command their values as one dict, which :func:`classifier_options` turns into
:class:`astedge.runtime.classifier.ClassifierOptions`.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Optional

import typer

from astedge.cli.common import BACKEND_HELP, PRECISION_HELP, SMOOTHING, SMOOTHING_WINDOWS


class Group:
    """Typer options declared once: ``name=(annotation, typer.Option(...))`` in order."""

    def __init__(self, **options: tuple):
        self.options = options

    def but(self, **changes: tuple | None) -> "Group":
        """The group with some options declared otherwise (e.g. their help), or left out (None)."""
        merged = {**self.options, **changes}
        return Group(**{name: option for name, option in merged.items() if option is not None})


def grouped(command):
    """`command` with each :class:`Group` parameter expanded into the group's options; it receives their values as
    one dict under the parameter's name."""
    members, parameters = {}, []
    for parameter in inspect.signature(command).parameters.values():
        if not isinstance(parameter.default, Group):
            parameters.append(parameter)
            continue
        members[parameter.name] = list(parameter.default.options)
        parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option,
                                         annotation=annotation)
                       for name, (annotation, option) in parameter.default.options.items()]

    @functools.wraps(command)
    def run(**values):
        for group, names in members.items():
            values[group] = {name: values.pop(name) for name in names}
        return command(**values)

    run.__signature__ = inspect.Signature(parameters)
    hints = {p.name: p.annotation for p in parameters if not isinstance(p.annotation, str)}
    run.__annotations__ = {**command.__annotations__, **hints}
    return run


WINDOWS = Group(
    window=(Optional[float], typer.Option(None, "--window", help="Window in seconds (default: the model's, e.g. 10 s "
                                          "for AudioSet models).")),
    hop=(Optional[float], typer.Option(None, "--hop", help="Seconds between windows (default: the export's stream "
                                       "hop, 1 s). Multiples of 10 ms compute only the new frames each hop.")),
    top_k=(int, typer.Option(5, "-k", "--top-k", min=1, help="Labels per window.")),
    threshold=(Optional[float], typer.Option(None, "--threshold", help="A score in [0, 1]: only report scores >= "
                                             "this (with --events: the on-threshold of classes without their own, "
                                             "default 0.5).")),
    smoothing=(str, SMOOTHING),
    smoothing_windows=(int, SMOOTHING_WINDOWS),
    allow=(list[str], typer.Option([], "--allow", help="Only these labels (repeatable, or comma-separated).")),
    deny=(list[str], typer.Option([], "--deny", help="Never these labels (repeatable, or comma-separated).")),
)

EVENT_OUTPUT = Group(
    events=(bool, typer.Option(False, "--events", help="Report sound events instead of windows (smoothing, "
                               "thresholds with hysteresis, N-of-M confirmation, merging): classify a table per file, "
                               "listen a line when one starts and one when it ends; with --json their \"event\" "
                               "records.")),
    events_csv=(Optional[Path], typer.Option(None, "--events-csv", help="Also write the ended events to this CSV "
                                             "([file,]onset,offset,label,peak_score,first_detected_at; it reads back "
                                             "as evaluate --truth).")),
    on_event=(Optional[str], typer.Option(None, "--on-event", help="Run this shell command per event, the event "
                                          "JSON on its stdin (its own worker: capture never waits; failures and "
                                          "drops are counted).")),
)

DECISION = Group(
    thresholds=(Optional[Path], typer.Option(None, "--thresholds", help="Per-class thresholds (JSON from astedge "
                                             "calibrate; default: those exported into the model's astedge.json, "
                                             "else --threshold for every class).")),
    off_ratio=(float, typer.Option(0.8, "--off-ratio", help="Hysteresis: an event ends below threshold x this.")),
    confirm=(Optional[str], typer.Option(None, "--confirm", help="N/M: an event starts when its class is on in N of "
                                         "the last M windows (default 1/1).")),
    min_duration=(Optional[float], typer.Option(None, "--min-duration", help="Seconds an event must last before "
                                                "it is reported (default: the model's calibrated one, else 0).")),
    merge_gap=(Optional[float], typer.Option(None, "--merge-gap", help="Seconds of silence that still continue an "
                                             "event (default: the model's calibrated one, else 0).")),
    trim=(float, typer.Option(0.0, "--trim", help="Seconds to move each onset later and offset earlier: a window "
                              "fires before its sound fills half of it (choose it on a labelled stream with "
                              "astedge evaluate).")),
    median=(Optional[int], typer.Option(None, "--median", min=1, help="Models with a frame head: the median "
                                        "filter's length in frames (default: the model's calibrated one).")),
    frame_delay=(Optional[float], typer.Option(None, "--frame-delay", min=0.0, help="Models with a frame head: "
                                               "seconds a frame waits for the later windows that also cover it "
                                               "before it is final (default: two frame hops).")),
    background=(Optional[str], typer.Option(None, "--background-class", help="The label that means \"nothing\" "
                                            "and is never an event (default: the model's, e.g. background).")),
)

RUNNING = Group(backend=(str, typer.Option("auto", "--backend", help=BACKEND_HELP)),
                precision=(str, typer.Option("auto", "--precision", help=PRECISION_HELP)))


def classifier_options(*groups: dict, outputs: dict | None = None, **fixed):
    """The ClassifierOptions of a command's grouped option values (and `fixed` ones).

    With the event `outputs` (--events, --events-csv, --on-event) the decision layer runs when any of them is asked
    for, and --threshold is both the events' on-threshold and, unless --events prints events instead of windows,
    the windows' report threshold. Without them --threshold is the events' on-threshold only.
    """
    from astedge.runtime.classifier import ClassifierOptions

    values = {name: value for group in groups for name, value in group.items()} | fixed
    threshold = values.pop("threshold", None)
    if outputs is not None:
        values["events"] = bool(outputs["events"] or outputs["events_csv"] is not None or outputs["on_event"])
    reports = outputs is not None and not outputs["events"]
    return ClassifierOptions(**values, threshold=threshold if reports else None,
                             event_threshold=0.5 if threshold is None else threshold)
