#!/usr/bin/env bash
# The GPU benchmarks of issue 14 in one call of the device tool (bench/gpu/README.md says how to
# prepare .gpu/ and gives the exact call). On a bare GPU machine (CPython 3.12 with torch): the
# wheels of .gpu/whl are installed, then each part runs under its own timeout inside a
# ${BUDGET:-540} s budget and writes its figures; what comes back under $OUT:
#   results.json          every part: exit status, seconds, figures (merged)
#   run.log               everything printed
#   learnability.json     (d), when it runs
#   learnability_grid.png
#
#   bench/gpu/run.sh --dry-run   # every part at tiny sizes on this CPU (.venv), no wheels
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-/tmp/heser-gpu-dry-run}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/heser-gpu.XXXXXX)
mkdir -p "$WORK/parts"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/run.log") 2>&1
BUDGET=${BUDGET:-540}
START=$SECONDS

if [ $DRY = 1 ]; then
  PY=$ROOT/.venv/bin/python
  export OMP_NUM_THREADS=1  # a shared 2-core machine: one thread is the fastest here
  DRYFLAG=(--dry-run)
  FAST=(--channels-last)  # no --bf16: PyTorch's CPU antialiased resize has no bf16 kernel
else
  PY=python3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  DRYFLAG=()
  FAST=(--bf16 --channels-last)
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
fi
# the repository (heser is not installed there) and E_id's weights (bench/gpu/pack.py)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
[ -d .gpu/site ] && export PYTHONPATH=$ROOT/.gpu/site:$PYTHONPATH
# MLflow without a database (bench/learnability.py logs a run): a file store under $WORK
export MLFLOW_TRACKING_URI=file://$WORK/mlruns MLFLOW_ALLOW_FILE_STORE=true
SHARDS=$ROOT/.gpu/data/shards
$PY -c "import sys, torch, pydantic, mlflow, webdataset; print(sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

part() {  # part NAME SECONDS COMMAND...: run under the smaller of SECONDS and the budget left
  local name=$1 limit=$2 left t0 rc
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  if [ $left -lt 30 ]; then
    echo "== $name: skipped ($left s of the budget left)"
    echo "{\"part\": \"$name\", \"rc\": null, \"skipped\": \"budget\"}" >>"$WORK/status.jsonl"
    return
  fi
  # a dry run shares this CPU with everything else: only the whole budget bounds its parts
  if [ $DRY = 1 ] || [ "$limit" -gt $left ]; then limit=$left; fi
  echo "== $name (at most $limit s): $*"
  t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  echo "{\"part\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$WORK/status.jsonl"
}
skip() {  # skip NAME REASON
  echo "== $1: skipped ($2)"
  echo "{\"part\": \"$1\", \"rc\": null, \"skipped\": \"$2\"}" >>"$WORK/status.jsonl"
}
episodes() {  # episodes PART: episodes/s of a train_step part's JSON
  $PY -c "import json, sys; print(json.load(open(sys.argv[1]))['episodes_per_s'])" \
    "$WORK/parts/$1.json" 2>/dev/null
}

# The paper profile's VGG-16 perceptual loss reads random weights of the right shapes: the
# real 56 MiB file does not fit the carried 64 MiB, and the cost does not depend on the values
VGG=$WORK/vgg16_random.ckpt
$PY bench/gpu/synthetic_vgg16.py "$VGG" || exit 1
PAPER=(--set profile=paper --set "aligner.loss.vgg16_weights=$VGG"
       --set "blender.loss.vgg16_weights=$VGG")

# (a) one training step at the paper profile (512, bf16, channels_last)
for model in aligner blender; do
  part "train_$model" 180 $PY bench/train_step.py --model $model "${PAPER[@]}" "${FAST[@]}" \
    "${DRYFLAG[@]}" --json "$WORK/parts/train_$model.json"
done
# (b) the colour-reference correspondence at 512 (crops and label maps from .gpu/data)
part correspondence 150 $PY bench/correspondence.py --crops 512 --repeats 5 \
  --inputs .gpu/data/correspondence_inputs.npz "${DRYFLAG[@]}" \
  --json "$WORK/parts/correspondence.json"
# (c) the swap's networks at 512, untrained paper-profile models (no MediaPipe there)
part swap 120 $PY bench/swap.py --model-only --frames 50 "${PAPER[@]}" "${DRYFLAG[@]}" \
  --json "$WORK/parts/swap.json"
# (e) the K-shot loader at 128 and 512 against the steps of (a)
if [ -f bench/kshot_loader.py ]; then
  STEPS=()  # the paper profile's steps from (a); without them, the loader alone
  for model in aligner blender; do
    rate=$(episodes "train_$model")
    if [ -n "$rate" ]; then STEPS+=(--step "$model:paper=$rate"); else STEPS=(--no-step); break; fi
  done
  [ $DRY = 1 ] && STEPS=()
  part kshot_loader 150 $PY bench/kshot_loader.py --shards "$SHARDS" --workers 0 4 8 \
    --seconds 5 "${STEPS[@]}" "${DRYFLAG[@]}" --json "$WORK/parts/kshot_loader.json"
