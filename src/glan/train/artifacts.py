"""What `glan train` writes next to the checkpoint: its config, the data's fingerprint and the
loss curve (JSON and a self-contained plotly page)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from glan.errors import UserError
from glan.run.files import atomic_write_json, atomic_write_text

CONFIG = "train_config.json"
LOSS_JSON = "loss_curve.json"
LOSS_HTML = "loss_curve.html"


def write_config(out_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_json(out_dir / CONFIG, config)


def check_same_data(out_dir: Path, data: dict[str, Any]) -> None:
    """Resuming on other data would silently mix two runs."""
    path = out_dir / CONFIG
    if not path.is_file():
        return
    before = orjson.loads(path.read_bytes()).get("data", {})
    if before.get("sha256") and before.get("sha256") != data.get("sha256"):
        raise UserError(
            f"{out_dir} was trained on other data ({before.get('pairs')} pairs, "
            f"sha256 {before['sha256'][:12]}): resume with the same data or choose another --out"
        )


def loss_points(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [
        {"step": row["step"], "loss": row["loss"], "learning_rate": row.get("learning_rate", 0.0)}
        for row in log_history
        if "loss" in row and "step" in row
    ]


def write_loss_curve(out_dir: Path, points: list[dict[str, float]]) -> None:
    import plotly.graph_objects as go

    atomic_write_json(out_dir / LOSS_JSON, {"points": points})
    fig = go.Figure(go.Scatter(x=[p["step"] for p in points], y=[p["loss"] for p in points]))
    fig.update_layout(
        title="Training loss (response tokens)", xaxis_title="step", yaxis_title="loss"
    )
    atomic_write_text(out_dir / LOSS_HTML, fig.to_html(include_plotlyjs=True, full_html=True))
