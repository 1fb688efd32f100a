# issue 8, run 22: the new default --gpu-decode-share auto (0.7 with >= 8 workers) against share 1 and --decode cpu
# (region decoding on), one machine, against synthetic data; 15 workers (the default on 16 cores)
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/u.log; S=docs/measurements/2026-11-21/input_pipeline/run19_steps_main.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 4 -p 20)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 $S $tag 39 "${COMMON[@]}" "$@" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/4:|Error|error|share auto" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
export TIME_WAIT=1
run synthetic 150 --synthetic --synthetic-size 10000 --num-classes 100
run gpu_auto 75 /tmp/j --decode gpu
run gpu1 75 /tmp/j --decode gpu --gpu-decode-share 1
run cpu 90 /tmp/j --decode cpu
[ $(el) -lt 400 ] && run gpu_auto_again 75 /tmp/j --decode gpu
echo "all done t=$(el)s" | tee -a $L
