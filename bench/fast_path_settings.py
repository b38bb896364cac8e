"""Which of the fast path's switches win on this machine: one training step of a preset's UNet (EDM objective,
a random batch) with each setting, interleaved, and AdamW's step alone per implementation.

    python bench/fast_path_settings.py --preset tiny --batch-size 64 --repeats 5

Settings, each a bare loop like bench/train_throughput.py's "plain" arm: "default" (float32, contiguous,
eager, torch's default AdamW), "fused" (fused AdamW), "channels_last" (network and batch), "bf16" (autocast),
"compile" (torch.compile of the network; its compile time, the first steps, is printed apart). Each round
times `--steps` steps of every setting in turn (after `--warmup` untimed ones at the start); the median of
`--repeats` rounds is reported, with the time relative to "default". The optimizer table times
`optimizer.step()` alone on the preset's parameters with random gradients (for-loop, foreach and fused AdamW).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import format_table, synchronize  # bench/common.py

from genstudio.atomic import write_json
from genstudio.config import config_from_dict
from genstudio.families import objective_from_config
from genstudio.train import build_model

SETTINGS = ("default", "fused", "channels_last", "bf16", "compile")


class Setting:
    def __init__(self, name: str, preset: str, batch: int, device: torch.device):
        torch.manual_seed(0)
        self.name, self.device = name, device
        self.model = build_model(config_from_dict({"model": {"network": preset}})).to(device).train()
        self.cl = name == "channels_last"
        if self.cl:
            self.model.to(memory_format=torch.channels_last)
        if name == "compile":
            self.model.network.compile()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4, fused=True if name == "fused" else None)
        self.objective = objective_from_config("edm", {})
        self.shape, self.bf16 = (batch, 3, 32, 32), name == "bf16"

    def step(self) -> None:
        x = torch.rand(self.shape, device=self.device) * 2 - 1
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.objective(self.model, x).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()

    def seconds(self, steps: int) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        return (time.perf_counter() - start) / steps


def optimizer_rows(preset: str, device: torch.device, repeats: int) -> list[dict[str, Any]]:
    params = list(build_model(config_from_dict({"model": {"network": preset}})).to(device).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    kinds = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    opts = {k: torch.optim.AdamW(params, lr=1e-4, **kw) for k, kw in kinds.items()}
    for opt in opts.values():
        opt.step()  # state initialised, untimed
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(repeats):
        for k, opt in opts.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(10):
                opt.step()
            synchronize(device)
            times[k].append((time.perf_counter() - start) / 10)
    base = statistics.median(times["for-loop"])
    return [{"adamw": k, "ms_per_step": 1000 * statistics.median(ts), "vs_for_loop": statistics.median(ts) / base}
            for k, ts in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.settings.split(",")
    if bad := set(names) - set(SETTINGS):
        parser.error(f"unknown setting(s) {sorted(bad)}; use {', '.join(SETTINGS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings, first = {}, {}
    for name in names:
        settings[name] = Setting(name, args.preset, args.batch_size, device)
        start = time.perf_counter()
        for _ in range(args.warmup):
            settings[name].step()
        first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name, setting in settings.items():
            times[name].append(setting.seconds(args.steps))
        print(f"round {r + 1} done", file=sys.stderr, flush=True)
    base = statistics.median(times[names[0]])
    rows = [{"setting": n, "s_per_step": statistics.median(ts), "img_s": args.batch_size / statistics.median(ts),
             "vs_" + names[0]: statistics.median(ts) / base, "warmup_s": first[n], "all_s": ts}
            for n, ts in times.items()]
    opt_rows = optimizer_rows(args.preset, device, args.repeats)
    print(f"device {device}, {torch.get_num_threads()} threads, preset {args.preset}, batch {args.batch_size}, "
          f"median of {args.repeats} interleaved rounds of {args.steps} steps; warmup_s: the first {args.warmup} "
          f"steps (compilation included)")
    print(format_table(rows, ("setting", "s_per_step", "img_s", "vs_" + names[0], "warmup_s")))
    print(format_table(opt_rows, ("adamw", "ms_per_step", "vs_for_loop")))
    if args.out:
        write_json(args.out, {"device": str(device), "threads": torch.get_num_threads(), "preset": args.preset,
                              "batch_size": args.batch_size, "settings": rows, "adamw": opt_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
