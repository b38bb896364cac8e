"""The studio's training runs: each a separate `python -m genstudio.train` process (what `accelerate launch` runs on
one device), one at a time, writing into a folder of the runs folder, where a restarted studio finds it again.

A run is started from a TOML config in the project's config folders (or resumed from its run folder's
config.json) with a few keys overridden; the config is checked exactly as the trainer's command line checks it
before any process starts. Stop sends SIGTERM: the trainer saves a checkpoint and exits (status 3). Everything
shown (the loss curve, images/s, ETA, the latest sample grid) is read back from the run folder's files."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genstudio.atomic import read_jsonl, write_json, write_text
from genstudio.config import Config, load_config, read_toml
from genstudio.train import EXIT_OK, EXIT_STOPPED, build_checked, latest_checkpoint

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PRECISIONS = ("no", "bf16", "fp16")
TRAINER_SECTIONS = {f.name for f in dataclasses.fields(Config)}  # model, objective, data, train
OVERRIDES = {  # the keys the studio overrides: (config key, lo, hi)
    "steps": ("max_steps", 1, 10_000_000), "batch size": ("batch_size", 1, 4096), "learning rate": ("lr", 1e-12, 10.0),
}
LOG = "studio.log"          # the trainer's stdout and stderr
PID = "trainer.pid"         # the trainer's process id while it runs: a restarted studio sees it still training
EXPORTS = "exports"         # the runs folder's subfolder that Export writes checkpoints to


@dataclass
class Running:
    name: str
    folder: Path
    process: subprocess.Popen
    log: Any
    started: float
    stop_sent: bool = False


def _flat_args(config: dict[str, Any], prefix: str = "") -> list[str]:
    """A config dict as the trainer's --section.key=VALUE overrides (values written as TOML)."""
    out = []
    for k, v in config.items():
        if isinstance(v, dict):
            out += _flat_args(v, f"{prefix}{k}.")
        else:
            out.append(f"--{prefix}{k}={json.dumps(v)}")
    return out


