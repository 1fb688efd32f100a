# run 10 (2026-11-21 16:16 UTC, one H200, 16 cores): bash .exp/call_h.sh with run10_decoders.py as .exp/decoders.py; the decoders alone, no ecanet code involved
# issue 8, run 10: the decoders alone, idle and busy
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/h.log
[ -d /tmp/j ] || python3 scripts/make_jpeg_folder.py /tmp/j --classes 20 --train-per-class 13 --val-per-class 1 2>&1 | tail -1 | tee $L
for load in 0 1; do GPU_LOAD=$load timeout 140 python3 .exp/decoders.py 2>&1 | grep -E "####|rror" | grep -v "^\[" | tee -a $L; done
echo "=== LD_PRELOAD carried libnvjpeg 13.3" | tee -a $L
LD_PRELOAD=/tmp/site/nvidia/cu13/lib/libnvjpeg.so.13 GPU_LOAD=1 timeout 140 python3 .exp/decoders.py 2>&1 | grep -E "####|rror" | tee -a $L
