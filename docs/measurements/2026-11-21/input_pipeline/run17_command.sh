# run 17 (2026-11-21, one H200, 16 cores; bash .exp/call_p.sh, .exp/steps_main.py = run14_steps_main.py, .exp/crop_bench.py = run14_crop_bench.py)
# issue 8, run 17: with the batched crop kernel, split shares 0.85 and 0.7 (CPU share region-decoded) vs synthetic, one machine
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 )); L=$OUT/p.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 20 --workers $W)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 .exp/steps_main.py $tag 39 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic 150 --synthetic --synthetic-size 10000 --num-classes 100
export TIME_DECODE=1
run gpu085 80 /tmp/j --decode gpu --gpu-decode-share 0.85
[ $(el) -lt 270 ] && run gpu07 80 /tmp/j --decode gpu --gpu-decode-share 0.7
echo "all done t=$(el)s" | tee -a $L