class Runs:
    """The runs folder, the config folders a run may start from, and the one training process."""

    def __init__(self, runs_dir: str | Path, config_dirs: list[str | Path] | None = None):
        self.root = Path(runs_dir).resolve()
        self.config_dirs = [Path(d).resolve() for d in (config_dirs or [CONFIGS])]
        self.running: Running | None = None
        self.exits: dict[str, str] = {}  # run name -> how its last process in this studio ended
        self._lock = threading.Lock()

    # ---- what there is ----

    def configs(self) -> list[tuple[str, str]]:
        """(shown name, path) of every training config in the config folders (not, e.g., a reflow pipeline's)."""
        def trainer_config(path: Path) -> bool:
            try:
                return set(read_toml(path)) <= TRAINER_SECTIONS
            except ValueError:
                return False
        return [(f"{d.name}/{p.name}", str(p)) for d in self.config_dirs for p in sorted(d.glob("*.toml"))
                if trainer_config(p)]

    def names(self) -> list[str]:
        """The run folders in the runs folder (a config.json or a log written by the trainer), newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name != EXPORTS
                 and ((p / "config.json").is_file() or (p / "metrics.jsonl").is_file())]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    def config_path(self, value: Any) -> Path:
        """A config file inside the project's config folders, else a ValueError saying where configs may be."""
        if not isinstance(value, str) or not value.strip() or "\x00" in value or len(value) > 4096:
            raise ValueError("choose a config: one of the TOML files in " + self._where())
        path = Path(value.strip()).expanduser()
        path = (path if path.is_absolute() else PROJECT / path).resolve()
        if not any(path.is_relative_to(d) for d in self.config_dirs):
            raise ValueError(f"config {value!r} is outside the project's config folders; the studio starts runs "
                             f"only from the TOML files in {self._where()}")
        if path.suffix != ".toml" or not path.is_file():
            raise ValueError(f"config {value!r}: no such TOML file; choose one of the files in {self._where()}")
        return path

    def _where(self) -> str:
        return ", ".join(str(d) for d in self.config_dirs)

    def run_folder(self, value: Any) -> Path:
        """A run folder of the runs folder, by name."""
        if not isinstance(value, str) or not NAME.fullmatch(value.strip()):
            raise ValueError(f"choose a run of {self.root} (a folder name: letters, digits, '.', '_', '-'), "
                             f"got {value!r}")
        folder = self.root / value.strip()
        if not (folder / "config.json").is_file():
            raise ValueError(f"run {value!r}: no run folder with a config.json in {self.root}")
        return folder

    # ---- starting, stopping ----

    def overrides(self, steps: Any, batch: Any, lr: Any, precision: Any) -> dict[str, Any]:
        """The [train] keys to override (empty values keep the config's), each checked against its range."""
        train: dict[str, Any] = {}
        for (what, (key, lo, hi)), value in zip(OVERRIDES.items(), (steps, batch, lr)):
            if value is None or str(value).strip() == "":
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{what} must be a number in {lo:g}..{hi:g}, got {value!r}") from None
            if not lo <= v <= hi:
                raise ValueError(f"{what} must be in {lo:g}..{hi:g}, got {value!r}")
            if key != "lr":
                if v != int(v):
                    raise ValueError(f"{what} must be a whole number in {lo}..{hi}, got {value!r}")
                v = int(v)
            train[key] = v
        if precision not in (None, ""):
            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
            train["mixed_precision"] = precision
        return train

    def _orphan(self, folder: Path) -> int | None:
        """The id of a trainer an earlier studio started in `folder` that is still running, else None."""
        try:
            pid = int((folder / PID).read_text())
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.exists() and b"genstudio.train" not in cmdline.read_bytes():
                return None  # the id was reused by another program
        except (OSError, ValueError):
            return None
        mine = self.running is not None and self.running.process.pid == pid
        return None if mine else pid

    def _check_free(self) -> None:
        if self.running is not None and self.running.process.poll() is None:
            raise ValueError(f"run {self.running.name!r} is still training: one run at a time in this studio; "
                             f"stop it first")
        for name in self.names():
            if self._orphan(self.root / name):
                raise ValueError(f"run {name!r} is still training (started before this studio restarted): one run "
                                 f"at a time; stop it first")

    def start(self, config: Any, name: Any, train: dict[str, Any]) -> str:
        """Start a fresh run of `config` in runs/<name> (default: the config's output_dir's name); its name."""
        path = self.config_path(config)
        if name in (None, ""):
            base = Path(str(read_toml(path).get("train", {}).get("output_dir", path.stem))).name or path.stem
            name, k = base, 2
            while (self.root / name).exists():
                name, k = f"{base}-{k}", k + 1
        if not isinstance(name, str) or not NAME.fullmatch(name.strip()):
            raise ValueError(f"output folder must be a folder name inside {self.root} (letters, digits, '.', '_', "
                             f"'-'; at most 64), got {name!r}")
        name = name.strip()
        folder = self.root / name
        if folder.exists():
            raise ValueError(f"output folder {name!r} already exists in {self.root}: choose another name, or "
                             f"pick the run and press Resume")
        over = {"train": {**train, "output_dir": str(folder), "progress": False}}
        args = ["--config", str(path), *_flat_args(over)]
        return self._launch(name, folder, args, load_config(path, over))

    def resume(self, run: Any, train: dict[str, Any]) -> str:
        """Continue run `run` from its latest checkpoint (e.g. with more steps)."""
        folder = self.run_folder(run)
        if latest_checkpoint(folder) is None:
            raise ValueError(f"run {folder.name!r} has no checkpoint to resume from; start it again instead")
        saved = json.loads((folder / "config.json").read_text())
        saved["train"] = {**saved["train"], **train, "output_dir": str(folder), "progress": False}
        return self._launch(folder.name, folder, ["--resume", *_flat_args(saved)], load_config(None, saved),
                            resume=True)

    def _launch(self, name: str, folder: Path, args: list[str], config: Config, resume: bool = False) -> str:
        with self._lock:
            self._check_free()
            build_checked(config)  # every check the trainer makes before it starts (ConfigError: a ValueError)
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "config.json", config.to_dict())  # what the trainer writes first: listed at once
            log = open(folder / LOG, "a")
            log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'}\n")
            log.flush()
            process = subprocess.Popen([sys.executable, "-m", "genstudio.train", *args], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
            write_text(folder / PID, str(process.pid))
            self.running = Running(name, folder, process, log, time.time())
            self.exits.pop(name, None)
        return name

    def stop(self) -> str:
        """SIGTERM to the running trainer (it saves a checkpoint and exits); its run's name."""
        with self._lock:
            r = self.running
            if r is None or r.process.poll() is not None:
                orphans = [(n, pid) for n in self.names() if (pid := self._orphan(self.root / n))]
                if not orphans:
                    raise ValueError("nothing is training: there is no run to stop")
                os.kill(orphans[0][1], signal.SIGTERM)  # started before this studio restarted
                return orphans[0][0]
            r.process.send_signal(signal.SIGTERM)
            r.stop_sent = True
            return r.name

    def poll(self) -> None:
        """Note how the running process ended, once it has."""
        with self._lock:
            r = self.running
            if r is None or r.process.poll() is None:
                return
            code = r.process.returncode
            if code < 0 and r.stop_sent:  # SIGTERM before the trainer's handler was set: it was still starting
                self.exits[r.name] = "stopped while starting, before any step (nothing to save)"
            else:
                self.exits[r.name] = {EXIT_OK: "finished", EXIT_STOPPED: "stopped: checkpoint saved (Resume "
                                      "continues)"}.get(code, f"failed (exit status {code}; see {LOG} in the run "
                                                              f"folder)")
            r.log.close()
            (r.folder / PID).unlink(missing_ok=True)
            self.running = None

    def is_running(self, name: str) -> bool:
        self.poll()
        return self.running is not None and self.running.name == name or bool(self._orphan(self.root / name))

    def close(self) -> None:
        """Stop a running trainer (the studio is shutting down) and wait for its checkpoint."""
        r = self.running
        if r is not None and r.process.poll() is None:
            r.process.send_signal(signal.SIGTERM)
            try:
                r.process.wait(60)
            except subprocess.TimeoutExpired:
                r.process.kill()
        self.poll()

    # ---- what a run folder says ----

    def status(self, run: str) -> dict[str, Any]:
        """A run's state from its files: losses, images/s, ETA, latest checkpoint and sample grid."""
        self.poll()
        folder = self.run_folder(run)
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        tc = config.get("train", {})
        log = folder / "metrics.jsonl"
        records = {r["step"]: r for r in read_jsonl(log)} if log.is_file() else {}
        points = [(s, r["loss"]) for s, r in sorted(records.items()) if not r.get("skipped")]
        step = max(records, default=0)
        max_steps = int(tc.get("max_steps", 0) or 0)
        batch = int(tc.get("batch_size", 0) or 0) * int(tc.get("grad_accum", 1) or 1)
        recent = [records[s] for s in sorted(records)[-20:]]
        ips = eta = None
        if len(recent) >= 2 and recent[-1]["time"] > recent[0]["time"]:
            rate = (recent[-1]["step"] - recent[0]["step"]) / (recent[-1]["time"] - recent[0]["time"])
            ips, eta = rate * batch, max(max_steps - step, 0) / rate if rate > 0 else None
        grids = sorted((folder / "samples").glob("step_*.png")) if (folder / "samples").is_dir() else []
        ckpt = latest_checkpoint(folder)
        running = self.running is not None and self.running.name == folder.name
        if not running and self._orphan(folder):
            running, state = True, "training (started before this studio restarted)"
        else:
            state = ("stopping (SIGTERM sent: saving a checkpoint)" if running and self.running and
                     self.running.stop_sent else "training" if running else self.exits.get(folder.name, "not running"))
        return {"name": folder.name, "folder": folder, "state": state, "running": running, "step": step,
                "max_steps": max_steps, "losses": points, "img_per_s": ips, "eta_s": eta,
                "checkpoint": ckpt, "sample_grid": grids[-1] if grids else None,
                "model": folder / "model" if (folder / "model" / "genstudio.json").is_file() else None,
                "log_tail": _tail(folder / LOG)}

    def export_dir(self, run: str) -> Path:
        return self.root / EXPORTS / self.run_folder(run).name

    def exported(self) -> list[Path]:
        """The checkpoints Export wrote (offered in the model lists when the studio starts)."""
        return sorted(p.parent for p in (self.root / EXPORTS).glob("*/genstudio.json"))


def _tail(path: Path, lines: int = 6) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4000))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
