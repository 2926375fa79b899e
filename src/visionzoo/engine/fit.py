"""`fit`: set a run up from a TrainConfig, train it, evaluate it, save it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from visionzoo import __version__
from visionzoo.data import DeviceLoader, load_dataset
from visionzoo.data.folder_loader import FolderLoader, folder_spec
from visionzoo.data.folders import FolderOptions
from visionzoo.data.loader import Preprocess
from visionzoo.engine import distributed as dist
from visionzoo.engine.config import TrainConfig, option_flag, show_value
from visionzoo.engine.optim import build_optimizer, build_scheduler
from visionzoo.engine.progress import TrainProgress
from visionzoo.engine.train import (
    Stepper,
    TrainingDiverged,
    TrainState,
    augment_config,
    balanced_subset,
    build_model_for,
    channels_last,
    evaluate,
    load_checkpoint,
    make_autocast,
    pick_device,
    resolve_precision,
    save_checkpoint,
    train_one_epoch,
)
from visionzoo.engine.transfer import count_trainable, initialise, set_body_trainable
from visionzoo.errors import UserError
from visionzoo.runs import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    WEIGHTS,
    RunWriter,
    read_config,
    save_weights,
)
from visionzoo.utils import append_jsonl, atomic_write_json, atomic_write_text, git_state


def run_config(cfg: TrainConfig, spec, pre: Preprocess, model, status: str) -> dict[str, Any]:
    git = git_state()
    return {
        "model": cfg.model,
        "model_kwargs": dict(getattr(model, "model_kwargs", None) or cfg.model_kwargs),
        "dataset": cfg.dataset,
        "class_names": list(spec.classes),
        "num_classes": spec.num_classes,
        "preprocess": pre.to_dict(),
        "recipe": cfg.to_dict(),
        "seed": cfg.seed,
        "visionzoo_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": git.commit,
        "git_dirty": git.dirty,
        "world_size": dist.world_size(),
        "status": status,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


ModelSource = nn.Module | Callable[..., nn.Module] | None


def fit(
    cfg: TrainConfig,
    out: str | Path,
    overwrite: bool = False,
    resume: bool = False,
    console: Console | None = None,
    quiet: bool = False,
    model: ModelSource = None,
    stop: Callable[[dict[str, Any]], bool] | None = None,
    with_correct: bool = False,
) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.dataset` into the run folder `out`; returns the final metrics.

    `model` replaces the registry's `cfg.model`: a module, or a builder called like a registered
    one (num_classes, in_channels, image_size, **cfg.model_kwargs); `cfg.model` still names the
    run. `stop(record)`, called after each epoch, ends the run early when it returns True.
    `with_correct` adds "test_correct" to the result: whether the final weights classify each
    test image right, in the test set's order (not written to the run folder).
    A new run is built beside `out` and replaces it at its first checkpoint (see RunWriter):
    a failure before then leaves `out` as it was.
    """
    cfg.validate()
    device = dist.setup(pick_device(cfg.device))
    autocast = make_autocast(resolve_precision(cfg.precision, device), device)
    with RunWriter(Path(out), overwrite, resume, enabled=dist.is_main()) as run:
        try:
            session = setup(cfg, run, device, autocast, console, quiet, model)
            with session.progress:
                while session.state.epoch < cfg.epochs:
                    record = train_epoch(session)
                    if stop is not None and stop(record):
                        break
            return finish(session, with_correct)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(run.interrupted()) from None
        except TrainingDiverged as err:
            message = str(err).replace("the last good checkpoint is kept", run.survivor())
            run.record_stop("diverged", message)
            raise TrainingDiverged(message) from None


@dataclass
class Session:
    """A run being trained: what `setup` builds, `train_epoch` advances and `finish` saves."""

    cfg: TrainConfig
    run: RunWriter
    device: torch.device
    autocast: Callable
    progress: TrainProgress
    model: nn.Module
    spec: Any
    pre: Preprocess
    train_loader: Any
    test_loader: Any
    state: TrainState
    stepper: Stepper
    head_keys: list[str]
    running: dict[str, Any]
    wall_start: float
    train_seconds: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)
    last_eval: tuple[int, dict[str, Any]] | None = None  # (step, evaluation of the final weights)
    writer: Any = None
    tensorboard_opened: bool = False


