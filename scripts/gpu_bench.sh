#!/usr/bin/env bash
# One GPU, one go: throughput, input pipeline and training measurements (STEPS picks; default all, ~9 min on
# an H200), and with STEPS=released the kinds of results files docs/performance.md is generated from:
#   throughput  eca_resnet50 (k3557) against resnet50, batch 256, bf16, channels_last, same run: train and
#               inference eager, train compiled; ECA implementation 'auto' (what ecanet runs: fused Triton
#               kernels in eager mode, the decomposed BN+ECA form under torch.compile), and 'fused' compiled
#   loader      the input pipeline alone on a generated ImageNet-like JPEG folder: CPU vs GPU decoding,
#               the latter with each --gpu-decode-share in SHARES (default "1 0.6 0.45 0.3")
#   main        main.py, eca_resnet50, bf16 + channels_last + compile, 3 epochs, for each data source in
#               SOURCES (default "synthetic cpu gpu"): synthetic data, then the JPEG folder with --decode cpu
#               and --decode gpu (images/s, peak memory)
#
#   released    (only when named in STEPS; the steps below in order) every released ECA network against its
#               baseline, each step one scripts/benchmark.py run: released-eager (train and inference, with each
#               step's host time, --host-time), released-compiled
#               (train and inference compiled: first compiles every network, JOBS processes at a time, into Inductor's
#               on-disk cache at $TORCHINDUCTOR_CACHE_DIR, then times each network in a fresh process that loads its
#               graphs from there and tunes their kernels alone; compiling one network after another alone takes
#               30-130 s a network on an H200 host).
#               OFFICIAL=DIR adds the official code's networks (the official repository's models/ folder);
#               RELEASED_IMPLS (default "auto") the ECA implementations of ecanet's networks in both steps, e.g.
#               RELEASED_IMPLS="auto fused" STEPS=released-eager times eager training with the BatchNorm+ECA
#               tail kernels in every network against the default (which takes them in the ResNets only);
#               RELEASED_PAIRS narrows both steps and COMPILED_MODES ("train infer") the compiled one, e.g. to
#               what one 10-minute call can compile and time; COMPILE_ARGS adds arguments to it (e.g.
#               "--inductor-option combo_kernels=True"). RESUME=1: each step continues the results file already at
#               its path in $OUT (--resume), e.g. to finish a step a time limit cut short; the file must come from
#               the same GPU, versions, settings and (in a git checkout) code.
#   released-cudagraphs  (in STEPS=released, after released-compiled) the compiled step again for CUDAGRAPH_PAIRS
#               (default "mobilenet_v2"), its compiled steps replayed as CUDA graphs (--inductor-option
#               triton.cudagraphs=True, what --compile-mode reduce-overhead turns on); RESUME=1 as above.
#   gpu-tests   (only when named, and first) the tests marked gpu (pytest -m gpu in TEST_WORKERS processes,
#               default 4: ~2.5 min on an H200), the log and a JUnit XML in $OUT; test modules that need what this
#               machine lacks (thop, pycocotools) fail to collect and are listed, the others run.
#
#   OUT=/some/dir STEPS="loader main" SOURCES="synthetic gpu" bash scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-gpu_bench_out}
PY=${PYTHON:-python3}
JPEGS=${JPEGS:-/tmp/jpegs-imagenet-like}
STEPS=${STEPS:-"throughput loader main"}
WORKERS=${WORKERS:-$(( $(nproc) - 1 ))}
SHARES=${SHARES:-"1 0.6 0.45 0.3"}
MAIN_SHARE=${MAIN_SHARE:-auto}   # --gpu-decode-share of the main.py --decode gpu run (main.py's default)
SOURCES=${SOURCES:-"synthetic cpu gpu"}
TEST_WORKERS=${TEST_WORKERS:-4}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BENCH=(scripts/benchmark.py --batch-size 256 --amp bf16 --channels-last --repeats 3)
has() { [[ " $STEPS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if has gpu-tests; then
    echo "=== the tests marked gpu"
    timeout 540 "$PY" -m pytest -q -p no:cacheprovider -m gpu --continue-on-collection-errors -n "$TEST_WORKERS" \
        --dist worksteal --durations 5 --junitxml="$OUT/gpu_tests.xml" tests > "$OUT/gpu_tests.log" 2>&1
    tail -n 3 "$OUT/gpu_tests.log"
fi
RELEASED_PAIRS=${RELEASED_PAIRS:-"resnet18 resnet34 resnet50 resnet101 resnet152 mobilenet_v2"}   # measured in this order
COMPILED_MODES=${COMPILED_MODES:-"train infer"}
COMPILE_ARGS=${COMPILE_ARGS:-}
RESUME=${RESUME:-}
JOBS=${JOBS:-12}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/inductor}
OFFICIAL=${OFFICIAL:-}
RELEASED_SOURCES=${RELEASED_SOURCES:-"ecanet ${OFFICIAL:+official }timm"}   # whose networks: ecanet official timm
RELEASED_IMPLS=${RELEASED_IMPLS:-auto}
# shellcheck disable=SC2206
RELEASED=("$PY" "${BENCH[@]}" --eca-impl $RELEASED_IMPLS ${OFFICIAL:+--official-code "$OFFICIAL"})
CUDAGRAPH_PAIRS=${CUDAGRAPH_PAIRS:-"mobilenet_v2"}
has released && STEPS="$STEPS released-eager released-compiled released-cudagraphs"
if has released-eager; then
    echo "=== every released ECA network against its baseline, eager"
    # shellcheck disable=SC2086
    timeout 570 "${RELEASED[@]}" --released $RELEASED_PAIRS --sources $RELEASED_SOURCES --cases train-eager infer-eager \
        --warmup-steps 5 --repeat-seconds 1 --host-time ${RESUME:+--resume} --json "$OUT/released_eager.json" 2>&1 \
        | grep -vE " INFO "
fi
# The compiled released step: PAIRS, then the results file's name in $OUT, then more scripts/benchmark.py arguments.
released_compiled() {
    local pairs=$1 json=$2
    shift 2
    # shellcheck disable=SC2086
    TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-2} timeout 570 "${RELEASED[@]}" "$@" \
        --released $pairs --cases $(printf '%s-compiled ' $COMPILED_MODES) --warmup-steps 5 --repeat-seconds 1 \
        --compile-jobs "$JOBS" ${RESUME:+--resume} --json "$OUT/$json" 2>&1 | grep -vE " INFO "
}
if has released-compiled; then
    echo "=== every released ECA network against its baseline, compiled ($JOBS compiling processes at a time)"
    # shellcheck disable=SC2086
    released_compiled "$RELEASED_PAIRS" released_compiled.json $COMPILE_ARGS --sources $RELEASED_SOURCES
fi
if has released-cudagraphs; then
    echo "=== released ECA networks against their baselines, compiled and replayed as CUDA graphs: $CUDAGRAPH_PAIRS"
    released_compiled "$CUDAGRAPH_PAIRS" released_compiled_cudagraphs.json --sources ecanet \
        --inductor-option triton.cudagraphs=True
fi
if has throughput; then
    echo "=== throughput"
    timeout 330 "$PY" "${BENCH[@]}" --archs eca_resnet50 resnet50 --eca-impl auto \
        --cases train-eager infer-eager train-compiled --json "$OUT/throughput.json" 2>&1 | grep -vE " INFO "
    timeout 100 "$PY" "${BENCH[@]}" --archs eca_resnet50 --eca-impl fused --cases train-compiled \
        --json "$OUT/throughput_fused_compiled.json" 2>&1 | grep -vE " INFO "
fi
if has loader || has main; then
    [ -d "$JPEGS" ] || "$PY" scripts/make_jpeg_folder.py "$JPEGS" --classes 100 --train-per-class 200 --val-per-class 10
fi
if has loader; then
    echo "=== input pipeline alone ($WORKERS workers)"
    # shellcheck disable=SC2086
    timeout 200 "$PY" scripts/benchmark.py --loader cpu gpu --gpu-decode-share $SHARES --data "$JPEGS" \
        --batch-size 256 --loader-batches 40 --repeats 3 --workers "$WORKERS" --json "$OUT/loader.json" 2>&1 \
        | grep -vE " INFO "
fi
if has main; then
    for source in $SOURCES; do
        echo "=== main.py, one GPU, bf16 + channels_last + compile, data: $source ($WORKERS workers)"
        if [ "$source" = synthetic ]; then data=(--synthetic --synthetic-size 21000 --num-classes 100)
        else data=("$JPEGS" --decode "$source" --gpu-decode-share "$MAIN_SHARE"); fi
        timeout 200 "$PY" main.py "${data[@]}" -a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last \
            --compile --epochs 3 -p 20 --workers "$WORKERS" --output "/tmp/main-$source" 2>&1 \
            | grep -E "epoch [0-9]+/[0-9]+:|error|Error"
        cp "/tmp/main-$source/metrics.jsonl" "$OUT/main_${source}_metrics.jsonl" 2>/dev/null
    done
fi
