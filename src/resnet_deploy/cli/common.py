"""Options and error handling shared by both CLIs."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from resnet_deploy.console import console, stdout_console
from resnet_deploy.errors import DeployError, UsageError, environment_error

if TYPE_CHECKING:
    from resnet_deploy.pipeline import ModelOptions, Pipeline

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn DeployError into one red line and its exit code; keep tracebacks for real bugs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (MemoryError, RuntimeError, PermissionError) as exc:
            error = environment_error(exc)
            if error is None:
                raise
            console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            console.print("[red]interrupted[/] (nothing half-written was kept)")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def typed_options(ctx: typer.Context, names: Iterable[str]) -> list[str]:
    """Which of `names` the user typed (not defaults), spelled as typed: '--calib', 'MODEL'.

    Needed where an option has a default and so its value cannot tell "given" from "not given".
    """
    wanted = set(names)
    typed = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name in wanted else None
        if source is not None and source.name == "COMMANDLINE":  # by name: typer >= 0.22 vendors click
            typed.append(param.opts[0] if param.param_type_name == "option" else param.name.upper())
    return typed


#: the metavar of an on/off flag: nothing (typer would print "<bool>" after it, as if it took a value)
FLAG = ""

Model = Annotated[
    str,
    typer.Argument(
        help="resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, wide_resnet50_2, wide_resnet101_2"
    ),
]
Weights = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="'none' (seeded random init), a torchvision weights name (DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2) "
        "or a checkpoint file. Default: what this workspace used last, else 'none'.",
    ),
]
NumClasses = Annotated[int | None, typer.Option(help="Classes in fc; default: what the checkpoint's fc.weight says.")]
Trust = Annotated[
    bool,
    typer.Option(
        "--trust-checkpoint",
        help="Allow a checkpoint holding pickled objects (a whole nn.Module). Only for files you trust.",
        metavar=FLAG,
    ),
]
Workspace = Annotated[Path, typer.Option("--workspace", help="Where artifacts/<model>/ lives.")]
Dynamic = Annotated[
    bool | None,
    typer.Option(
        "--dynamic/--static",
        help="Dynamic batch, height and width, or fixed at the opt shape. Default: the range this workspace "
        "recorded last, else static.",
        show_default=False,
        metavar=FLAG,
    ),
]
MinShape = Annotated[
    str | None, typer.Option("--min-shape", help="Smallest input NxCxHxW of the dynamic range, e.g. 1x3x64x64.")
]
OptShape = Annotated[str | None, typer.Option("--opt-shape", help="Typical input NxCxHxW, e.g. 1x3x224x224.")]
MaxShape = Annotated[
    str | None, typer.Option("--max-shape", help="Largest input NxCxHxW of the dynamic range, e.g. 8x3x448x448.")
]
Resize = Annotated[
    int | None, typer.Option(help="Resize the shorter side to this (default: the weights' transform, 256).")
]
Crop = Annotated[int | None, typer.Option(help="Center crop size (default: the weights' transform, 224).")]
Mean = Annotated[str | None, typer.Option(help="Normalization mean, 3 numbers: 0.485,0.456,0.406")]
Std = Annotated[str | None, typer.Option(help="Normalization std, 3 numbers: 0.229,0.224,0.225")]


def main_wrapper(app: typer.Typer) -> Callable[[], None]:
    def main() -> None:
        app(prog_name=Path(sys.argv[0]).name)

    return main


def model_options(
    model: str,
    weights: str | None,
    num_classes: int | None,
    trust: bool,
    resize: int | None = None,
    crop: int | None = None,
    mean: str | None = None,
    std: str | None = None,
) -> ModelOptions:
    from resnet_deploy.pipeline import ModelOptions
    from resnet_deploy.preprocess import parse_floats3

    parsed_std = parse_floats3(std, None, "--std") if std is not None else None  # type: ignore[arg-type]
    if parsed_std is not None and min(parsed_std) <= 0:  # said now, not after the model loads
        raise UsageError(f"invalid --std '{std}': every number must be positive", "e.g. --std 0.229,0.224,0.225")
    return ModelOptions(
        architecture=model,
        weights=weights,
        num_classes=num_classes,
        trust_checkpoint=trust,
        resize=resize,
        crop=crop,
        mean=parse_floats3(mean, None, "--mean") if mean is not None else None,  # type: ignore[arg-type]
        std=parsed_std,
    )


def shapes_given(*shapes: str | None) -> bool:
    """Whether any shape option was typed. `--opt-shape "$UNSET"` was typed: an empty string is a bad
    shape to report, not "not given"."""
    return any(s is not None for s in shapes)


def open_pipeline(
    model: str,
    weights: str | None,
    num_classes: int | None,
    trust: bool,
    workspace: Path,
    *,
    dynamic: bool | None = None,
    min_shape: str | None = None,
    opt_shape: str | None = None,
    max_shape: str | None = None,
    resize: int | None = None,
    crop: int | None = None,
    mean: str | None = None,
    std: str | None = None,
    static_by_default: bool = True,
    shapes_if_new: bool = False,
) -> Pipeline:
    """Load the model into its workspace. `dynamic=None` with no shapes: the workspace's recorded range,
    else static (`static_by_default`) or the pipeline's dynamic default. `shapes_if_new`: the shapes given
    set the range only of a workspace that recorded none (`trt`: its profile must fit the recorded ONNX)."""
    from resnet_deploy.models import resolve_architecture
    from resnet_deploy.pipeline import Pipeline, ShapeRequest
    from resnet_deploy.shapes import parse_shape

    resolve_architecture(model)  # a misspelt name is reported before anything slow happens
    for shape in (min_shape, opt_shape, max_shape):  # and so is a malformed shape
        if shape is not None:
            parse_shape(shape)
    options = model_options(model, weights, num_classes, trust, resize, crop, mean, std)
    shapes = None
    if dynamic is not None or shapes_given(min_shape, opt_shape, max_shape):
        shapes = ShapeRequest(bool(dynamic), min_shape, opt_shape, max_shape)
    if shapes_if_new:
        return Pipeline(options, workspace, dynamic_default=not static_by_default, new_workspace_shapes=shapes)
    return Pipeline(options, workspace, shapes=shapes, dynamic_default=not static_by_default)


def print_written(pipeline: Pipeline, keys: list[str]) -> None:
    """The closing summary, on stdout: what was written where."""
    from rich.table import Table

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
    import shlex

    program = Path(sys.argv[0])
    if program.parent.name == "cli" and program.parent.parent.name == "resnet_deploy":  # python -m ...cli.bench
        program = Path(_SCRIPTS.get(program.stem, program.name))
    return shlex.join([program.name, *sys.argv[1:]])


#: the console script each CLI module is installed as (pyproject.toml), for command lines run with `python -m`
_SCRIPTS = {"bench": "resnet-bench", "export": "resnet-export"}
