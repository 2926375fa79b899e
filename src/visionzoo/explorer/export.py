"""`visionzoo explore --export DIR`: the explorer as a static site.

The page is the same; every `api/...` answer is written beside it as `api/....json`, and
the page reads those files instead of asking a server (`window.VZ_STATIC`). There is no
live inference: the "inside a run" panel lists the runs and their curves only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionzoo.explorer.data import Explorer, Failed, lab_plot, load_lab
from visionzoo.explorer.server import STATIC, index_html, plotly_js


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")


def export_site(
    out: Path | str,
    explorer: Explorer,
    models: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the static site to `out`; `models` limits the cards written (default: all)."""
    out = Path(out)
    (out / "static").mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(index_html(static_export=True), encoding="utf-8")
    for name in ("app.js", "style.css"):
        shutil.copyfile(STATIC / name, out / "static" / name)
    shutil.copyfile(plotly_js(), out / "static" / "plotly.min.js")
    api = out / "api"
    overview = explorer.overview()
    wanted = set(models) if models is not None else {m["name"] for m in overview["models"]}
    overview["models"] = [m for m in overview["models"] if m["name"] in wanted]
    names = [m["name"] for m in overview["models"]]
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name}")
        for part, fn in (("profile", explorer.profile), ("diagram", explorer.diagram)):
            try:
                _write(api / "models" / name / f"{part}.json", fn(name))
            except Failed as err:
                _write(api / "models" / name / f"{part}.json", {"error": str(err)})
        _write(api / "models" / name / "source.json", explorer.source(name))
        _write(api / "models" / f"{name}.json", explorer.card(name))
    overview = explorer.overview()  # again: now with the profiles in it
    overview["models"] = [m for m in overview["models"] if m["name"] in wanted]
    _write(api / "models.json", overview)
    claims = load_lab(explorer.results_root)
    _write(api / "lab.json", {"claims": claims})
    for claim in claims:
        if claim["has_plot"]:
            (api / "lab" / claim["id"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(
                lab_plot(explorer.results_root, claim["id"]), api / "lab" / claim["id"] / "plot.png"
            )
    runs = explorer.runs(refresh=False)
    _write(api / "runs.json", {"runs": runs, "live": False})
    for run in runs:
        _write(api / "runs" / f"{run['id']}.json", explorer.run(run["id"]))
    log(f"wrote {out}/index.html ({len(names)} models, {len(runs)} runs)")
    return out
