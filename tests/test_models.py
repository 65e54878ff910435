"""Loading models: every weights form the issue lists, and every bad input it lists."""

import argparse
import json

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from resnet_deploy.cli.export import app
from resnet_deploy.errors import UsageError
from resnet_deploy.models import ARCHITECTURES, load_model, make_pool_adaptive, resolve_architecture


def test_unknown_architecture_suggests_closest():
    with pytest.raises(UsageError, match="did you mean 'resnet50'"):
        resolve_architecture("resnt50")
    assert resolve_architecture("ResNet-18") == "resnet18"


def test_all_architectures_known_to_torchvision():
    available = set(torchvision.models.list_models())
    assert set(ARCHITECTURES) <= available


def test_random_init_is_seeded():
    a, _ = load_model("resnet18")
    b, _ = load_model("resnet18")
    assert torch.equal(a.fc.weight, b.fc.weight)


def _finetuned(tmp_path, wrap):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=2)
    path = tmp_path / "ft.pt"
    torch.save(wrap(model.state_dict()), path)
    return model.eval(), path


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model_state_dict": sd, "epoch": 3},
        lambda sd: {"state_dict": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"_orig_mod.module.{k}": v for k, v in sd.items()},  # torch.compile(DataParallel(model))
        lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},  # DataParallel(torch.compile(model))
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # torch.compile(model)
        lambda sd: {"model_state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
        lambda sd: {"module": sd, "optimizer": None, "global_steps": 10},  # DeepSpeed's model_states.pt
        lambda sd: {"model": {"module": sd}, "epoch": 1},  # a trainer's dict around a wrapper's state
    ],
    ids=[
        "plain",
        "model_state_dict",
        "state_dict",
        "dataparallel",
        "compiled-dataparallel",
        "dataparallel-compiled",
        "torch.compile",
        "nested-dataparallel-compiled",
        "deepspeed",
        "model-module",
    ],
)
def test_checkpoint_formats_and_num_classes_from_fc(tmp_path, wrap):
    original, path = _finetuned(tmp_path, wrap)
    model, source = load_model("resnet18", str(path))
    assert source.num_classes == 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def _state(seed):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=10).eval().state_dict()


def _same(model, state):
    reference = torchvision.models.resnet18(num_classes=10).eval()
    reference.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        return torch.equal(model(x), reference(x))


@pytest.mark.parametrize("attribute", ["model", "net"])
def test_lightning_checkpoint_uses_the_network_under_its_attribute(tmp_path, attribute, capsys):
    sd = _state(4)
    weights = {f"{attribute}.{k}": v for k, v in sd.items()}
    weights["criterion.weight"] = torch.ones(10)  # a LightningModule's loss with class weights
    path = tmp_path / "epoch=3-step=100.ckpt"
    torch.save({"state_dict": weights, "epoch": 3, "global_step": 100, "optimizer_states": [{}]}, path)
    model, source = load_model("resnet18", str(path))
    assert source.num_classes == 10 and _same(model, sd)
    said = capsys.readouterr().err
    assert f"under '{attribute}.'" in said and "ignored 1 other key: criterion.weight" in said


def test_two_networks_in_one_checkpoint_is_an_error(tmp_path):
    sd = _state(4)
    both = {**{f"student.{k}": v for k, v in sd.items()}, **{f"teacher.{k}": v for k, v in sd.items()}}
    torch.save({"state_dict": both}, tmp_path / "distill.ckpt")
    with pytest.raises(UsageError, match=r"holds 2 networks .*'student\.', 'teacher\.'"):
        load_model("resnet18", str(tmp_path / "distill.ckpt"))


