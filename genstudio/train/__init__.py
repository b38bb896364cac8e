"""The one training loop, on Accelerate, for every family (the objective is the plug-in).

    accelerate launch -m genstudio.train --config configs/edm_cifar10.toml [--resume] [--section.key VALUE ...]
    accelerate launch -m genstudio.train --continue checkpoints/flow_small_cifar10 --data.source ... [--resume]

Read it in three parts: `setup` (the model and objective a config builds, checks, data, schedules), `step`
(one optimizer step), `state` (save and resume), tied together by `loop.run`; `continued` starts a run from an
exported model and carries its lineage and compact optimizer state.

Determinism: the data order is a pure function of (seed, step) and the global RNG is re-seeded at every step
from (seed, step, process), so a resumed run replays the exact per-step losses of an uninterrupted one from the
restored weights, optimizer, EMA and LR schedule. A resume also completes what a kill cut off: model/ is
exported again from the latest checkpoint's EMA when it is missing or at another step.

Exit status (`genstudio train`, `python -m genstudio.train`):
    0  finished: train.max_steps reached, model/ exported
    2  a config, data or checkpoint error, or training diverged (too many non-finite steps in a row)
    3  stopped by SIGTERM/SIGINT before train.max_steps: a checkpoint was saved; continue with --resume
"""
from __future__ import annotations

import argparse
import sys

from genstudio.config import load_config

from .continued import continue_config
from .loop import run, save_sample_grid
from .setup import (
    batch_indices,
    build_checked,
    build_model,
    init_weights,
    learning_rate,
    step_seed,
    training_data,
    validate,
)
from .state import EMA_FILE, RUN_CHECKPOINTS, STATE_FILE, NonFiniteLossError, latest_checkpoint

EXIT_OK, EXIT_ERROR, EXIT_STOPPED = 0, 2, 3

__all__ = ["run", "main", "continue_config",
           "build_model", "build_checked", "validate", "init_weights", "training_data", "batch_indices",
           "learning_rate", "step_seed", "latest_checkpoint", "save_sample_grid", "NonFiniteLossError",
           "EMA_FILE", "RUN_CHECKPOINTS", "STATE_FILE", "EXIT_OK", "EXIT_ERROR", "EXIT_STOPPED"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genstudio train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Any config key can be overridden: --train.lr 1e-4, "
                                            "--data.source PATH, ...")
    parser.add_argument("--config", help="TOML config file (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
    parser.add_argument("--continue", dest="continue_from", metavar="FOLDER",
                        help="train a shipped or exported model further (a checkpoint or run folder): its recorded "
                             "config under --config and the overrides; appends a segment to its training lineage")
    args, rest = parser.parse_known_args(argv)
    try:
        config = (continue_config(args.continue_from, args.config, rest) if args.continue_from
                  else load_config(args.config, rest))
        result = run(config, resume=args.resume)
    except (ValueError, NonFiniteLossError) as e:  # config, data and checkpoint errors explain themselves
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_STOPPED if result["stopped_early"] else EXIT_OK
