"""Settings for the whole test session: one CPU thread per process.

The tests run tiny models, where a second intra-op thread buys nothing, and they often run on a
2-core machine that is doing other work (CI runners, a laptop training in the background). There,
OpenMP threads that outnumber the free cores spin against each other: a subset of the suite took
368 s with torch's default 2 threads next to another 2-thread process, and 43 s with 1 thread
(33 s either way on an idle machine). Set here, before anything imports torch, OMP_NUM_THREADS
also reaches the processes tests start (the console script, torchrun, kill-and-resume runs).
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the variable, so torch's thread pool starts at one thread)

torch.set_num_threads(1)
