# issue 8, run 18: GPU tests of the div_rn crop kernel; decoders beside a busy GPU with the stream pool's priority raised
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/q.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L; nproc | tee -a $L
python3 -c "import torch, torchvision, triton; print(torch.__version__, torchvision.__version__, triton.__version__)" | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 4 --train-per-class 64 --val-per-class 1 2>&1 | tail -1 | tee -a $L
echo "folder t=$(el)s" | tee -a $L
timeout 200 python3 -m pytest -q -x tests/test_gpu_crop.py tests/test_gpu_decode.py 2>&1 | tail -5 | tee -a $L
echo "tests t=$(el)s" | tee -a $L
timeout 200 python3 docs/measurements/2026-11-21/input_pipeline/run18_priority_bench.py 2>&1 | grep -E "####|Error|error" | tee -a $L
echo "all done t=$(el)s" | tee -a $L