def setup(cfg, run, device, autocast, console, quiet, source: ModelSource = None) -> Session:
    """Data, model, optimizer and training state (from the checkpoint under --resume)."""
    wall_start = time.perf_counter()
    _set_backends(cfg, device)
    dist.barrier()
    progress = TrainProgress(console, enabled=run.enabled and not quiet, every=cfg.log_every)
    torch.manual_seed(cfg.seed)
    if cfg.batch_size % dist.world_size():
        raise UserError(
            f"--batch-size {cfg.batch_size} is not divisible by {dist.world_size()} processes"
        )
    model, pre, spec, train_loader, test_loader = _data_and_model(cfg, device, source)
    head_keys: list[str] = []
    if cfg.init and not run.resume:
        head_keys = initialise(model, cfg.init, list(spec.classes))
        progress.log(f"initialised from {cfg.init}; new head: {len(head_keys)} tensors")
    model.to(device)
    if channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    state = _train_state(cfg, model, device, len(train_loader))
    if run.resume:
        _resume_into(state, run, cfg, progress)
    state.model = dist.wrap(model, device)
    stepper = Stepper(state, cfg, autocast, progress.log, channels_last(cfg, device))
    session = Session(
        cfg, run, device, autocast, progress, model, spec, pre, train_loader, test_loader,
        state, stepper, head_keys, run_config(cfg, spec, pre, model, "running"), wall_start,
        train_seconds=sum(r.get("time_s", 0.0) for r in state.history),
        last=state.history[-1] if state.history else {},
    )  # fmt: skip
    _log_start(session)
    return session


def _set_backends(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if device.type == "cuda":  # TF32 for what autocast leaves in fp32, unless fp32 was asked
        tf32 = cfg.precision != "fp32"
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        with contextlib.suppress(RuntimeError):  # raised where a library set the new TF32 API
            torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not cfg.deterministic


def _data_and_model(cfg: TrainConfig, device, source: ModelSource):
    """The model, its preprocessing, the dataset spec and both loaders."""
    world, folder = dist.world_size(), FolderOptions.from_config(cfg)
    shard: dict[str, Any] = dict(rank=dist.rank(), world_size=world)
    drop_last = cfg.compile  # static shapes: one compiled graph, no recompiling for the tail
    if cfg.loader == "workers":
        spec, train_root, test_root = folder_spec(cfg.dataset.partition(":")[2], folder)
        model, pre = build_model_for(cfg, spec, source)
        common: dict[str, Any] = dict(
            num_workers=cfg.workers, seed=cfg.seed, device=device, strict=cfg.strict, **shard
        )
        train_loader: FolderLoader | DeviceLoader = FolderLoader(
            train_root, pre, cfg.batch_size // world, True, augment_config(cfg, spec), **common
        )
        test_loader: FolderLoader | DeviceLoader = FolderLoader(
            test_root, pre, cfg.eval_batch_size, False, **common
        )
        return model, pre, spec, train_loader, test_loader
    train_data = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.download, folder)
    test_data = load_dataset(cfg.dataset, "test", cfg.data_dir, cfg.download, folder)
    if cfg.train_subset:
        train_data = balanced_subset(train_data, cfg.train_subset, cfg.seed)
    if cfg.test_subset:  # one fixed subset, so runs of any seed are scored on the same images
        test_data = balanced_subset(test_data, cfg.test_subset, 0)
    spec = train_data.spec
    model, pre = build_model_for(cfg, spec, source)
    train_loader = DeviceLoader(
        train_data, cfg.batch_size // world, pre, device, shuffle=True,
        augment=augment_config(cfg, spec), seed=cfg.seed, drop_last=drop_last, **shard,
    )  # fmt: skip
    test_loader = DeviceLoader(
        test_data, cfg.eval_batch_size, pre, device, shard_pad=False, **shard
    )
    return model, pre, spec, train_loader, test_loader


def _train_state(cfg: TrainConfig, model: nn.Module, device, steps_per_epoch: int) -> TrainState:
    optimizer = build_optimizer(model, cfg, device)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
        )
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    return TrainState(model, optimizer, scheduler, ema, scaler)


def _resume_into(state: TrainState, run: RunWriter, cfg: TrainConfig, progress) -> None:
    _resume(state, run.out / CHECKPOINT, cfg)
    if run.enabled:  # metrics.jsonl holds exactly the epochs the checkpoint has seen
        with run.saving():
            atomic_write_text(run.out / METRICS, "".join(_json_line(r) for r in state.history))
    progress.log(
        f"resuming {run.out} at epoch {state.epoch + 1}, batch {state.batch} (step {state.step})"
    )


def _log_start(s: Session) -> None:
    cfg, pre, world = s.cfg, s.pre, dist.world_size()
    params = sum(p.numel() for p in s.model.parameters())
    precision = resolve_precision(cfg.precision, s.device)
    s.progress.log(
        f"training {cfg.model} ({params:,} parameters) on {s.spec.name}: "
        f"{_size(s.train_loader):,} train / {_size(s.test_loader):,} test images, input "
        f"{pre.in_channels}x{pre.image_size}x{pre.image_size}, {cfg.epochs} epochs, batch "
        f"{cfg.batch_size}, device {s.device}, {precision}"
        + (", channels_last" if channels_last(cfg, s.device) else "")
        + (", compiled" if cfg.compile else "")
        + (f", {world} processes" if world > 1 else "")
    )


