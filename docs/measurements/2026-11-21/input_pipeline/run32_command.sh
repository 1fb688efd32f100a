# issue 8, run 32: why run 31's --loader-process runs stopped ("DataLoader worker ... exited unexpectedly" in the
# loader process after 84-92 s): the whole output of one such run, with Python's fault handler on everywhere;
# the machine's shared memory and limits; the GPU tests of run 31 again after a fix (torch.cuda.set_device
# rejects an index-less "cuda" in torch 2.11); what gc.unfreeze() + gc.collect() leave frozen on this Python.
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
D=docs/measurements/2026-11-21/input_pipeline; L=$OUT/run32.log
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; python3 -V; df -h /dev/shm; ulimit -a | grep -E "open files|processes|locked"; } 2>&1 | tee $L
python3 -c "import gc; gc.freeze(); print('frozen', gc.get_freeze_count()); gc.unfreeze(); print('after unfreeze', gc.get_freeze_count()); gc.collect(); print('after collect', gc.get_freeze_count())" 2>&1 | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 100 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
COMMON=(-a eca_resnet50 --ksize 3557 -b 256 --amp bf16 --channels-last --epochs 1 -p 5 --decode gpu --loader-process)
timeout 150 python3 main.py /tmp/j "${COMMON[@]}" --output /tmp/r-a > $OUT/run32_loader_process_j15.log 2>&1; echo "rc=$? t=$(el)s" | tee -a $L
grep -v "^|" $OUT/run32_loader_process_j15.log | grep -iE "error|fault|signal|killed|bus|shm|memory|exited|epoch 1/1|loader" | head -40 | tee -a $L
timeout 100 python3 main.py /tmp/j "${COMMON[@]}" -j 4 --output /tmp/r-b > $OUT/run32_loader_process_j4.log 2>&1; echo "rc=$? t=$(el)s" | tee -a $L
grep -v "^|" $OUT/run32_loader_process_j4.log | grep -iE "error|fault|signal|killed|bus|shm|memory|exited|epoch 1/1|loader" | head -20 | tee -a $L
T="python3 -m pytest -q -rA -p no:cacheprovider"
timeout 100 $T tests/test_gpu_decode.py -k "loader_process" 2>&1 | grep -E "^(PASSED|FAILED|ERROR)|passed|failed|Error" | head -20 | tee -a $L
echo "all done t=$(el)s" | tee -a $L
