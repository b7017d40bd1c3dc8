"""Kill-and-resume checks: a run killed with SIGKILL at any moment and then resumed with
``vldistill run RECIPE --resume`` must end with the metrics of a run that was never killed.

    python -m vldistill.tools.crashtest RECIPE --points 5 [--seed 0] [--set k=v ...] [--out DIR]

1. An uninterrupted run (``OUT/reference``) gives the reference results and its wall time.
2. For each of ``points`` kill times drawn uniformly (seeded) over that wall time, a fresh run
   in ``OUT/point-N`` is started as its own process group and killed with SIGKILL at that time,
   wherever it is: loading data, training, writing a checkpoint, building a cache.
3. ``--resume`` is run until it exits 0 (a resume may itself be killed: only the first run is).
4. Every result of the run (every number of results.json but the measured times) is compared
   with the reference, exactly: on CPU with a fixed seed the resumed run is bit-identical. This
   holds for every job whose models train through the engine (a job that does not take
   --resume is refused by `vldistill run` at the first resume).

Each step runs the real CLI in a subprocess, as a user would; nothing is simulated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class KillPoint:
    delay_s: float
    killed: bool            # False when the run had already finished at the kill time
    resumes: int
    matches: bool
    differences: list[str]


def _command(recipe: Path, out: Path, overrides: list[str], resume: bool) -> list[str]:
    sets = [item for text in [f"output_dir={out}", "name=run", "trainer.progress_bar=false",
                              *overrides] for item in ("--set", text)]
    return [sys.executable, "-m", "vldistill", "run", str(recipe), *sets,
            *(["--resume"] if resume else [])]


def _run(command: list[str], log: Path) -> int:
    with open(log, "ab") as handle:
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


# measured times and anything derived from them differ between any two runs
MEASURED = ("time", "latency", "throughput", "wall")


def _measured(key: str) -> bool:
    return any(word in key for word in MEASURED) or key.endswith(("_s", "_ms"))


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Every number (and flag) of a results.json tree, by its dotted path (list items by index;
    a row of ``rows`` by its model name), measured times left out. Strings are left out too:
    they name files of the run folder, which differ between the runs compared."""
    if isinstance(value, dict):
        return {path: leaf for key, item in value.items() if not _measured(str(key))
                for path, leaf in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        named = all(isinstance(item, dict) and "model" in item for item in value)
        return {path: leaf for index, item in enumerate(value)
                for path, leaf in flatten(item, f"{prefix}{item['model'] if named else index}."
                                          ).items()}
    return {prefix.rstrip("."): value} if isinstance(value, (int, float)) else {}


def metrics(run_dir: Path) -> dict[str, object]:
    """Every result of a run of any job (per model, per seed, per question type ...), from its
    results.json, without the measured times."""
    return flatten(json.loads((run_dir / "results.json").read_text()))


def compare(reference: dict[str, object], resumed: dict[str, object]) -> list[str]:
    return [f"{name}: {resumed.get(name)} vs {values}" for name, values in reference.items()
            if resumed.get(name) != values]


def _start_and_kill(recipe: Path, folder: Path, log: Path, overrides: list[str],
                    delay: float) -> bool:
    """Start a fresh run and SIGKILL its process group after ``delay`` seconds; False when it
    had already finished by then."""
    with open(log, "ab") as handle:
        process = subprocess.Popen(_command(recipe, folder, overrides, False), stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True


def kill_and_resume(recipe: Path, out: Path, points: int, seed: int = 0,
                    overrides: list[str] = (), max_resumes: int = 3,
                    max_redraws: int = 3) -> tuple[float, list[KillPoint]]:
    """(reference wall time, one KillPoint per kill) for ``recipe``."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    code = _run(_command(recipe, out / "reference", list(overrides), False), out / "reference.log")
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"the reference run failed (exit {code}); see {out / 'reference.log'}")
    reference = metrics(out / "reference" / "run")
    delays = np.random.default_rng(seed).uniform(0.05 * wall, 0.95 * wall, size=points)
    results = []
    for number, delay in enumerate(sorted(delays)):
        folder, log = out / f"point-{number}", out / f"point-{number}.log"
        for _ in range(max_redraws + 1):
            killed = _start_and_kill(recipe, folder, log, list(overrides), delay)
            if killed:
                break
            # the run ended before the kill (it ran faster than the reference): a point past
            # the end tests nothing, so start over and kill earlier
            shutil.rmtree(folder, ignore_errors=True)
            delay *= 0.7
        resumes = 0
        while killed or not (folder / "run" / "results.json").is_file():
            resumes += 1
            if resumes > max_resumes:
                break
            if _run(_command(recipe, folder, list(overrides), True), log) == 0:
                break
        resumed = metrics(folder / "run") if (folder / "run" / "results.json").is_file() else {}
        differences = compare(reference, resumed)
        results.append(KillPoint(float(delay), killed, resumes, not differences, differences))
    return wall, results


def summary(wall: float, points: list[KillPoint]) -> str:
    """The table of kill points and the verdict line."""
    lines = [f"reference run: {wall:.0f} s", "| kill at s | killed | resumes | final metrics "
             "equal the reference |", "|---|---|---|---|"]
    for point in points:
        killed = "yes" if point.killed else "no (had finished)"
        equal = "yes" if point.matches else "NO: " + "; ".join(point.differences)
        lines.append(f"| {point.delay_s:.1f} | {killed} | {point.resumes} | {equal} |")
    late = sum(not p.killed for p in points)
    lines.append(f"{sum(p.matches and p.killed for p in points)} of {len(points)} kill points "
                 "were killed while running and then reached the uninterrupted run's final "
                 "metrics" + (f" ({late} had finished before the kill)." if late else "."))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/crashtest"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    wall, points = kill_and_resume(args.recipe, args.out, args.points, args.seed,
                                   args.overrides)
    print(summary(wall, points))


if __name__ == "__main__":
    main()