def _size(loader) -> int:
    return len(loader.dataset) if hasattr(loader, "dataset") else len(loader.labels)


def train_epoch(s: Session) -> dict[str, Any]:
    """Train, evaluate and save one epoch; returns its metrics.jsonl record."""
    cfg, state = s.cfg, s.state
    if cfg.init:
        set_body_trainable(s.model, not (state.epoch < cfg.freeze_epochs), s.head_keys)
    s.progress.start_epoch(state.epoch, cfg.epochs, len(s.train_loader), state.batch)
    seen0, t0 = state.sums["seen"], time.perf_counter()

    def on_step(st: TrainState, sums: dict[str, float]) -> None:
        s.progress.step(st.batch, sums["seen"] - seen0, sums["loss"], sums["correct"], sums["seen"])

    train_metrics = train_one_epoch(
        state, s.train_loader, cfg, on_step=on_step if s.progress.live else None,
        save_checkpoint=lambda st: _save_state(s, st), stepper=s.stepper,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    s.train_seconds += elapsed
    record = _epoch_record(s, train_metrics, (state.sums["seen"] - seen0), elapsed)
    state.history.append(record)
    state.epoch, state.batch = state.epoch + 1, 0
    state.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    _save_epoch(s, record)
    s.last = record
    s.progress.log(_epoch_line(record, cfg.epochs, elapsed))
    return record


def _epoch_record(s: Session, train_metrics: dict, seen: float, elapsed: float) -> dict:
    """The epoch's metrics.jsonl record: training figures, and the test set's on the epochs
    --eval-every names and the last."""
    epoch = s.state.epoch + 1
    record = {"epoch": epoch, "step": s.state.step, **train_metrics}
    if epoch % s.cfg.eval_every == 0 or epoch >= s.cfg.epochs:
        record.update(_test_metrics(s))
    record |= {
        "lr": float(s.state.optimizer.param_groups[0]["lr"]),
        "images_per_s": seen * dist.world_size() / max(elapsed, 1e-9),
        "time_s": elapsed,
        "train_seconds": s.train_seconds,
        "wall_s": time.perf_counter() - s.wall_start,  # since fit() began, this process
        "trainable_params": count_trainable(s.model),
    }
    return record


def _test_metrics(s: Session) -> dict[str, float]:
    cl = channels_last(s.cfg, s.device)
    test = evaluate(s.model, s.test_loader, s.spec.num_classes, s.autocast, cl)
    out = {"test_loss": test["loss"], "test_acc": test["top1"], "test_top5": test["top5"]}
    if s.state.ema is not None:
        ema_test = evaluate(s.state.ema.module, s.test_loader, s.spec.num_classes, s.autocast, cl)
        out.update(ema_test_loss=ema_test["loss"], ema_test_acc=ema_test["top1"])
    # the weights `finish` evaluates, unless training goes on: it reuses this evaluation then
    s.last_eval = (s.state.step, test if s.state.ema is None else ema_test)
    return out


def _save_state(s: Session, state: TrainState) -> None:
    ema = state.ema

    def save(folder: Path) -> None:
        if not (folder / WEIGHTS).exists():  # a run with a checkpoint has weights too
            save_weights(folder / WEIGHTS, ema.module if ema is not None else s.model)
        save_checkpoint(folder / CHECKPOINT, state, s.cfg)

    s.run.checkpoint(save, s.running)


def _save_epoch(s: Session, record: dict[str, Any]) -> None:
    ema, main = s.state.ema, s.run.enabled
    if main:
        with s.run.saving():
            append_jsonl(s.run.path / METRICS, record)
            save_weights(s.run.path / WEIGHTS, ema.module if ema is not None else s.model)
    _save_state(s, s.state)
    if not main:
        return
    if not s.tensorboard_opened:
        s.writer, s.tensorboard_opened = _tensorboard(s.cfg, s.run.path), True
    if s.writer is not None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                s.writer.add_scalar(key, value, record["epoch"])
        s.writer.flush()


def _epoch_line(record: dict[str, Any], epochs: int, elapsed: float) -> str:
    return (
        f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_acc']:.2%}"
        + (
            f"  test loss {record['test_loss']:.4f} acc {record['test_acc']:.2%}"
            if "test_acc" in record
            else ""
        )
        + (f"  ema acc {record['ema_test_acc']:.2%}" if "ema_test_acc" in record else "")
        + f"  {record['images_per_s']:,.0f} img/s  {elapsed:.1f}s"
    )


def finish(s: Session, with_correct: bool = False) -> dict[str, Any]:
    """Evaluate the final weights (the last epoch's evaluation when no step came after it),
    write them and the finished config; returns final metrics."""
    if s.writer is not None:
        s.writer.close()
    ema = s.state.ema
    final_model = ema.module if ema is not None else s.model
    if s.last_eval is not None and s.last_eval[0] == s.state.step:
        final = s.last_eval[1]
    else:
        cl = channels_last(s.cfg, s.device)
        final = evaluate(final_model, s.test_loader, s.spec.num_classes, s.autocast, cl)
    final_metrics = {
        "test_acc": final["top1"],
        "test_top5": final["top5"],
        "test_loss": final["loss"],
        "train_acc": s.last.get("train_acc"),
        "train_loss": s.last.get("train_loss"),
        "epochs": s.state.epoch,
        "steps": s.state.step,
        "train_seconds": s.train_seconds,
        "weights": "ema" if ema is not None else "final",
        "compiled": s.stepper.compiled is not None,  # False after a fallback to eager
    }
    if s.run.enabled:
        with s.run.saving():
            save_weights(s.run.path / WEIGHTS, final_model)
            if ema is not None:
                save_weights(s.run.path / "model_raw.safetensors", s.model)
            config = run_config(s.cfg, s.spec, s.pre, s.model, "done")
            config["final_metrics"] = final_metrics
            config["per_class_accuracy"] = dict(zip(s.spec.classes, final["per_class"]))
            atomic_write_json(s.run.path / CONFIG, config)
    dist.barrier()
    dist.teardown()
    if with_correct:
        final_metrics["test_correct"] = final["correct"].tolist()
    return final_metrics


def _tensorboard(cfg: TrainConfig, out: Path):
    """A SummaryWriter in RUN/tb when TensorBoard is installed (or asked for)."""
    if cfg.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if cfg.tensorboard:
            raise UserError("--tensorboard needs: pip install 'visionzoo[tensorboard]'") from None
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def _json_line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record) + "\n"


