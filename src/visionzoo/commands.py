"""The spine's commands: list, data, train, eval, predict."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from visionzoo.errors import UserError

console = Console()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="*", default=["*"], help="fnmatch patterns, e.g. 'resnet*'")
    p.add_argument("--family", help="only this family")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="check (or download) a dataset and describe it")
    p.add_argument("dataset", help="fashion-mnist, mnist, cifar10, synthetic or imagefolder:PATH")
    p.add_argument("--data-dir", help="folder to look in (and download to)")
    p.add_argument("--download", action="store_true", help="fetch missing files (checksummed)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument("model", nargs="?", help="registered model name (omit with --resume)")
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run: top-1, top-5, per-class, confusion matrix")
    p.add_argument("run", type=Path, help="run folder, or a model name with --weights")
    p.add_argument(
        "--weights",
        help="published weights for the model named instead of a run (torchvision[:NAME], "
        "timm[:NAME], hf:ORG/NAME or a file), scored on --dataset imagefolder:PATH, an "
        "ImageNet-format validation folder (class folders n01440764/... or 0/ .. 999/)",
    )
    p.add_argument("--dataset", help="evaluate on another dataset with the same classes")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify your own images with a trained run")
    p.add_argument("run", type=Path, help="run folder, or a model name with --weights")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument(
        "--weights",
        help="published weights for the model named instead of a run: torchvision[:NAME], "
        "timm[:NAME], hf:ORG/NAME or a file",
    )
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def add_train_options(p: argparse.ArgumentParser) -> None:
    from visionzoo.engine.config import TrainConfig

    defaults = TrainConfig()
    p.add_argument("--dataset", help=f"dataset (default {defaults.dataset})")
    p.add_argument("--out", type=Path, help="run folder (default runs/MODEL-DATASET)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in --out (the old run stays until the new one's first "
        "checkpoint)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue a run with its own recipe; --epochs N sets its new length (the "
        "learning-rate schedule is recomputed for N epochs and continues from the current step); "
        "--device, --threads and other flags that only say where it runs may change; any other "
        "flag that differs from the run's is refused",
    )
    p.add_argument(
        "--recipe",
        help="named recipe: demo, small-cnn, resnet-cifar, vit-small-data, ...; auto: demo "
        "(LeNets) or small-cnn, their large-batch -gpu variants on CUDA",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.add_argument(
        "--model-kwargs", type=json.loads, metavar="JSON", help="e.g. '{\"dropout\": 0.2}'"
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("model", "dataset", "recipe", "model_kwargs"):
            _add_option(p, f, getattr(defaults, f.name))
    # the flag's name before the field became decay_norm_bias
    p.add_argument(
        "--no-no-decay-norm-bias", dest="decay_norm_bias", action="store_const", const=True,
        help=argparse.SUPPRESS,
    )  # fmt: skip


RESUME_HELP = {"epochs": "; with --resume, the run's new length (extends its schedule)"}
_KIND = {"int": int, "float": float, "int | None": int, "float | None": float}


def _add_option(p: argparse.ArgumentParser, f: dataclasses.Field, default: Any) -> None:
    """The flag of one TrainConfig field: its help, its choices, --x/--no-x for booleans.

    Flags default to None, so that only the options given override a recipe."""
    from visionzoo.engine.config import option_flag, show_value

    flag = option_flag(f.name)
    help = f.metadata.get("help", "") + RESUME_HELP.get(f.name, "")
    if f.type in ("bool", "bool | None"):
        shown = {True: "on", False: "off"}.get(default, "auto")
        p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                       help=_escape(f"{help} (default: {shown})"))  # fmt: skip
        return
    choices = f.metadata.get("choices") or None
    kind = _choice(f.name, choices) if choices else _KIND.get(str(f.type), str)
    p.add_argument(flag, dest=f.name, type=kind, default=None, choices=choices,
                   help=_escape(f"{help} (default: {show_value(default)})"))  # fmt: skip


def _choice(name: str, choices: tuple[str, ...]) -> Any:
    """An argparse type that refuses a value outside `choices` with the config's message."""
    from visionzoo.engine.config import choice_error

    def parse(value: str) -> str:
        message = choice_error(name, value)
        if message:
            raise argparse.ArgumentTypeError(message)
        return value

    parse.__name__ = name
    return parse


