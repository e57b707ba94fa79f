#!/usr/bin/env bash
# The GPU path in one run of at most 8 minutes, ending with one table: text and image encoding throughput
# (fp16, batches of 1,024, JPEG decoding included), kNN tagging on a FAISS GPU index (a note instead when the
# installed faiss has no GPU support), and CLIP-training throughput (fp16 autocast).
#
#   bench/gpu_check.sh                 # on a CUDA machine
#   bench/gpu_check.sh --device cpu    # dry run of the same steps at small sizes (a test runs this)
#
# Each step is a bench/ module with its own time limit; a step that fails or runs out of time is a row saying
# so, and the script exits non-zero after printing the table. Figures are also written to $OUT (default: a
# temporary folder) as one JSON file per step.
set -u
cd "$(dirname "$0")/.."
device=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        *) echo "usage: bench/gpu_check.sh [--device cuda|cpu]" >&2; exit 2 ;;
    esac
done
case "$device" in cuda|cpu) ;; *) echo "--device must be cuda or cpu" >&2; exit 2 ;; esac
python=${PYTHON:-.venv/bin/python}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$device" = cuda ]; then
    quick=(); knn_size=1000000; workers=8; limits=(200 140 140)  # 8 minutes in all
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "no CUDA device visible to torch: run with --device cpu for a dry run" >&2; exit 1; }
else
    quick=(--quick); knn_size=2000; workers=0; limits=(900 900 900)  # a dry run has no time goal
fi

failed=0
step() {  # name, time limit (s), module, arguments...
    local name=$1 limit=$2 module=$3
    shift 3
    echo "[gpu_check] $name ($device, at most ${limit}s) ..." >&2
    if ! timeout "$limit" "$python" "bench/$module" --out "$out/$name.json" --device "$device" \
            --work "$out/work" "${quick[@]}" "$@" >&2; then
        echo "{\"figures\": [], \"notes\": [\"$name failed or ran past ${limit}s\"]}" > "$out/$name.json"
        failed=1
    fi
}
step encode "${limits[0]}" bench_encoders.py --text-models minilm
step knn "${limits[1]}" bench_scaling.py --size "$knn_size"
step clip-train "${limits[2]}" bench_clip_train.py --workers "$workers"

"$python" - "$out" <<'PY'
import json, sys
from pathlib import Path

print(f"| step | figure | value | unit | device | n |")
print("|---|---|---:|---|---|---:|")
notes = []
for name in ("encode", "knn", "clip-train"):
    result = json.loads((Path(sys.argv[1]) / f"{name}.json").read_text())
    for f in result["figures"]:
        if f["unit"] in ("MB",):
            continue
        print(f"| {name} | {f['figure']} | {f['value']:,.1f} | {f['unit']} | {f['device']} | {f['n']:,} |")
    notes += [f"{name}: {n}" for n in result["notes"]]
for note in notes:
    print(f"note: {note}")
PY
exit $failed
