#!/usr/bin/env bash
# One command for a GPU machine: the `gpu`-marked tests, then the engine, CLI, distributed
# and bench tests with CUDA visible (every test there that compares CPU figures pins the CPU).
#
#   scripts/gpu_check.sh OUT_DIR [--wheels DIR] [--data DIR] [--only gpu|engine-bench]
#
# OUT_DIR   receives gpu_check.log (everything printed), env.txt and one JUnit XML per phase.
# --wheels  a folder of wheels for what the machine lacks (pytest, rich, ...); installed with
#           pip --no-index into a folder under OUT_DIR, so nothing is fetched and the
#           machine's own packages are left alone. Make one on a machine with the registry:
#             pip download -d WHEELS --only-binary=:all: --no-deps pytest pluggy iniconfig \
#               packaging pytest-timeout rich markdown-it-py mdurl pygments
# --data    a folder with dataset files (e.g. the Fashion-MNIST IDX files): $VISIONZOO_DATA.
# --only    one phase: `gpu` (tests/test_gpu.py, about 40 s on an H200) or `engine-bench`.
#
# Runs from a source checkout without installing it (PYTHONPATH=src). Explorer tests are
# left out where FastAPI is missing; ONNX export tests where onnxruntime is. Exit status:
# non-zero if any phase failed.
set -uo pipefail

usage="usage: scripts/gpu_check.sh OUT_DIR [--wheels DIR] [--data DIR] [--only PHASE]"
out=${1:?$usage}
shift
wheels=""
data=""
only=""
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) wheels=$(realpath "$2"); shift 2 ;;
    --data) data=$(realpath "$2"); shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out" && out=$(realpath "$out")
exec > >(tee "$out/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
start=$SECONDS

# Only what is missing comes from the wheels folder, into a folder of its own.
have() { $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }
need=""
for mod in pytest:pytest pytest_timeout:pytest-timeout rich:rich safetensors:safetensors; do
  have "${mod%%:*}" || need="$need ${mod#*:}"
done
site="$out/site-packages"
if [ -n "$need" ]; then
  if [ -z "$wheels" ]; then
    echo "missing:$need (pass --wheels DIR with their wheels)"
    exit 2
  fi
  echo "installing from $wheels:$need"
  $PY -m pip install -q --no-index --find-links "$wheels" --target "$site" $need || exit 2
fi
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
[ -n "$data" ] && export VISIONZOO_DATA="$data"
VISIONZOO_CACHE=$(mktemp -d)
export VISIONZOO_CACHE

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY - <<'EOF'
import platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__,
      "torchvision", torchvision.__version__, "cuda", torch.version.cuda)
print("cuda available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} | tee "$out/env.txt"

ignore=()
have fastapi || for f in tests/test_explorer*.py; do ignore+=(--ignore "$f"); done
deselect="not slow"
have onnxruntime || deselect="$deselect and not onnx and not export"

status=0
phase() {
  local name=$1
  shift
  [ -z "$only" ] || [ "$only" = "$name" ] || return 0
  echo
  echo "== $name: $*  ($((SECONDS - start)) s)"
  $PY -m pytest -q -p no:cacheprovider -rfEs --junitxml "$out/$name.xml" "$@" || status=1
}
gpu_tests=(tests "${ignore[@]}")
[ "$only" = gpu ] && gpu_tests=(tests/test_gpu.py)  # no collection of the whole suite
phase gpu -m gpu "${gpu_tests[@]}"
phase engine-bench -m "$deselect" tests/test_engine.py tests/test_cli.py \
  tests/test_distributed.py tests/test_bench.py
echo
echo "== done in $((SECONDS - start)) s, status $status"
exit $status
