# run 13 (2026-11-21 16:45 UTC, one H200, 16 cores, commit 502a82b): bash .exp/call_l.sh, .exp/steps_main.py = run7_steps_main.py. The cpu_region run hit its 95 s timeout while torch.compile was still compiling on the fresh machine (the Triton CompilationError and killed workers in the log follow from that: timeout signals the whole process group, compile workers included; cpu_pil then compiled the same model from the cache); no device time was left to repeat it.
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
W=$(( $(nproc) - 1 )); L=$OUT/l.log
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --compile --epochs 3 -p 20 --workers $W)
run() { tag=$1; shift; timeout 95 python3 .exp/steps_main.py $tag 39 "$@" "${COMMON[@]}" --output /tmp/r-$tag 2>&1 | grep -E "####|epoch [0-9]/3:|Error|error" | tee -a $L; echo "t=$(el)s" | tee -a $L; }
run cpu_region /tmp/j --decode cpu
run cpu_pil /tmp/j --decode cpu --no-region-decode
