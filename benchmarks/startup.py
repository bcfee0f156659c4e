"""Start-up time: `zoetrope --help`, and loading the bundled model in a fresh process.

    python benchmarks/startup.py            # median of 5 fresh processes each
    python benchmarks/startup.py --runs 9

Each measurement is a new interpreter, as a user's command is: `zoetrope --help` end to end (the
console script), and for the bundled model the import of `zoetrope.pipeline` (torch and all) and
`TextToVideoPipeline.from_pretrained(BUNDLED_MODEL)` timed apart inside the process. Targets:
--help under 0.5 s; the model load under 1 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

LOAD = """
import json, time
start = time.perf_counter()
from zoetrope.pipeline import BUNDLED_MODEL, TextToVideoPipeline
imported = time.perf_counter()
TextToVideoPipeline.from_pretrained(BUNDLED_MODEL)
print(json.dumps({"import": imported - start, "load": time.perf_counter() - imported}))
"""


def help_seconds() -> float:
    """Wall-clock seconds of one `zoetrope --help` in a new process."""
    script = shutil.which("zoetrope") or os.path.join(os.path.dirname(sys.executable), "zoetrope")
    start = time.perf_counter()
    subprocess.run([script, "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def load_seconds() -> dict[str, float]:
    """Seconds to import the pipeline module and to load the bundled model, in a new process."""
    out = subprocess.run([sys.executable, "-c", LOAD], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per measurement")
    args = parser.parse_args()
    helps = [help_seconds() for _ in range(args.runs)]
    loads = [load_seconds() for _ in range(args.runs)]
    print(f"zoetrope --help:            {statistics.median(helps):.3f} s (median of {args.runs})")
    for key in ("import", "load"):
        values = [run[key] for run in loads]
        what = "import zoetrope.pipeline:" if key == "import" else "load the bundled model: "
        print(f"{what}   {statistics.median(values):.3f} s (median of {args.runs})")


if __name__ == "__main__":
    main()