# What --resume may change: the run's length, and where and how fast it runs, which leave
# what it computes as it was.
RESUME_MAY_CHANGE = (
    "epochs", "device", "threads", "workers", "data_dir", "download", "eval_batch_size",
    "log_every", "checkpoint_every", "tensorboard", "compile_mode", "eval_every",
)  # fmt: skip


def resume_config(run_dir: Path, given: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig saved in a run folder, for --resume, with the `given` options that
    RESUME_MAY_CHANGE; any other option that differs from the run's is refused."""
    config = read_config(run_dir)
    if "recipe" not in config:
        raise UserError(f"{run_dir / CONFIG} has no recipe: it was not written by visionzoo train")
    if not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"{run_dir} holds no {CHECKPOINT}: nothing to resume")
    try:
        cfg = TrainConfig.from_dict(config["recipe"])
    except UserError as err:
        raise UserError(f"{run_dir / CONFIG}: recipe: {err}") from None
    recipe = cfg.to_dict()
    changed = {k: v for k, v in (given or {}).items() if v != recipe[k]}
    refused = [_differs(k, v, recipe[k]) for k, v in changed.items() if k not in RESUME_MAY_CHANGE]
    if refused:
        raise UserError(
            f"--resume keeps the run's recipe; these flags differ: {', '.join(refused)}"
        )
    return dataclasses.replace(cfg, **changed)


def _differs(name: str, given: Any, run_value: Any) -> str:
    """`--lr 0.01 (run: 0.1)`, `--no-augment (run: --augment)`."""
    was = option_flag(name, run_value) if isinstance(run_value, bool) else show_value(run_value)
    return f"{option_flag(name, given)} (run: {was})"


def _resume(state: TrainState, path: Path, cfg: TrainConfig) -> None:
    """Load the checkpoint into `state`; the schedule then follows `cfg.epochs`, which --resume
    may have changed: the rest of the run takes the learning rate the new schedule gives at
    this step (a finished cosine run extended from 10 to 20 epochs continues at half the peak)."""
    try:
        load_checkpoint(path, state, cfg)
    except KeyError as err:
        raise UserError(f"{path} has no {err} entry: not a complete visionzoo checkpoint") from None
    if cfg.epochs < state.epoch + (state.batch > 0):
        raise UserError(
            f"--epochs {cfg.epochs} is fewer than the run has trained ({state.epoch} epochs"
            + (f" and {state.batch} batches)" if state.batch else ")")
        )
    scheduler = state.scheduler  # a LambdaLR whose lambdas were built for cfg.epochs
    for group, base, factor in zip(
        state.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas
    ):
        lr = float(base * factor(scheduler.last_epoch))
        if isinstance(group["lr"], torch.Tensor):  # --compile: beside the weights (loaded on CPU)
            group["lr"] = torch.tensor(lr, device=group["params"][0].device)
        else:
            group["lr"] = lr
