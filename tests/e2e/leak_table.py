"""The leak table: per technique and protocol, how many attempts passed, failed, xfailed.

    python tests/e2e/leak_table.py [JUNIT_XML]

Without an argument it runs the corpus (``test_leak_attempt`` of test_mask_leaks.py) with
``--junitxml`` into a temporary directory under the current one and reads that; the
technique and protocol come from each test's id (``[protocol-technique: SQL]``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

PROTOCOLS = ("simple", "ext-text", "ext-binary", "asyncpg", "portal")
_ID = re.compile(r"test_leak_attempt\[(" + "|".join(PROTOCOLS) + r")-([a-z-]+):")


def outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag == "skipped":
            return "xfail" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skipped"
        if child.tag in ("failure", "error"):
            return "FAIL"
    return "pass"


def table(junit: Path) -> str:
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for case in ET.parse(junit).iter("testcase"):
        match = _ID.search(case.get("name", ""))
        if match:
            protocol, technique = match.groups()
            counts[technique][protocol][outcome(case)] += 1
    lines = ["technique   | " + " | ".join(f"{p:^14}" for p in PROTOCOLS),
             "------------|" + "|".join("-" * 16 for _ in PROTOCOLS)]
    totals: Counter = Counter()
    for technique in sorted(counts):
        cells = []
        for p in PROTOCOLS:
            c = counts[technique][p]
            totals.update(c)
            cells.append(f"{c['pass']}/{c['FAIL']}/{c['xfail']}" if c else "-")
        lines.append(f"{technique:<12}| " + " | ".join(f"{cell:^14}" for cell in cells))
    lines.append(f"pass/FAIL/xfail: {totals['pass']}/{totals['FAIL']}/{totals['xfail']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv:
        print(table(Path(argv[0])))
        return 0
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        junit = Path(tmp) / "leaks.xml"
        here = Path(__file__).parent
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", str(here / "test_mask_leaks.py"),
                        "-k", "test_leak_attempt", f"--junitxml={junit}"], check=False)
        print(table(junit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
