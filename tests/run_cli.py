"""Running the `workbench` CLI inside the test process (fast, for the many error cases)."""

from __future__ import annotations

import pytest


def run_inprocess(capsys, *args: str) -> tuple[int, str, str]:
    """Run `workbench ARGS` through `main()`: exit code, stdout, stderr."""
    from workbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err
