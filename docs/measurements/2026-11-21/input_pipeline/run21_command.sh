# issue 8, run 21: fewer loader workers with --decode gpu (CPU oversubscription vs the training loop's launches)
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/t.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 4 -p 20)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 docs/measurements/2026-11-21/input_pipeline/run19_steps_main.py $tag 39 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/4:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
run synthetic 150 --synthetic --synthetic-size 10000 --num-classes 100 --workers 15
run gpu08_w8 75 /tmp/j --decode gpu --gpu-decode-share 0.8 --workers 8
run gpu07_w10 75 /tmp/j --decode gpu --gpu-decode-share 0.7 --workers 10
run gpu1_w6 75 /tmp/j --decode gpu --gpu-decode-share 1 --workers 6
run gpu08_w12 75 /tmp/j --decode gpu --gpu-decode-share 0.8 --workers 12
[ $(el) -lt 420 ] && run gpu07_w15 75 /tmp/j --decode gpu --gpu-decode-share 0.7 --workers 15
echo "all done t=$(el)s" | tee -a $L
