# run 7 (2026-11-21, one H200, 16 cores, commit cb2b282 + run7_stream_priority.diff): bash .exp/call_d.sh,
# with run7_steps_main.py as .exp/steps_main.py
export PYTHONUNBUFFERED=1
W=$(( $(nproc) - 1 ))
python3 -m pytest -q -p no:cacheprovider tests/test_gpu_decode.py -k training_stream 2>&1 | tail -n 1 | tee $OUT/d.log
t0=$(date +%s)
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 300 --val-per-class 2 2>&1 | tail -1 | tee -a $OUT/d.log
echo "folder: $(( $(date +%s) - t0 ))s" | tee -a $OUT/d.log
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 2 -p 20 --workers $W)
run() { tag=$1; shift; timeout 150 python3 .exp/steps_main.py $tag 117 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/2:|Error|error" | tee -a $OUT/d.log; }
run synthetic --synthetic --synthetic-size 30000 --num-classes 100
run gpu /tmp/j --decode gpu
run cpu /tmp/j --decode cpu
run gpu_no_priority --no-priority /tmp/j --decode gpu
