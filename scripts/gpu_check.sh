#!/usr/bin/env bash
# The GPU checks, in one prepared run for a machine with one CUDA GPU (what a lent GPU session runs; see README's
# Performance). Each step has its own time limit and the run skips the steps that no longer fit in BUDGET seconds,
# most important first: the CUDA tests, the default job in bf16 and fp32, the benchmark on CUDA, one walk-forward
# study job, then the fast test set on the GPU machine.
#   OUT=/tmp/gpu_check BUDGET=540 bash scripts/gpu_check.sh
# Where the machine has no package index, put wheels of the missing packages in .whl/ (hydra-core, omegaconf,
# antlr4-python3-runtime, arch, bokeh_sampledata, exchange_calendars...): they are installed into /tmp/site first.
set -u
OUT=${OUT:-/tmp/gpu_check}
BUDGET=${BUDGET:-540}
PY=${PY:-python3}
mkdir -p "$OUT/runs"
START=$SECONDS
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1

if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

step() {  # step NAME LIMIT COMMAND...: run COMMAND with a time limit, logged to $OUT/NAME.log, if it still fits
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 20)); then echo "== $name: skipped ($left s of the budget left)"; return; fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc, $((SECONDS - t0)) s (limit $limit s)"
    tail -n 4 "$OUT/$name.log"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    $PY -c "import torch, lightning, hydra, pandas; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'lightning', lightning.__version__, 'hydra', hydra.__version__, 'pandas', pandas.__version__, \
'gpu', torch.cuda.get_device_name(0))"
    nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step cuda_tests 150 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_gru.py tests/test_zoo.py -k "cuda or gpu"
step default_bf16 120 $PY train.py trainer=gpu trainer.precision=bf16-mixed hydra.run.dir="$OUT/runs/default_bf16"
step default_fp32 120 $PY train.py trainer=gpu hydra.run.dir="$OUT/runs/default_fp32"
# every model in a process of its own pays the start-up (~12 s on an H200 machine): a few models, short, so it fits
step benchmark 240 $PY scripts/benchmark.py --device cuda --precision bf16-mixed --models stacked vanilla gru peephole \
    dlinear --epochs 2 --overhead-rounds 1 --cell-rounds 1 --skip-default-job --out "$OUT/benchmark.json"
step study_job 120 $PY train.py experiment=walk_forward model=stacked seed=0 backtest.fold=7 trainer=gpu \
    hydra.run.dir="$OUT/runs/study_stacked_fold7"
step fast_tests 200 $PY -m pytest -q -p no:cacheprovider -x -n 8 -m "not slow"

# what comes back: the logs and each run's metrics.json (no checkpoints)
for run in "$OUT"/runs/*/; do
    name=$(basename "$run")
    [ -f "$run/metrics.json" ] && cp "$run/metrics.json" "$OUT/metrics_$name.json"
done
tar -czf "$OUT/logs.tgz" -C "$OUT" --exclude=runs/*/checkpoints --exclude=runs/*/tensorboard \
    $(cd "$OUT" && ls *.log runs 2>/dev/null) 2>/dev/null
rm -rf "$OUT/runs" "$OUT"/*.log
echo "== done in $((SECONDS - START)) s"
