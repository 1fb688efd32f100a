# run 16 (2026-11-21, one H200, 16 cores; bash .exp/call_o.sh, .exp/steps_main.py = run14_steps_main.py, .exp/crop_bench.py = run14_crop_bench.py)
# issue 8, run 16: same machine: synthetic, --decode gpu with the batched crop kernel, per image, and a 0.5 ms GIL switch interval
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
W=$(( $(nproc) - 1 )); L=$OUT/o.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 200 --val-per-class 2 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 20 --workers $W)
run() { tag=$1; lim=$2; shift 2; timeout $lim python3 .exp/steps_main.py $tag 78 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic 170 --synthetic --synthetic-size 20000 --num-classes 100
export TIME_DECODE=1
run gpu1_kernel 100 /tmp/j --decode gpu
run gpu1_per_image 100 --per-image-crop /tmp/j --decode gpu
[ $(el) -lt 440 ] && run gpu1_kernel_switch05 100 --switch-ms 0.5 /tmp/j --decode gpu
echo "all done t=$(el)s" | tee -a $L
