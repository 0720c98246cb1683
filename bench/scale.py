"""Cost curves of the whole stack (issue 10): state, logger and broker, one after the other.

Run: ``python bench/scale.py [--quick]``. Each part is its own script, runnable alone with
more options (``bench/scale_state.py``, ``bench/scale_logger.py``, ``bench/scale_broker.py``);
this one runs them in one go on the same machine and prints their tables. ``--quick`` caps
the sizes (10^5 keys, 10^6 records, 1,000 workers) for a run of a few minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PARTS = {
    "state": ("scale_state.py", [], ["--max-keys", "100000"]),
    "logger": ("scale_logger.py", [], ["--max-records", "1000000"]),
    "broker": ("scale_broker.py", [], ["--sizes", "10,100,1000"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, minutes not tens")
    parser.add_argument("parts", nargs="*", help=f"any of {', '.join(PARTS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    failed = 0
    for name in args.parts or list(PARTS):
        script, full, quick = PARTS[name]
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n## {name}: {' '.join(cmd[1:])}", flush=True)
        failed += subprocess.call(cmd) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
