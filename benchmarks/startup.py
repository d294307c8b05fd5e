"""Start-up cost of the command line: ``adderconv --help``, a usage error, ``import torch`` and the default
``adderconv energy`` job, each in a fresh process (issue 27, item 1).

Every measurement is one child process: wall time from start to exit, and the child's own peak RSS (``wait4``).
The child runs the console script's code (``from adderconv.cli import main; main()``) with ``PYTHONPATH`` set to
the checkout measured, in an empty working directory, at one thread (``OMP_NUM_THREADS=1``). ``--before PATH``
(a checkout of an earlier commit) runs the same commands on it; rounds alternate the checkouts and commands, so
that both see the same machine load; the table gives the median of each.

Targets (issue 27): help and a usage error <= 1.0 s; the default job <= ``import torch`` + 3 s.

Prints a table, writes JSON (default benchmarks/results/startup.json); asserts nothing.

    python benchmarks/startup.py --rounds 5 --before /tmp/old
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CLI = "import sys; from adderconv.cli import main; sys.argv[0] = 'adderconv'; sys.exit(main())"
# name -> (python arguments, the exit code the command should give)
COMMANDS = {
    "adderconv --help": (["-c", CLI, "--help"], 0),
    "adderconv energy --top notanumber": (["-c", CLI, "energy", "--top", "notanumber"], 2),   # a usage error
    "python -c 'import torch'": (["-c", "import torch"], 0),
    "adderconv energy": (["-c", CLI, "energy"], 0),   # the default job: ResNet-20 CNN vs its AdderNet
}
TORCH_ONLY = "python -c 'import torch'"   # the same in every checkout: measured once per round, listed for each


def measure(args: list[str], expected: int, checkout: Path, workdir: str) -> dict:
    """One fresh child: wall seconds and peak RSS in MiB; exit code checked against ``expected``."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("ADDERCONV_DEBUG", None)
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != expected:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(f"{' '.join(args[2:]) or args[-1]} in {checkout}: exit {proc.returncode}, expected "
                             f"{expected}:\n" + "\n".join(tail))
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}   # ru_maxrss: KiB on Linux


def machine() -> dict:
    """CPU model (lscpu's source), load average, versions; imports no torch."""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    versions = {}
    for dist in ("torch", "typer", "click"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": 1, "python": platform.python_version(),
            **versions, "load_average": [round(x, 2) for x in os.getloadavg()]}


def run(checkouts: dict[str, Path], rounds: int) -> dict[str, dict[str, list[dict]]]:
    """samples[checkout][command] = one dict per round; checkouts and commands alternate between rounds."""
    samples: dict[str, dict[str, list[dict]]] = {label: {} for label in checkouts}
    labels = list(checkouts)
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(rounds):
            order = labels if r % 2 == 0 else labels[::-1]
            for name, (args, expected) in COMMANDS.items():
                for label in (order[:1] if name == TORCH_ONLY else order):
                    s = measure(args, expected, checkouts[label], workdir)
                    for same in (labels if name == TORCH_ONLY else [label]):   # `import torch`: every checkout's
                        samples[same].setdefault(name, []).append(s)
                    who = "all" if name == TORCH_ONLY else label
                    print(f"round {r + 1}/{rounds} {who:6s} {name:36s} {s['wall_s']:6.2f} s "
                          f"{s['peak_rss_mib']:6.0f} MiB", file=sys.stderr, flush=True)
    return samples


def summarize(samples: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict]]:
    return {label: {name: {"wall_s": round(statistics.median(s["wall_s"] for s in rows), 3),
                           "peak_rss_mib": round(statistics.median(s["peak_rss_mib"] for s in rows), 1),
                           "rounds": len(rows)}
                    for name, rows in by_command.items()}
            for label, by_command in samples.items()}


def render(medians: dict[str, dict[str, dict]]) -> str:
    labels = list(medians)
    head = f"{'command':36s}" + "".join(f" {label + ' wall':>12s} {label + ' RSS':>12s}" for label in labels)
    lines = [head, "-" * len(head)]
    for name in COMMANDS:
        cells = ""
        for label in labels:
            m = medians[label][name]
            cells += f" {m['wall_s']:>10.2f} s {m['peak_rss_mib']:>8.0f} MiB"
        lines.append(f"{name:36s}{cells}")
    return "\n".join(lines)


def targets(medians: dict[str, dict]) -> dict[str, bool]:
    torch_s = medians.get(TORCH_ONLY, {}).get("wall_s")
    out = {"help <= 1.0 s": medians["adderconv --help"]["wall_s"] <= 1.0,
           "usage error <= 1.0 s": medians["adderconv energy --top notanumber"]["wall_s"] <= 1.0}
    if torch_s is not None:
        out["default energy job <= import torch + 3 s"] = medians["adderconv energy"]["wall_s"] <= torch_s + 3.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="Alternating rounds; the median of each is reported.")
    ap.add_argument("--before", type=Path, help="A checkout of an earlier commit to measure alongside.")
    ap.add_argument("--after", type=Path, default=HERE, help="The checkout measured as 'after' (default: this one).")
    ap.add_argument("--json", type=Path, default=HERE / "benchmarks" / "results" / "startup.json")
    a = ap.parse_args()
    checkouts = {"before": a.before.resolve()} if a.before else {}
    checkouts["after"] = a.after.resolve()
    for path in checkouts.values():
        if not (path / "adderconv" / "__init__.py").is_file():
            raise SystemExit(f"{path} is not an adderconv checkout (no adderconv/__init__.py)")

    info = machine()
    samples = run(checkouts, a.rounds)
    medians = summarize(samples)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "startup", "machine": info, "rounds": a.rounds,
              "checkouts": {label: str(path) for label, path in checkouts.items()},
              "median": medians, "targets": {label: targets(m) for label, m in medians.items()},
              "samples": samples}
    print(f"{info['cpu']}, {info['logical_cpus']} logical CPUs, 1 thread, Python {info['python']}, torch "
          f"{info['torch']}; load average {info['load_average']} at start, {info['load_average_end']} at end; "
          f"median of {a.rounds} rounds")
    print(render(medians))
    for label, met in result["targets"].items():
        print(f"{label}: " + ", ".join(f"{t}: {'yes' if ok else 'NO'}" for t, ok in met.items()))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
