"""A batch run on the tiny model, as a separate process (for the kill/resume and torchrun tests).

usage: python tests/bench_worker.py WEIGHTS STORE ATTACKS [--die-after N] [--die-after-stored N]
                                    [--device cpu|cuda] [--threads N]

--die-after N: die (os._exit, as kill -9) once N examples are reported done (after whole batches);
--die-after-stored N: die right after the N-th example is written, in the middle of a batch.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

from tiny import TinyScenes, load_tiny  # noqa: E402

from mlalp_core.experiments.runner import BenchConfig, init_distributed_from_env, run_benchmark  # noqa: E402


def main() -> None:
    weights, store, attacks = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    die_after = int(sys.argv[sys.argv.index("--die-after") + 1]) if "--die-after" in sys.argv else None
    die_stored = int(sys.argv[sys.argv.index("--die-after-stored") + 1]) if "--die-after-stored" in sys.argv else None
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
    torch.set_num_threads(1)
    if die_stored is not None:
        from mlalp_core.experiments.store import ResultsStore

        write = ResultsStore.add_result
        stored = {"n": 0}

        def add_then_maybe_die(self, *args, **kwargs):
            write(self, *args, **kwargs)
            stored["n"] += 1
            if stored["n"] >= die_stored:
                os._exit(17)  # a kill -9 between two examples of one batch

        ResultsStore.add_result = add_then_maybe_die
    rank, world, dist_dev = init_distributed_from_env(device)
    seen = {"n": 0}

    def progress(done, total, message):
        if die_after is not None and "examples" in message:
            seen["n"] = done
            if done >= die_after:
                os._exit(17)  # a crash: no cleanup, no flush beyond what the store committed

    cfg = BenchConfig(models=["tiny"], dataset="tiny", split="all", attacks=attacks, seed=3, batch_size=4,
                      device=dist_dev or device, store=store, precision="float32", threads=threads,
                      attack_settings={"ml-cw": {"max_iterations": 50, "binary_search_steps": 2}})
    run_benchmark(cfg, progress=progress, model_loader=lambda name, device=None: load_tiny(weights),
                  dataset_loader=lambda name, split=None: TinyScenes())


if __name__ == "__main__":
    main()
