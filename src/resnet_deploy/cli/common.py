"""What both CLIs share: option groups declared once, the one-line error handling, opening a pipeline.

An option group is a dataclass whose fields are typer parameters (`Annotated[..., typer.Option(...)]`). A command
takes a group as one parameter; `@option_groups` shows typer its fields as the command's options and hands
the command the filled-in dataclass. So `--weights`, `--crop` or `--min-shape` are spelled, documented and
defaulted in one place (defaults from the modules that own them), and a command function stays short.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import shlex
import signal
import sys
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from resnet_deploy.console import console, stdout_console
from resnet_deploy.errors import DeployError, Terminated, UsageError, environment_error, interrupt
from resnet_deploy.int8.dataset import CalibrationRequest
from resnet_deploy.models import ARCHITECTURES, resolve_architecture
from resnet_deploy.pipeline import DEFAULT_MODEL, DEFAULT_WORKSPACE, ModelOptions, Pipeline, ShapeRequest
from resnet_deploy.preprocess import INPUT_SUFFIXES_TEXT, parse_floats3
from resnet_deploy.shapes import parse_shape

F = TypeVar("F", bound=Callable[..., Any])

#: the metavar of an on/off flag: nothing (typer would print "<bool>" after it, as if it took a value)
FLAG = ""


class OptionGroup:
    """Base of the option groups: a dataclass of typer parameters that `option_groups` expands."""


def option_groups(func: F) -> F:
    """Show typer each option-group parameter of `func` as its fields, and call `func` with the groups built.

    typer reads a command's options from its signature (`inspect.signature`, which honours `__signature__`)
    and its type hints (`__annotations__`), so both are rewritten; the fields keep their `Annotated` typer
    metadata and defaults. A command declares its parameters keyword-only (`def cmd(*, model: ModelArgs, ...)`),
    so a group (no default) may follow an option with one."""
    hints = typing.get_type_hints(func, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for name, param in inspect.signature(func).parameters.items():
        kind = hints.get(name, param.annotation)
        if isinstance(kind, type) and issubclass(kind, OptionGroup):
            fields = typing.get_type_hints(kind, include_extras=True)
            names = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
            params += [_parameter(f.name, fields[f.name], _default(f)) for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
            groups[name] = (kind, names)
        else:
            params.append(_parameter(name, kind, param.default))

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name, (kind, names) in groups.items():
            kwargs[name] = kind(**{n: kwargs.pop(n) for n in names})
        return func(*args, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


def _default(f: dataclasses.Field) -> Any:
    """A field's default; none (a required option, e.g. --url) is a parameter without one, which typer requires."""
    return inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """Keyword-only, as typer passes every option: so groups (no default) and options (defaults) mix freely."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


@dataclass
class ModelArgs(OptionGroup):
    """Which model, from which weights, in which workspace."""

    model: Annotated[str, typer.Argument(help=", ".join(ARCHITECTURES))] = DEFAULT_MODEL
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="'none' (seeded random init), a torchvision weights name (DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2) "
            "or a checkpoint file. Default: what this workspace used last, else 'none'.",
        ),
    ] = None
    num_classes: Annotated[
        int | None, typer.Option(help="Classes in fc; default: what the checkpoint's fc.weight says.")
    ] = None
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Allow a checkpoint holding pickled objects (a whole nn.Module). Only for files you trust.",
            metavar=FLAG,
        ),
    ] = False
    workspace: Annotated[Path, typer.Option("--workspace", help="Where artifacts/<model>/ lives.")] = DEFAULT_WORKSPACE


@dataclass
class PreprocessArgs(OptionGroup):
    """How images become the model's input; default: what the workspace recorded, else the weights' own."""

    resize: Annotated[
        int | None, typer.Option(help="Resize the shorter side to this (default: the weights' transform, 256).")
    ] = None
    crop: Annotated[int | None, typer.Option(help="Center crop size (default: the weights' transform, 224).")] = None
    mean: Annotated[str | None, typer.Option(help="Normalization mean, 3 numbers: 0.485,0.456,0.406")] = None
    std: Annotated[str | None, typer.Option(help="Normalization std, 3 numbers: 0.229,0.224,0.225")] = None


@dataclass
class RangeArgs(OptionGroup):
    """The dynamic range's shapes, NxCxHxW."""

    min_shape: Annotated[
        str | None, typer.Option("--min-shape", help="Smallest input NxCxHxW of the dynamic range, e.g. 1x3x64x64.")
    ] = None
    opt_shape: Annotated[str | None, typer.Option("--opt-shape", help="Typical input NxCxHxW, e.g. 1x3x224x224.")] = (
        None
    )
    max_shape: Annotated[
        str | None, typer.Option("--max-shape", help="Largest input NxCxHxW of the dynamic range, e.g. 8x3x448x448.")
    ] = None

    @property
    def given(self) -> bool:
        """Whether any shape option was typed. `--opt-shape "$UNSET"` was typed: an empty string is a bad shape
        to report, not "not given"."""
        return any(s is not None for s in (self.min_shape, self.opt_shape, self.max_shape))


