# issue 8, run 19: CUDA graphs for the training step (--compile-mode reduce-overhead), synthetic and share 0.7; data waits
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 )); L=$OUT/r.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 4 -p 20 --workers $W)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 docs/measurements/2026-11-21/input_pipeline/run19_steps_main.py $tag 39 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/4:|Error|error|skipping cudagraphs" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
run synthetic 150 --synthetic --synthetic-size 10000 --num-classes 100
run synthetic_ro 170 --synthetic --synthetic-size 10000 --num-classes 100 --compile-mode reduce-overhead
run gpu07 90 /tmp/j --decode gpu --gpu-decode-share 0.7
run gpu07_ro 110 /tmp/j --decode gpu --gpu-decode-share 0.7 --compile-mode reduce-overhead
[ $(el) -lt 500 ] && run gpu07_prio 85 --raise-priority /tmp/j --decode gpu --gpu-decode-share 0.7
echo "all done t=$(el)s" | tee -a $L
