# run 8 (2026-11-21, one H200, 16 cores, commit 1203a3f): bash .exp/call_e.sh, then bash .exp/call_f.sh (same machine)
export PYTHONUNBUFFERED=1
W=$(( $(nproc) - 1 ))
python3 scripts/make_jpeg_folder.py /tmp/j --classes 50 --train-per-class 100 --val-per-class 2 2>&1 | tail -1 | tee $OUT/e.log
for load in 0 1; do
  echo "=== GPU_LOAD=$load" | tee -a $OUT/e.log
  GPU_LOAD=$load timeout 120 python3 .exp/with_gpu_load.py --loader cpu gpu --gpu-decode-share 1 --data /tmp/j \
    --batch-size 256 --loader-batches 15 --repeats 2 --workers $W --json $OUT/loader_load$load.json 2>&1 | grep -vE " INFO " | tee -a $OUT/e.log
done

export PYTHONUNBUFFERED=1
W=$(( $(nproc) - 1 ))
[ -d /tmp/j ] || python3 scripts/make_jpeg_folder.py /tmp/j --classes 50 --train-per-class 100 --val-per-class 2 2>&1 | tail -1
for prio in high; do
  echo "=== GPU_LOAD=1 DECODE_PRIORITY=$prio" | tee -a $OUT/f.log
  DECODE_PRIORITY=$prio GPU_LOAD=1 timeout 90 python3 .exp/with_gpu_load.py --loader gpu --gpu-decode-share 1 0.5 --data /tmp/j \
    --batch-size 256 --loader-batches 15 --repeats 2 --workers $W --json $OUT/loader_prio_$prio.json 2>&1 | grep -vE " INFO " | tee -a $OUT/f.log
done
