# run 15 (2026-11-21, one H200, 16 cores; bash .exp/call_n.sh, .exp/steps_main.py = run14_steps_main.py, .exp/crop_bench.py = run14_crop_bench.py)
# NOTE: during this run the working tree also had a DataLoader worker_init_fn that ran os.nice(10) in every loader worker
# (WORKER_NICENESS = 10 in ecanet/data.py; steps_main.py --no-nice set it to 0). It was not kept: see docs/benchmarks.md, run 15.
# issue 8, run 15: decode latency in training, workers niced, split shares with the batched crop kernel
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 )); L=$OUT/n.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_crop.py 2>&1 | grep -E "max error|passed|failed" | tail -n 4 | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 200 --val-per-class 2 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 20 --workers $W)
run() { tag=$1; shift; timeout 110 python3 .exp/steps_main.py $tag 78 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic --synthetic --synthetic-size 20000 --num-classes 100
export TIME_DECODE=1
run gpu1 /tmp/j --decode gpu --gpu-decode-share 1
run gpu075 /tmp/j --decode gpu --gpu-decode-share 0.75
run gpu075_not_nice --no-nice /tmp/j --decode gpu --gpu-decode-share 0.75
[ $(el) -lt 480 ] && run cpu /tmp/j --decode cpu
echo "all done t=$(el)s" | tee -a $L
