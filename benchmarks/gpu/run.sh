#!/usr/bin/env bash
# Issue 7 on a lent GPU machine (no network, torch preinstalled, ~64 MiB per transfer, /tmp kept only while
# the machine stays warm). Runs the given phases in order; see benchmarks/gpu/README.md for the call.
#
#   bash benchmarks/gpu/run.sh stage            copy the carried .gpu-parts/ortx-part* (pack_ort.py) to /tmp/ortw
#   bash benchmarks/gpu/run.sh install          join the parts, install onnxruntime-gpu into /tmp/site
#   bash benchmarks/gpu/run.sh env              GPU, driver, packages -> $OUT/env.txt
#   bash benchmarks/gpu/run.sh tests            the whole test suite, GPU tests included -> $OUT/tests.log
#   bash benchmarks/gpu/run.sh gpu-tests        only the GPU-marked tests -> $OUT/gpu-tests.log
#   bash benchmarks/gpu/run.sh other-tests      the rest of the suite -> $OUT/other-tests.log
#   bash benchmarks/gpu/run.sh build            export resnet50's default set for batch 1..256 into /tmp/ws-resnet50
#   bash benchmarks/gpu/run.sh conv-algos       ONNX Runtime CUDA FP32's drift at large batches: TF32 or cuDNN's algorithm?
#   bash benchmarks/gpu/run.sh aoti             AOTInductor packages of resnet50 (FP32, FP16 on CUDA) into /tmp/ws-resnet50
#   bash benchmarks/gpu/run.sh compare          resnet50 at batch 1,8,64,256 -> $OUT/compare-resnet50.{md,json,png}
#   bash benchmarks/gpu/run.sh gate             the trained resnet18 gated on the GPU -> $OUT/gate-resnet18.{md,json}
#
# Results are written under $OUT (the device tool brings them back) or ./gpu-out when $OUT is unset.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export RESNET_DEPLOY_TEST_CACHE=${RESNET_DEPLOY_TEST_CACHE:-/tmp/resnet-deploy-test-cache}
PY=${PYTHON:-python3}
ITERS=${ITERS:-50}
WARMUP=${WARMUP:-10}
DEVICE=${DEVICE:-cuda}          # DEVICE=cpu BATCHES=1,2 ITERS=2 WARMUP=1: a dry run of the phases anywhere
BATCHES=${BATCHES:-1,8,64,256}

# ONNX Runtime's CUDA provider (libonnxruntime_providers_cuda.so, no RPATH) needs libcublas, libcurand,
# libcudart and libcudnn when a session is made, and finds them only if already loaded or on the loader's
# path: `import torch` loads just the ones torch links (torch 2.15 no longer links libcurand). Put the
# nvidia-* wheels' folders torch loads from on that path, so the provider gets the same files.
nvlib=$("$PY" -c "import importlib.util as u, os; s = u.find_spec('nvidia'); print(':'.join(d for p in
(s.submodule_search_locations if s else []) for d in (os.path.join(p, 'cu13', 'lib'), os.path.join(p, 'cudnn', 'lib'))
if os.path.isdir(d)))" 2>/dev/null || true)
[ -n "$nvlib" ] && export LD_LIBRARY_PATH=$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# the CLI through the same interpreter as everything else, whatever is (or is not) on PATH there
resnet-bench() { "$PY" -m resnet_deploy.cli.bench "$@"; }

ensure_installed() {
  if "$PY" -c "import resnet_deploy" 2>/dev/null; then
    return
  fi
  # no network there: the image's setuptools builds the editable install, the image has every dependency
  if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null; then
    echo "pip could not install the package; running it from src/ instead" >&2
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
  fi
}

# One phase, in this shell (install's PYTHONPATH must reach the phases after it). Its status is its last
# command's; within it, steps that later ones need are chained with &&.
run_phase() {
  local phase=$1
  case "$phase" in
    stage)
      mkdir -p /tmp/ortw && cp .gpu-parts/ortx-part* /tmp/ortw/ && ls -la /tmp/ortw
      ;;
    install)
      # pack_ort.py's sm_90 package: xz checks its CRC, so a missing or damaged part fails here, loudly
      rm -rf /tmp/site && mkdir -p /tmp/site &&
        cat /tmp/ortw/ortx-part* | "$PY" -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('/tmp/site', filter='data')" ||
        { rm -rf /tmp/site; return 1; }
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
      "$PY" -c "import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())"
      ;;
    env)
      ensure_installed
      {
        if command -v nvidia-smi >/dev/null; then
          nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
          nvidia-smi
        else
          echo "no nvidia-smi on this machine"
        fi
        # the same facts every compare report records, plus the providers this onnxruntime offers
        "$PY" -c "import json, onnxruntime as o; from resnet_deploy.provenance import environment, tool_versions;
print(json.dumps({**environment('$DEVICE'),
'packages': tool_versions(), 'onnxruntime_providers': o.get_available_providers()}, indent=2))"
        # Listed is not started: the CUDA provider loads libcublas/libcurand/libcudnn when a session is made,
        # finding them only if `import torch` loaded them, and cuDNN is first called when a convolution runs.
        # Start one on a one-convolution graph the way the runtime does and run it against torch; if it cannot,
        # the error names the library (or the cuDNN version) ONNX Runtime could not use.
        "$PY" - <<'PY' || true
import os

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from resnet_deploy.runtimes.onnxruntime import open_session
libs = sorted({p.rsplit("/", 1)[-1] for p in open("/proc/self/maps").read().split()
               if any(k in p for k in ("libcudart", "libcublas", "libcurand", "libcufft", "libcudnn.so"))})
print("CUDA libraries loaded by import torch:", ", ".join(libs) or "none")
print("LD_LIBRARY_PATH:", os.environ.get("LD_LIBRARY_PATH", ""))
w = np.random.default_rng(0).standard_normal((8, 3, 3, 3), dtype=np.float32)
g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                      [numpy_helper.from_array(w, "w")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
m.ir_version = 10
try:
    s = open_session(m.SerializeToString(), "CUDAExecutionProvider", "cuda:0", None, "a one-convolution graph")
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16), dtype=np.float32)
    y = s.run(None, {"x": x})[0]
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    print("ONNX Runtime CUDA provider runs a convolution:", s.get_providers(), "max abs vs torch CPU",
          float(np.abs(y - ref).max()))
