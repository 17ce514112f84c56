"""Print the mutation score of each module after `make mutate` (``python -m tests.mutate_report``).

Reads what mutmut left in ``mutants/`` (one ``<module>.py.meta`` file per mutated module) and
prints one Markdown table row per module named on the command line, then every surviving
mutant with its diff, for docs/testing.md. A mutant that makes a test time out counts as
detected, like a killed one: the tests noticed the change. A mutant that no test of its
module reaches ("no tests") counts as undetected; "not run" are mutants mutmut has not
tested yet (an interrupted run). The score is detected / (mutants - not run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

_DETECTED = ("killed", "timeout", "segfault", "caught by type check")


def _statuses(module: str) -> dict[str, str]:
    meta = Path("mutants", *module.split(".")).with_suffix(".py.meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {key: status_by_exit_code[code] for key, code in codes.items()}


def main(modules: list[str]) -> int:
    print("| module | mutants | killed | timed out | survived | no tests | not run | score |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    survivors: list[str] = []
    for module in modules:
        statuses = _statuses(module)
        counts = Counter(statuses.values())
        detected = sum(counts[status] for status in _DETECTED)
        survived = counts["survived"]
        run = detected + survived + counts["no tests"] + counts["suspicious"]
        score = f"{100 * detected / run:.1f} %" if run else "-"
        print(
            f"| `{module}` | {len(statuses)} | {counts['killed']} | {counts['timeout']} "
            f"| {survived} | {counts['no tests']} | {len(statuses) - run} | {score} |"
        )
        survivors += sorted(key for key, status in statuses.items() if status == "survived")
    for key in survivors:
        print(f"\n{key}")
        shown = subprocess.run(
            [Path(sys.executable).with_name("mutmut"), "show", key],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in shown.stdout.splitlines():
            if line.startswith(("-", "+")) and not line.startswith(("---", "+++")):
                print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
