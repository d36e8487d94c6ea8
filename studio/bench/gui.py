"""``python -m studio bench gui``: the window's responsiveness while the model works, relayed from a child process.

The measurement needs Qt and the real window, which ``studio/`` never imports (it stays usable without a display),
so this runs ``python -m widgets.bench_gui --json`` as a child process with the same interpreter and relays the one
JSON object it prints (see that module for the phases and figures)::

    python -m studio bench gui --json
    {"idle": {"max_gap_ms": ..., "p99_gap_ms": ...}, "slider": {...}, "ranking": {...}, "knob": {...},
     "ratios": {"slider_max": ..., "slider_p99": ..., ...}, "model_calls_on_gui_thread": 0, ...}

``ratios``: each busy phase's longest and 99th-percentile gap between GUI timer ticks over the idle baseline's,
measured one after the other in that one child process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from studio.core.errors import StudioError

#: The repository root: the child imports ``widgets`` from here, as this process imports ``studio``.
ROOT = Path(__file__).resolve().parents[2]
PHASES = ("idle", "slider", "ranking", "knob")


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("gui", help="GUI responsiveness: timer gaps while idle and while the worker renders",
                           description="Longest and 99th-percentile gap between GUI timer ticks in the real window "
                                       "(offscreen), idle and while slider frames, a ranking and knob frames run on "
                                       "the model's worker; ratios to idle.")
    p.add_argument("--model", "-m", default=None, help="built-in name or path (default: the app's default model)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of each timed phase but the ranking (2)")
    p.add_argument("--tick-ms", type=int, default=None, help="the probe timer's interval (default: 5)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the model, a ranking (300)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads in the child (default: 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def child_command(args: argparse.Namespace) -> list[str]:
    """The child's command line: the same interpreter, ``-m widgets.bench_gui --json`` and the options given."""
    command = [sys.executable, "-m", "widgets.bench_gui", "--json", "--device", args.device,
               "--seconds", str(args.seconds), "--timeout", str(args.timeout), "--threads", str(args.threads)]
    if args.model:
        command += ["--model", args.model]
    if args.tick_ms:
        command += ["--tick-ms", str(args.tick_ms)]
    return command


def measure(args: argparse.Namespace) -> dict:
    """Run the child (a separate process, not an import: ``studio`` stays free of Qt) and read its JSON."""
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")  # no window appears on the user's screen
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    try:
        done = subprocess.run(child_command(args), cwd=str(ROOT), env=env, capture_output=True, text=True,
                              timeout=3 * args.timeout + 60)
    except subprocess.TimeoutExpired as error:
        raise StudioError(f"The GUI benchmark did not finish within {error.timeout:.0f} s.") from error
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise StudioError(f"The GUI benchmark failed (exit {done.returncode}): {why}")
    try:
        return json.loads(lines[-1])
    except ValueError as error:
        raise StudioError("The GUI benchmark printed something that is not its JSON object.") from error


def run(args: argparse.Namespace) -> int:
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['model']}, GUI timer every {result['tick_ms']} ms (ratios to idle in brackets):")
    for phase in PHASES:
        f = result.get(phase)
        if not f:
            print(f"  {phase:8s} not run")
            continue
        r = result["ratios"]
        extra = "" if phase == "idle" else f" [{r.get(phase + '_max')}x, {r.get(phase + '_p99')}x]"
        print(f"  {phase:8s} longest gap {f['max_gap_ms']:7.1f} ms, p99 {f['p99_gap_ms']:6.1f} ms{extra}; "
              f"{f['frames']} frames, {f['model_calls']} model calls")
    print(f"  model calls on the GUI thread: {result['model_calls_on_gui_thread']} of {result['model_calls']}")
    return 0