else
  skip kshot_loader "bench/kshot_loader.py not there"
fi
# (d) the learnability check scaled up: every training identity, 256 px, about 5 minutes. It
# also needs MediaPipe's runtime and the FaceRes, LPIPS and MediaPipe weights under
# data/weights, which do not fit the carried 64 MiB beside the rest (bench/gpu/README.md)
MISSING=$($PY -c "
import importlib.util, sys
from pathlib import Path
from heser.config import load_config
from heser.metrics import LPIPS_WEIGHTS
cfg = load_config('params.yaml')
weights = cfg.path(cfg.paths.weights)
need = [weights / LPIPS_WEIGHTS, weights / 'human_models/faceres.bin',
        weights / 'mediapipe/face_landmark.tflite']
gone = [str(p) for p in need if not p.exists()]
if importlib.util.find_spec('ai_edge_litert') is None:
    gone.append('ai-edge-litert')
print(', '.join(gone))") || MISSING="its inputs (the check failed)"
if [ ! -f bench/learnability.py ]; then
  skip learnability "bench/learnability.py not there"
elif [ -n "$MISSING" ]; then
  skip learnability "missing: $MISSING"
else
  if [ $DRY = 1 ]; then LEARN=(--dry-run); else LEARN=(--set aligner.size=256 --minutes 5); fi
  part learnability 480 $PY bench/learnability.py --identities all \
    --set "paths.shards=$SHARDS" "${LEARN[@]}" --name gpu --out "$WORK/learnability"
  cp "$WORK/learnability/learnability.json" "$WORK/parts/" 2>/dev/null
  cp "$WORK/learnability/learnability.json" "$OUT/" 2>/dev/null
  cp "$WORK/learnability/grid.png" "$OUT/learnability_grid.png" 2>/dev/null
fi
# Variants while the budget lasts: each flag of (a) off, then torch.compile
VARIANTS=("aligner --no-channels-last" "aligner --no-bf16" "aligner --compile"
          "blender --no-channels-last" "blender --compile")
# TorchInductor's C++ compile of the aligner did not finish in 15 min on the shared dev CPU
[ $DRY = 1 ] && VARIANTS=("aligner --no-channels-last" "blender --no-bf16")
for variant in "${VARIANTS[@]}"; do
  set -- $variant
  name=train_$1${2//-/_}
  part "$name" 150 $PY bench/train_step.py --model "$@" "${PAPER[@]}" \
    "${DRYFLAG[@]}" --json "$WORK/parts/$name.json"
done

$PY - "$WORK" "$OUT/results.json" <<'PY'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
parts = {}
for line in (work / "status.jsonl").read_text().splitlines():
    status = json.loads(line)
    figures = work / "parts" / f"{status['part']}.json"
    status["result"] = json.loads(figures.read_text()) if figures.exists() else None
    parts[status.pop("part")] = status
out.write_text(json.dumps(parts, indent=1) + "\n")
print(f"\n{'part':<32} {'exit':>4} {'s':>5}  figures")
for name, p in parts.items():
    r = p["result"] or {}
    if "episodes_per_s" in r:
        mfu = "" if r.get("mfu") is None else f", MFU {r['mfu']:.1%}"
        what = (f"{r['step_ms']:.0f} ms/step, {r['episodes_per_s']:.2f} episodes/s, "
                f"{r['peak_memory_gib']:.1f} GiB{mfu}")
    elif "frames_per_s" in r:
        what = f"{r['frames_per_s']:.1f} frames/s, {r['peak_memory_gib']:.1f} GiB"
    elif "rows" in r and name == "correspondence":
        what = "; ".join(f"{x['crop']} {x['pass']} region {x['region_ms']:.0f} ms / dense "
                         f"{x['dense_ms']:.0f} ms" for x in r["rows"])
    elif "rows" in r:
        ratios = [x["ratio"] for x in r["rows"] if x.get("ratio") is not None]
        what = f"{len(r['rows'])} loader rows" + (
            f", loader/step {min(ratios):.1f}x to {max(ratios):.1f}x" if ratios else "")
    elif "figures" in r:
        f = r["figures"]
        what = (f"{r['steps']} steps; cross-identity top-1 FaceRes "
                f"{f['faceres_cross_top1']:.2f} (chance {f['faceres_chance']:.2f})")
    else:
        what = p.get("skipped") or "-"
    print(f"{name:<32} {str(p['rc']):>4} {str(p.get('seconds', '-')):>5}  {what}")
PY
echo "total $((SECONDS - START)) s; results in $OUT/results.json"
rm -rf "$WORK"