def _escape(help: str) -> str:
    return help.replace("%", "%%")  # argparse formats help with %


def cmd_list(args: argparse.Namespace) -> int:
    from visionzoo.registry import get_model_info, list_models

    names = list_models(args.pattern, family=args.family)
    infos = [get_model_info(n) for n in names]
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=1))
        return 0
    header = ("model", "family", "year", "params", "input", "paper")
    rows = [
        (i.name, i.family, str(i.year), f"{i.reference_params:,}" if i.reference_params else "-",
         f"{i.in_channels}x{i.image_size}", i.paper)
        for i in infos
    ]  # fmt: skip
    if not sys.stdout.isatty():  # piped: whole names and titles, never cut to a terminal width
        _print_columns([header, *rows])
        return 0
    table = Table(title=f"{len(names)} models")
    for col in header:
        table.add_column(col, justify="right" if col in ("params", "year") else "left")
    for row in rows:
        table.add_row(*row[:-1], row[-1][:60])
    console.print(table)
    return 0


def _print_columns(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def cmd_data(args: argparse.Namespace) -> int:
    from visionzoo.data import load_dataset

    train = load_dataset(args.dataset, "train", args.data_dir, args.download)
    test = load_dataset(args.dataset, "test", args.data_dir, args.download)
    s = train.spec
    console.print(
        f"{s.name}: {len(train):,} train / {len(test):,} test images, "
        f"{s.channels}x{s.size}x{s.size}, {s.num_classes} classes "
        f"({', '.join(s.classes[:10])}{'...' if s.num_classes > 10 else ''})"
    )
    if s.train_size and len(train) != s.train_size and s.format == "idx":
        console.print(
            f"note: the official training set has {s.train_size:,} images; this is a subset"
        )
    return 0


def train_config_from_args(args: argparse.Namespace):
    from visionzoo.engine.config import TrainConfig
    from visionzoo.engine.recipes import resolve_recipe

    values: dict[str, Any] = resolve_recipe(args.recipe, args.model, args.device or "auto")
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None and f.name not in ("model", "recipe"):
            values[f.name] = v
    if args.model_kwargs:
        values["model_kwargs"] = args.model_kwargs
    values["model"] = args.model
    values["dataset"] = args.dataset or TrainConfig.dataset
    return TrainConfig.from_dict(values)


def given_train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields set on the command line (for --resume to compare)."""
    from visionzoo.engine.config import TrainConfig

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None and f.name not in ("model", "recipe")
    }
    if args.model_kwargs is not None:
        given["model_kwargs"] = args.model_kwargs
    return given


def cmd_train(args: argparse.Namespace) -> int:
    from visionzoo.engine.fit import fit, resume_config
    from visionzoo.registry import get_model_info

    if args.resume:
        if args.model or args.recipe or args.out or args.overwrite:
            raise UserError(
                "--resume continues a run as it was configured: give no model, --recipe, "
                "--out or --overwrite"
            )
        cfg = resume_config(args.resume, given_train_options(args))
        out, resume = args.resume, True
    else:
        if not args.model:
            raise UserError("name a model to train (see `visionzoo list`), or --resume RUN_DIR")
        get_model_info(args.model)  # unknown names fail here, with suggestions
        cfg = train_config_from_args(args)
        out = (
            args.out
            or Path("runs") / f"{cfg.model}-{cfg.dataset.replace(':', '_').replace('/', '_')}"
        )
        resume = False
    metrics = fit(cfg, out, overwrite=args.overwrite, resume=resume, quiet=args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
        console.print(
            f"[bold]test accuracy {metrics['test_acc']:.2%}[/bold] "
            f"(top-5 {metrics['test_top5']:.2%}) "
            f"after {metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s of training; "
            f"run saved in {out}"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from visionzoo.data import DeviceLoader, load_dataset
    from visionzoo.data.folders import FolderOptions
    from visionzoo.data.loader import Preprocess
    from visionzoo.engine.train import evaluate
    from visionzoo.runs import load_run

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.weights:
        return eval_published(args)
    run = load_run(args.run)
    name = args.dataset or run.config.get("dataset")
    if not isinstance(name, str):
        raise UserError(f"{args.run / 'config.json'} names no 'dataset': pass --dataset")
    pre = Preprocess.from_config(run.config, f"{args.run}/config.json")
    data = load_dataset(name, "test", args.data_dir, folder=FolderOptions.from_preprocess(pre))
    if list(data.spec.classes) != run.class_names:
        raise UserError(
            f"{name} has other classes than the run "
            f"({data.spec.num_classes} vs {len(run.class_names)})"
        )
    if data.spec.size != (pre.data_size or data.spec.size) or data.spec.channels != pre.in_channels:
        raise UserError(
            f"{name} images are {data.spec.channels}x{data.spec.size}px; "
            f"the run expects {pre.in_channels}x{pre.data_size}px"
        )
    loader = DeviceLoader(data, args.batch_size, pre)
    result = evaluate(run.model, loader, data.spec.num_classes)
    del result["correct"]  # per image: not part of the report
    result["dataset"], result["run"] = name, str(args.run)
    if args.json:
        print(json.dumps(result))
        return 0
    console.print(
        f"{args.run} on {name} test ({result['n']:,} images): top-1 {result['top1']:.2%}, "
        f"top-5 {result['top5']:.2%}, loss {result['loss']:.4f}"
    )
    table = Table(title="per-class accuracy and confusion matrix (rows: true, columns: predicted)")
    table.add_column("class")
    table.add_column("acc", justify="right")
    for j in range(len(run.class_names)):
        table.add_column(str(j), justify="right")
    for i, cls in enumerate(run.class_names):
        table.add_row(
            f"{i} {cls}", f"{result['per_class'][i]:.1%}", *(str(v) for v in result["confusion"][i])
        )
    console.print(table)
    return 0


def eval_published(args: argparse.Namespace) -> int:
    """`eval MODEL --weights SPEC --dataset imagefolder:PATH`: published weights on a folder."""
    from visionzoo.pretrained import evaluate_folder

    dataset = args.dataset or ""
    if not dataset.startswith("imagefolder:") or dataset == "imagefolder:":
        raise UserError(
            "eval --weights scores an ImageNet-format folder: pass --dataset imagefolder:PATH"
        )
    result = evaluate_folder(
        str(args.run), args.weights, dataset.partition(":")[2], min(args.batch_size, 64)
    )
    result["dataset"] = dataset
    if args.json:
        print(json.dumps(result))
        return 0

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    print(
        f"{result['model']} with {result['weights']} on {dataset} "
        f"({result['n']:,} images in {result['classes']} {result['layout']} folders)"
    )
    print(f"{'':10}  {'top-1':>7}  {'top-5':>7}")
    print(f"{'measured':10}  {pct(result['top1']):>7}  {pct(result['top5']):>7}")
    if result["published_top1"] is not None:
        print(
            f"{'published':10}  {pct(result['published_top1']):>7}  "
            f"{pct(result['published_top5']):>7}  (ImageNet-1k val, 50,000 images)"
        )
    else:
        print(f"{'published':10}  {'-':>7}  {'-':>7}  (no figure known for these weights)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from visionzoo.predict import load_input, predict
    from visionzoo.runs import load_run

    if args.topk < 1:
        raise UserError("--topk must be >= 1")
    if args.weights:  # a registered model with published weights, not a run folder
        from visionzoo.pretrained import classify_images

        results = classify_images(str(args.run), args.weights, args.images, args.topk)
    else:
        run = load_run(args.run)
        batch = torch.cat([load_input(p, run.config) for p in args.images])
        results = predict(run, batch, args.topk)
    if args.json:
        print(
            json.dumps(
                [
                    {"image": str(p), "top": [{"class": c, "prob": v} for c, v in r]}
                    for p, r in zip(args.images, results)
                ]
            )
        )
        return 0
    for path, top in zip(args.images, results):
        console.print(f"[bold]{path}[/bold]")
        for cls, prob in top:
            console.print(f"  {prob:7.2%}  {cls}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
