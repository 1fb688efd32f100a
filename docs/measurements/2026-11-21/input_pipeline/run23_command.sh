# issue 8, run 23: are the late batches variance (a deeper queue absorbs them) or throughput (it does not)?
# --decode gpu with the default share (auto = 0.7, 15 workers), PREFETCH_BATCHES 2 (as shipped) against 10, one machine
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/v.log; S=docs/measurements/2026-11-21/input_pipeline/run19_steps_main.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 4 -p 20)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 39 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/4:|Error|error|share auto" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
run gpu_auto 110 /tmp/j --decode gpu
export PREFETCH=10
run gpu_auto_prefetch10 60 /tmp/j --decode gpu
echo "all done t=$(el)s" | tee -a $L