@dataclass
class ShapeArgs(RangeArgs):
    """The shapes an export accepts: dynamic within a range, or static."""

    dynamic: Annotated[
        bool | None,
        typer.Option(
            "--dynamic/--static",
            help="Dynamic batch, height and width, or fixed at the opt shape. Default: the range this workspace "
            "recorded last, else static.",
            show_default=False,
            metavar=FLAG,
        ),
    ] = None


@dataclass
class CalibArgs(OptionGroup):
    """INT8 calibration: the images and how they are used."""

    int8: Annotated[
        bool, typer.Option("--int8", help="INT8 with explicit Q/DQ, calibrated on --calib.", metavar=FLAG)
    ] = False
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help=f"Folder of calibration images (searched recursively; {INPUT_SUFFIXES_TEXT.replace('/', ' ')}; "
            ".npy/.npz hold preprocessed tensors). Use 500+ images from the deployment domain.",
        ),
    ] = None
    calib_method: Annotated[
        str | None,
        typer.Option(
            "--calib-method",
            help="entropy | minmax | percentile. Default percentile (99.999%): robust to outlier images, "
            "keeps the logit scale (see docs).",
            show_default=False,
        ),
    ] = None
    calib_size: Annotated[
        int | None,
        typer.Option("--calib-size", help="Use N images, spread evenly over the sorted files (default: all)."),
    ] = None

    def request(self, target: str | None = None) -> CalibrationRequest | None:
        """The calibration asked for, checked (once) and its folder scanned; None without --int8."""
        return CalibrationRequest.from_options(self.int8, self.calib, self.calib_size, self.calib_method, target)


