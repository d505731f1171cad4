"""A run's output directory as one object: creation, lock, compatibility, publishing, manifest.

A directory holds one run. `run.json` records what shaped its records (seed, taxonomy, plan
and per-stage inputs); a re-run that would change them is refused with one line saying how to
proceed, unless the caller asks to update (then what still fits is kept and the stages whose
inputs changed are re-made). The target count may change freely: growing it extends the run,
shrinking it publishes fewer pairs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError
from glan.planner import Plan
from glan.run.files import atomic_file, atomic_write_json, run_lock
from glan.run.state import RunState

STATE_FILE = "glan.sqlite"
INPUTS_FILE = "run.json"
STAGE_ORDER = ("subjects", "syllabus", "questions", "answers")


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = False

    # ---- opening -------------------------------------------------------------------------
    @contextlib.contextmanager
    def opened(self) -> Iterator[RunDir]:
        """Create (if needed) and lock the directory; a directory this call created is removed
        again if the run fails before it recorded anything."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} is a file, not a directory")
        if not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise UserError(f"cannot create --out {path}: {_describe(exc)}") from None
            self.created = True
        self.refuse_unwritable()
        try:
            with run_lock(path):
                yield self
        except BaseException:
            if self.created and not (path / INPUTS_FILE).exists():
                shutil.rmtree(path, ignore_errors=True)
            raise

    def refuse_unwritable(self) -> None:
        """A run writes its directory: one it may not write is refused, in one line."""
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to --out {self.path}: permission denied")

    # ---- compatibility -------------------------------------------------------------------
    def previous_inputs(self) -> dict[str, Any] | None:
        file = self.path / INPUTS_FILE
        if file.exists():
            return orjson.loads(file.read_bytes())
        manifest = self.read_manifest()
        if manifest and "seed" in manifest:  # a run made before run.json existed
            return {"seed": manifest["seed"]}
        return None

    def changed_stages(self, inputs: dict[str, Any], update: bool) -> list[str]:
        """Which stages must be re-made for `inputs`; refuses (UserError) unless `update`."""
        previous = self.previous_inputs()
        if previous is None:
            return []
        if previous.get("seed") != inputs["seed"]:
            raise UserError(
                f"{self.path} holds a run made with seed {previous.get('seed')}, not "
                f"{inputs['seed']}: pass --seed {previous.get('seed')} to resume it, "
                "or choose a new --out to start fresh"
            )
        if "taxonomy" not in previous:
            return []  # legacy: only the seed was known
        changed = [k for k in ("taxonomy", "plan", *STAGE_ORDER) if previous.get(k) != inputs[k]]
        if changed and not update:
            what = ", ".join(k if k in ("taxonomy", "plan") else f"{k} settings" for k in changed)
            raise UserError(
                f"{self.path} holds a run made with another {what}: re-run with the same inputs to "
                "resume, add --update to keep what still fits and re-make what changed, "
                "or choose a new --out"
            )
        return [k for k in STAGE_ORDER if k in changed]

    def record_inputs(self, inputs: dict[str, Any]) -> None:
        atomic_write_json(self.path / INPUTS_FILE, inputs)

    # ---- state and manifest ----------------------------------------------------------------
    def state(self) -> RunState:
        return RunState(self.path / STATE_FILE)

    def read_manifest(self) -> dict[str, Any] | None:
        file = self.path / "manifest.json"
        try:
            return orjson.loads(file.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.path / "manifest.json", manifest)

    # ---- publishing ----------------------------------------------------------------------
    def publish(self, plan: Plan, states: dict[str, RunState]) -> dict[str, Any]:
        """Write subjects, syllabi and instructions JSONL in tree order from the staged state
        (`states` maps each discipline path to the state holding it: one, or one per shard).
        Each discipline contributes at most its quota of pairs. Returns counts and strategies."""
        counts = {"subjects": 0, "syllabi": 0, "instructions": 0}
        multi = 0
        with (
            atomic_file(self.path / "subjects.jsonl") as subjects_out,
            atomic_file(self.path / "syllabi.jsonl") as syllabi_out,
            atomic_file(self.path / "instructions.jsonl") as pairs_out,
        ):
            for dp in plan.disciplines:
                d = dp.discipline.path
                state = states[d]
                for subject, body in state.syllabus_rows(d):
                    subjects_out.write(subject + b"\n")
                    syllabi_out.write(body + b"\n")
                    counts["subjects"] += 1
                    counts["syllabi"] += 1
                for body in state.pair_bodies(d, dp.quota):
                    pairs_out.write(body + b"\n")
                    counts["instructions"] += 1
                    multi += b'"strategy":"multi"' in body
        strategies = {"single": counts["instructions"] - multi, "multi": multi}
        return {"counts": counts, "strategies": strategies}
