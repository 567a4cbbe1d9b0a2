"""How fast the CLI answers: `workbench --help`, every command's `--help` (goal: < 1.5 s),
and `workbench explain` on the cached default model (goal: first line < 5 s).

Each command runs as a user would type it, in a fresh process (`python -m workbench`, which
is what the console script runs), under a pseudo-terminal so that the spinner and the
progress bars draw as they do for a person. Per command it reports the median and worst of
`--repeats` runs. For `explain` it reports the time to the first byte on the terminal (the
spinner that says what is loading), to the first line of the result, and to the exit.

    python benchmarks/cli_startup_bench.py --repeats 5
    python benchmarks/cli_startup_bench.py --skip-explain      # help timings only

Needs the default model in the cache (`workbench explain` downloads it once otherwise).
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import statistics
import subprocess
import sys
import time

FRIDGE = "The milk is in the fridge. To get the milk, open the"


def run_in_terminal(args: list[str], first_line_marker: str | None = None) -> dict[str, float]:
    """Run `python -m workbench ARGS` on a pty: seconds to the first byte, to the first
    output line holding `first_line_marker`, and to the exit."""
    controller, terminal = pty.openpty()
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(terminal)
    first_byte = marker = None
    seen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        now = time.perf_counter() - start
        first_byte = first_byte if first_byte is not None else now
        seen += chunk
        if marker is None and first_line_marker and first_line_marker.encode() in seen:
            marker = now
    process.wait()
    os.close(controller)
    if process.returncode != 0:
        raise SystemExit(f"workbench {' '.join(args)} failed:\n{seen.decode(errors='replace')}")
    return {
        "first_byte": first_byte if first_byte is not None else float("nan"),
        "first_line": marker if marker is not None else float("nan"),
        "exit": time.perf_counter() - start,
    }


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words a user types."""
    import typer

    from workbench.cli import app

    def walk(command, prefix):
        yield prefix
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*prefix, name])

    return list(walk(typer.main.get_command(app), []))


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):.2f} s, worst {max(samples):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-explain", action="store_true")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    worst_help = 0.0
    for path in command_paths():
        samples = [run_in_terminal([*path, "--help"])["exit"] for _ in range(args.repeats)]
        worst_help = max(worst_help, statistics.median(samples))
        print(f"workbench {' '.join(path + ['--help']):<40} {summary(samples)}")
    print(f"slowest --help (median): {worst_help:.2f} s (goal < 1.5 s)")
    if args.skip_explain:
        return
    explain = ["explain", "--text", FRIDGE, "--target", " fridge", "--no-save"]
    runs = [run_in_terminal(explain, first_line_marker="fridge") for _ in range(args.repeats)]
    for key, label in [
        ("first_byte", "first byte (spinner)"),
        ("first_line", "first line of the result"),
        ("exit", "exit"),
    ]:
        print(f"workbench explain (default model), {label:<26} {summary([r[key] for r in runs])}")


if __name__ == "__main__":
    main()
