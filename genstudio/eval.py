"""`python -m genstudio.eval ARGS` is `genstudio eval ARGS`, for launchers that run a module:

    accelerate launch --num_processes 2 -m genstudio.eval checkpoints/flow_small_cifar10 --n 10000
"""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