def test_timm_checkpoint_says_which_weights_it_uses(tmp_path, capsys):
    sd, ema = _state(5), _state(6)
    torch.save({"state_dict": sd, "state_dict_ema": ema, "epoch": 5, "arch": "resnet18"}, tmp_path / "last.pth.tar")
    model, _ = load_model("resnet18", str(tmp_path / "last.pth.tar"))
    assert _same(model, sd)
    assert "also holds EMA weights in 'state_dict_ema', not used" in capsys.readouterr().err
    torch.save({"state_dict_ema": ema}, tmp_path / "ema_only.pth")
    model, _ = load_model("resnet18", str(tmp_path / "ema_only.pth"))
    assert _same(model, ema)
    assert "using the EMA weights in 'state_dict_ema'" in capsys.readouterr().err


def test_checkpoint_without_num_batches_tracked_loads(tmp_path):
    sd = _state(7)  # as saved before PyTorch 0.4.1, which had no num_batches_tracked buffers
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pth")
    model, _ = load_model("resnet18", str(tmp_path / "old.pth"))
    assert _same(model, sd)


def _write_safetensors(state, path, header_shapes=None):
    """The safetensors format by hand (8-byte header length, JSON header, raw tensors), as the safetensors
    package writes it, so that `header_shapes` can put other shapes in the header than the data has, as a
    faulty writer would."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for key, tensor in state.items():
        blob = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[key] = {
            "dtype": names[tensor.dtype],
            "shape": (header_shapes or {}).get(key, list(tensor.shape)),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_safetensors_checkpoint_loads_and_a_cut_off_one_is_called_truncated(tmp_path, dtype):
    sd = _state(8)
    stored = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    path = tmp_path / "model.safetensors"
    _write_safetensors(stored, path)
    model, source = load_model("resnet18", str(path))
    assert source.num_classes == 10 and source.weights_sha256
    expected = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    assert _same(model, expected)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UsageError, match=r"not a complete \.safetensors file .*truncated"):
        load_model("resnet18", str(path))


def test_a_file_the_safetensors_package_wrote_loads_bf16_included(tmp_path):
    from safetensors.torch import save_file

    stored = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in _state(8).items()}
    save_file(stored, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, _ = load_model("resnet18", str(tmp_path / "model.safetensors"))
    assert _same(model, {k: v.float() if v.is_floating_point() else v for k, v in stored.items()})


def test_safetensors_header_at_odds_with_its_offsets_is_not_called_truncated(tmp_path):
    path = tmp_path / "model.safetensors"
    _write_safetensors(_state(8), path, header_shapes={"fc.bias": [5]})  # 10 float32 = 40 bytes of data
    with pytest.raises(UsageError) as err:
        load_model("resnet18", str(path))
    said = str(err.value)
    assert "tensor fc.bias: header says shape [5] of dtype F32 = 20 bytes, but its data offsets" in said
    assert said.split("data offsets", 1)[1].split(")")[0].endswith("span 40 bytes")
    assert "truncated" not in said and "outside the file" not in said


def test_missing_weights_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_model("resnet18", str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("typo", ["IMAGENET1K_V3", "imagenet1k_v3", "IMAGENET1K-V1", "IMAGENET1K_V2"])
def test_unknown_torchvision_weights_name_lists_the_valid_ones(typo):
    with pytest.raises(UsageError) as err:
        load_model("resnet18", typo)  # resnet18 has only IMAGENET1K_V1
    assert err.value.message == f"unknown torchvision weights name '{typo}' for resnet18"
    assert "DEFAULT (= IMAGENET1K_V1), IMAGENET1K_V1;" in err.value.hint and "none" in err.value.hint
    assert "IMAGENET1K_V2" not in err.value.hint and "checkpoint file" in err.value.hint


def test_weights_names_are_per_architecture_and_files_still_win(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=r"'IMAGENET1K_V3' for resnet50 .*IMAGENET1K_V1, IMAGENET1K_V2;"):
        load_model("resnet50", "IMAGENET1K_V3")
    for path in ("best", "runs/IMAGENET1K_V3", "IMAGENET1K_V3.pt"):  # read as files: said missing as before
        with pytest.raises(UsageError, match=f"weights file {path} does not exist"):
            load_model("resnet18", path)
    monkeypatch.chdir(tmp_path)
    torch.save(_state(3), "IMAGENET1K_V3")  # a file of that name is a file
    model, source = load_model("resnet18", "IMAGENET1K_V3")
    assert source.num_classes == 10 and _same(model, _state(3))


def test_unreadable_weights_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UsageError, match="cannot read weights file"):
        load_model("resnet18", str(bad))


def test_checkpoint_for_other_architecture_names_keys(tmp_path):
    path = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(UsageError, match=r"does not fit resnet18: .*shape mismatches.*unexpected keys"):
        load_model("resnet18", str(path))


def test_num_classes_conflict(tmp_path):
    _, path = _finetuned(tmp_path, lambda sd: sd)
    with pytest.raises(UsageError, match="has 2 classes"):
        load_model("resnet18", str(path), num_classes=10)


def test_pickled_module_needs_trust(tmp_path):
    torch.manual_seed(2)
    whole = torchvision.models.resnet18(num_classes=3).eval()
    path = tmp_path / "whole.pt"
    torch.save(whole, path)
    with pytest.raises(UsageError, match=r"\(torchvision\.models\.resnet\.ResNet\).*--trust-checkpoint"):
        load_model("resnet18", str(path))
    # what training scripts add beside the weights (argparse args) is named, so the user knows what to drop
    torch.save({"state_dict": whole.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "args.pt")
    with pytest.raises(UsageError, match=r"\(argparse\.Namespace\)"):
        load_model("resnet18", str(tmp_path / "args.pt"))
    model, source = load_model("resnet18", str(path), trust_checkpoint=True)
    assert source.num_classes == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), whole(x))


def test_trust_without_a_checkpoint_file_says_it_has_no_effect(capsys):
    load_model("resnet18", "none", trust_checkpoint=True)
    assert "--trust-checkpoint has no effect: the weights are none" in capsys.readouterr().err
    load_model("resnet18", "none")
    assert "--trust-checkpoint" not in capsys.readouterr().err


def test_trusted_pickled_module_must_be_the_named_architecture_and_runs_in_float32(tmp_path):
    torch.manual_seed(9)
    whole = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(whole, tmp_path / "whole.pt")
    with pytest.raises(UsageError, match=r"does not fit resnet50.*it is a resnet18 checkpoint"):
        load_model("resnet50", str(tmp_path / "whole.pt"), trust_checkpoint=True)
    with pytest.raises(UsageError, match="--num-classes 5 but the pickled model's fc has 3 classes"):
        load_model("resnet18", str(tmp_path / "whole.pt"), num_classes=5, trust_checkpoint=True)
    torch.save(torch.nn.DataParallel(whole).half(), tmp_path / "half.pt")  # as saved from a mixed-precision run
    model, source = load_model("resnet18", str(tmp_path / "half.pt"), trust_checkpoint=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out.dtype == torch.float32 and source.num_classes == 3
    torch.testing.assert_close(out, whole.half().float()(x), rtol=0, atol=0)


class OldResNet(torchvision.models.ResNet):
    """ResNet as written before adaptive pooling: a fixed 7x7 average only fits 224x224."""

    def __init__(self):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10)
        self.avgpool = torch.nn.AvgPool2d(7, stride=1)


def test_old_style_resnet_is_made_adaptive():
    torch.manual_seed(3)
    old = OldResNet().eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        before = old(x)
        with pytest.raises(RuntimeError):
            old(torch.randn(1, 3, 320, 256))
    assert make_pool_adaptive(old) is True
    with torch.no_grad():
        torch.testing.assert_close(old(x), before, rtol=1e-5, atol=1e-5)
        assert old(torch.randn(1, 3, 320, 256)).shape == (1, 10)


def test_head_sized_for_one_resolution_is_refused():
    model = OldResNet()
    model.fc = torch.nn.Linear(512 * 2 * 2, 10)  # trained at 256x256 with a 7x7 pool -> 2x2 map
    with pytest.raises(UsageError, match="sized for one input resolution"):
        make_pool_adaptive(model)


def test_counts_of_one_are_singular(tmp_path):
    sd = _state(10)
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.ones(1)
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(sd, tmp_path / "odd.pt")
    with pytest.raises(UsageError) as err:
        load_model("resnet18", str(tmp_path / "odd.pt"))
    assert str(err.value.message).endswith(
        "1 shape mismatch (layer1.0.conv1.weight is [64, 64, 1, 1], resnet18 needs [64, 64, 3, 3]); "
        "1 missing key (fc.bias); 1 unexpected key (extra.weight)"
    )


def test_integer_weights_are_refused_but_integer_buffers_load(tmp_path):
    sd = _state(11)
    assert sd["bn1.num_batches_tracked"].dtype == torch.int64  # a real int buffer: loads (as every test here)
    torch.save({k: v.to(torch.int8) if v.is_floating_point() else v for k, v in sd.items()}, tmp_path / "int8.pt")
    with pytest.raises(UsageError) as err:
        load_model("resnet18", str(tmp_path / "int8.pt"))
    assert err.value.message.startswith(
        "checkpoint int8.pt holds 102 integer tensors where the model has float weights "
        "(first: conv1.weight is int8, bn1.weight is int8, bn1.bias is int8)"
    )
    assert "dequantize" in err.value.hint
    one = dict(sd, **{"fc.bias": sd["fc.bias"].to(torch.int32)})
    torch.save(one, tmp_path / "one.pt")
    with pytest.raises(UsageError, match=r"holds 1 integer tensor where .*\(fc\.bias is int32\)"):
        load_model("resnet18", str(tmp_path / "one.pt"))


@pytest.mark.filterwarnings("ignore:.*quantiz.*:UserWarning")
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")  # torch.load of a qtensor
def test_quantized_checkpoint_is_named_as_such(tmp_path):
    sd = _state(12)
    sd["conv1.weight"] = torch.quantize_per_tensor(sd["conv1.weight"], 0.01, 0, torch.qint8)
    torch.save(sd, tmp_path / "q.pt")
    with pytest.raises(
        UsageError, match=r"q\.pt is of a quantized model: 1 quantized tensor \(conv1\.weight \(qint8\)\)"
    ):
        load_model("resnet18", str(tmp_path / "q.pt"))


def test_nan_or_inf_weights_are_refused_naming_the_tensors(tmp_path):
    sd = _state(13)
    sd["fc.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(UsageError) as err:
        load_model("resnet18", str(tmp_path / "nan.pt"))
    assert err.value.message == "checkpoint nan.pt has non-finite weights: fc.weight holds 1 NaN"
    assert "training diverged" in err.value.hint
    sd = _state(13)
    sd["bn1.running_var"][:2] = float("inf")
    sd["fc.bias"][0], sd["fc.bias"][1] = float("nan"), -float("inf")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, tmp_path / "half.pt")
    with pytest.raises(
        UsageError, match=r": bn1\.running_var holds 2 Inf; fc\.bias holds 1 NaN and 1 Inf \(the checkpoint is broken"
    ):
        load_model("resnet18", str(tmp_path / "half.pt"))
    # from the CLI: exit 2 and one line before anything is exported, not a verification failure (exit 1)
    result = CliRunner().invoke(
        app, ["onnx", "resnet18", "--weights", str(tmp_path / "nan.pt"), "--workspace", str(tmp_path / "ws")]
    )
    out = " ".join((result.output + (result.stderr if result.stderr_bytes is not None else "")).split())
    assert result.exit_code == 2, out
    assert "non-finite weights: fc.weight holds 1 NaN" in out and "Traceback" not in out
    assert not list((tmp_path / "ws").rglob("*.onnx"))
