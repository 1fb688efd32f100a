# run 11 (2026-11-21 16:19 UTC, one H200, 16 cores; working tree over bc3bf59 = this commit's --region-decode): bash .exp/call_i.sh, .exp/steps_main.py = run7_steps_main.py
# issue 8, run 11: CPU region decoding (nvImageCodec CPU backend) in the workers; loader alone, then training
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 ))
L=$OUT/i.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_decode.py 2>&1 | tail -n 3 | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 200 --val-per-class 2 2>&1 | tail -1 | tee -a $L
echo "folder done t=$(el)s" | tee -a $L
timeout 120 python3 scripts/benchmark.py --loader gpu --gpu-decode-share 1 0 0.5 --region-decode on off --data /tmp/j --batch-size 256 --loader-batches 15 --repeats 2 --workers $W --json $OUT/loader.json 2>&1 | grep -vE " INFO |^\s*$" | grep -E "img/s|\||Error|error" | tail -n 9 | tee -a $L
echo "loader done t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 20 --workers $W)
run() { tag=$1; shift; timeout 110 python3 .exp/steps_main.py $tag 78 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run synthetic --synthetic --synthetic-size 20000 --num-classes 100
run gpu1 /tmp/j --decode gpu --gpu-decode-share 1
run gpu0_region /tmp/j --decode gpu --gpu-decode-share 0
run gpu05_region /tmp/j --decode gpu --gpu-decode-share 0.5
[ $(el) -lt 500 ] && run gpu0_pil /tmp/j --decode gpu --gpu-decode-share 0 --no-region-decode
for r in /tmp/r-*; do cp $r/metrics.jsonl $OUT/$(basename $r)_metrics.jsonl 2>/dev/null; done
echo "all done t=$(el)s" | tee -a $L
