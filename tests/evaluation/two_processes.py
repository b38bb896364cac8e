"""Run by tests/evaluation/test_processes.py under `accelerate launch --num_processes 2`: eval, sweep and reflow
pair generation through the command line, each process taking its share of the batches or shards."""
import sys

from genstudio.cli import main

ckpt, work, *evaluator = sys.argv[1:]
assert main(["eval", ckpt, "--sampler", "euler", "--steps", "2", "--n", "12", "--out", f"{work}/eval.json",
             "--sample-cache", *evaluator]) == 0
assert main(["sweep", ckpt, "--samplers", "euler", "--steps", "2,3", "--n", "12", "--out", f"{work}/sweep",
             *evaluator]) == 0
assert main(["reflow", "generate", ckpt, "--out", f"{work}/pairs", "--n", "10", "--shard-size", "3", "--steps", "2",
             "--batch-size", "2", "--sampler", "euler"]) == 0