except Exception as exc:
    print("ONNX Runtime CUDA provider does NOT run a convolution:", exc)
PY
      } 2>&1 | tee "$OUT/env.txt"
      ;;
    tests)
      ensure_installed
      "$PY" -m pytest -q -rs --durations=15 2>&1 | tee "$OUT/tests.log"
      ;;
    gpu-tests)
      # the GPU-marked tests alone, first: they are what this machine is for, and a call has 10 minutes
      ensure_installed
      # bounded, so that a slow or hung test cannot take the gate's time (timeout's 124 fails the phase)
      timeout "${GPU_TESTS_TIMEOUT:-200}" "$PY" -m pytest -q -rs --durations=15 -m gpu 2>&1 | tee "$OUT/gpu-tests.log"
      ;;
    other-tests)
      ensure_installed
      "$PY" -m pytest -q -rs --durations=15 -m "not slow and not gpu" 2>&1 | tee "$OUT/other-tests.log"
      ;;
    build)
      # exports, verification and INT8 calibration on the CPU, apart from the timed run (a call has 10 min)
      ensure_installed
      rm -rf /tmp/ws-resnet50
      resnet-bench compare resnet50 --device "$DEVICE" --batch "1,${BATCHES##*,}" --size 224 --runtimes torch-eager \
        --iters 1 --warmup 1 --workspace /tmp/ws-resnet50
      ;;
    aoti)
      # after build (same workspace and range): compile time is printed and recorded; FP16 only on CUDA
      ensure_installed
      local range=(--dynamic --min-shape 1x3x224x224 --opt-shape 1x3x224x224 --max-shape "${BATCHES##*,}x3x224x224")
      "$PY" -m resnet_deploy.cli.export aoti resnet50 --device "$DEVICE" "${range[@]}" --workspace /tmp/ws-resnet50 &&
        if [ "$DEVICE" != cpu ]; then
          "$PY" -m resnet_deploy.cli.export aoti resnet50 --device "$DEVICE" --fp16 "${range[@]}" --workspace /tmp/ws-resnet50
        fi
      ;;
    compare)
      ensure_installed
      local graphs=()
      [ "$DEVICE" != cpu ] && graphs=(--cuda-graphs)
      resnet-bench compare resnet50 --device "$DEVICE" --batch "$BATCHES" --size 224 "${graphs[@]}" \
        --iters "$ITERS" --warmup "$WARMUP" --floor --workspace /tmp/ws-resnet50 \
        --json "$OUT/compare-resnet50.json" --markdown "$OUT/compare-resnet50.md" --plot "$OUT/compare-resnet50.png"
      ;;
    conv-algos)
      # ONNX Runtime CUDA FP32 drifted 1.1e-4 at batch 256 (5e-7 below): TF32 or cuDNN's algorithm? (needs build)
      ensure_installed
      local onnx=/tmp/ws-resnet50/resnet50/resnet50.onnx
      timeout 60 "$PY" benchmarks/gpu/conv_algos.py "$onnx" --batch "${BATCHES##*,}" &&
        NVIDIA_TF32_OVERRIDE=0 timeout 40 "$PY" benchmarks/gpu/conv_algos.py "$onnx" --batch "${BATCHES##*,}" --only-first
      ;;
    gate)
      ensure_installed
      read -r ckpt heldout < <("$PY" -c "from tests.trained import build; t = build(); print(t.checkpoint, t.heldout_dir)")
      rm -rf /tmp/ws-gate
      resnet-bench compare resnet18 --weights "$ckpt" --resize 72 --crop 64 --images "$heldout" \
        --device "$DEVICE" --batch "${GATE_BATCHES:-1,4,64}" --iters "$ITERS" --warmup "$WARMUP" \
        --workspace /tmp/ws-gate --gate --floor \
        --json "$OUT/gate-resnet18.json" --markdown "$OUT/gate-resnet18.md"
      ;;
  esac
}

phases="stage install env tests gpu-tests other-tests build aoti conv-algos compare gate"
for phase in "$@"; do  # a typo must not cost a device call: check them all before the first runs
  [[ " $phases " == *" $phase "* ]] || { echo "unknown phase '$phase' (${phases// /, })" >&2; exit 2; }
done
# Every phase runs even when one before it failed (a compare row that errors exits 3, a gate outside its
# tolerances exits 1): what the others measure still comes back. The script's status says if any failed.
failed=()
for phase in "$@"; do
  echo "=== $phase ($(date -u +%H:%M:%S))"
  run_phase "$phase" || { echo "=== $phase FAILED (exit $?)"; failed+=("$phase"); }
done
echo "=== done ($(date -u +%H:%M:%S))${failed[*]:+, failed: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
