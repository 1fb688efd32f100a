# issue 8, run 20: profile of share 0.7 vs synthetic (CUDA activity only); shares 0.6 / 0.7 / 0.8 on one machine
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 )); L=$OUT/s.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 4 -p 20 --workers $W)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 docs/measurements/2026-11-21/input_pipeline/run19_steps_main.py $tag 39 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/4:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
prof() { tag=$1; lim=$2; shift 2; timeout $lim python3 docs/measurements/2026-11-21/input_pipeline/run20_profile_steps.py $tag 90 8 "$@" "${COMMON[@]}" --output /tmp/p-$tag 2>&1 | grep -E "####|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
run synthetic 150 --synthetic --synthetic-size 10000 --num-classes 100
prof synthetic 80 --synthetic --synthetic-size 10000 --num-classes 100
prof gpu07 80 /tmp/j --decode gpu --gpu-decode-share 0.7
run gpu08 75 /tmp/j --decode gpu --gpu-decode-share 0.8
run gpu06 75 /tmp/j --decode gpu --gpu-decode-share 0.6
run gpu07 75 /tmp/j --decode gpu --gpu-decode-share 0.7
[ $(el) -lt 480 ] && prof gpu06 80 /tmp/j --decode gpu --gpu-decode-share 0.6
echo "all done t=$(el)s" | tee -a $L