def handle_errors(func: F) -> F:
    """Turn DeployError into one red line and its exit code; keep tracebacks for real bugs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (MemoryError, RuntimeError, OSError) as exc:
            error = environment_error(exc)
            if error is None:
                raise
            console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt as exc:
            console.print("[red]interrupted[/] (nothing half-written was kept)")
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None

    return wrapper  # type: ignore[return-value]


def typed_options(ctx: typer.Context, names: Iterable[str]) -> list[str]:
    """Which of `names` the user typed (not defaults), spelled as typed ('--calib', 'MODEL'), in the order of
    `names`. Needed where an option has a default and so its value cannot tell "given" from "not given"."""
    params = {param.name: param for param in ctx.command.params}
    typed = []
    for name in names:
        param = params.get(name)
        source = ctx.get_parameter_source(name) if param is not None else None
        if source is not None and source.name == "COMMANDLINE":  # by name: typer >= 0.22 vendors click
            typed.append(param.opts[0] if param.param_type_name == "option" else name.upper())
    return typed


def main_wrapper(app: typer.Typer) -> Callable[[], None]:
    def main() -> None:
        signal.signal(signal.SIGTERM, interrupt)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell ignores it (`cmd &`)
            signal.signal(signal.SIGINT, interrupt)
        app(prog_name=Path(sys.argv[0]).name)

    return main


def model_options(model: ModelArgs, pre: PreprocessArgs) -> ModelOptions:
    """The pipeline's model options from the flags, --mean/--std parsed (and a non-positive std refused) now,
    not after the model loads."""
    parsed_std = parse_floats3(pre.std, None, "--std") if pre.std is not None else None  # type: ignore[arg-type]
    if parsed_std is not None and min(parsed_std) <= 0:
        raise UsageError(f"invalid --std '{pre.std}': every number must be positive", "e.g. --std 0.229,0.224,0.225")
    return ModelOptions(
        architecture=model.model,
        weights=model.weights,
        num_classes=model.num_classes,
        trust_checkpoint=model.trust_checkpoint,
        resize=pre.resize,
        crop=pre.crop,
        mean=parse_floats3(pre.mean, None, "--mean") if pre.mean is not None else None,  # type: ignore[arg-type]
        std=parsed_std,
    )


def open_pipeline(
    model: ModelArgs,
    pre: PreprocessArgs,
    shapes: RangeArgs,
    *,
    dynamic: bool | None = None,
    static_by_default: bool = True,
    shapes_if_new: bool = False,
) -> Pipeline:
    """Load the model into its workspace. `dynamic=None` with no shapes: the workspace's recorded range,
    else static (`static_by_default`) or the pipeline's dynamic default. `shapes_if_new`: the shapes given
    set the range only of a workspace that recorded none (`trt`: its profile must fit the recorded ONNX)."""
    resolve_architecture(model.model)  # a misspelt name is reported before anything slow happens
    for shape in (shapes.min_shape, shapes.opt_shape, shapes.max_shape):  # and so is a malformed shape
        if shape is not None:
            parse_shape(shape)
    options = model_options(model, pre)
    request = None
    if dynamic is not None or shapes.given:
        request = ShapeRequest(bool(dynamic), shapes.min_shape, shapes.opt_shape, shapes.max_shape)
    if shapes_if_new:
        return Pipeline(options, model.workspace, dynamic_default=not static_by_default, new_workspace_shapes=request)
    return Pipeline(options, model.workspace, shapes=request, dynamic_default=not static_by_default)


def print_written(pipeline: Pipeline, keys: list[str]) -> None:
    """The closing summary, on stdout: what was written where."""
    table = Table(title=escape(str(pipeline.ws.dir)), title_justify="left", show_edge=False)
    for col in ("artifact", "file", "precision", "size", "worst rel L2"):
        table.add_column(col, overflow="fold" if col == "file" else "ellipsis")  # a name is wrapped, never cut
    for key in keys:
        entry = pipeline.ws.artifacts[key]
        path = pipeline.ws.dir / entry["path"]
        worst = entry.get("verification", {}).get("worst_rel_l2")
        table.add_row(
            key,
            escape(path.name),  # in the folder the title names: a full path would wrap mid-name in a CI log
            entry.get("precision", ""),
            f"{path.stat().st_size / 1e6:.1f} MB",
            f"{worst:.1e}" if isinstance(worst, float) else "-",
        )
    out = stdout_console()  # the command's result, as compare's table is; progress stays on stderr
    out.print(table)
    out.print(escape(f"manifest: {pipeline.ws.manifest_path}"))


def command_line() -> str:
    """The command as typed (program name without its path), for reports that must say how they were made."""
    program = Path(sys.argv[0])
    if program.parent.name == "cli" and program.parent.parent.name == "resnet_deploy":  # python -m ...cli.bench
        program = Path(_SCRIPTS.get(program.stem, program.name))
    return shlex.join([program.name, *sys.argv[1:]])


#: the console script each CLI module is installed as (pyproject.toml), for command lines run with `python -m`
_SCRIPTS = {"bench": "resnet-bench", "export": "resnet-export"}
