# run 12 (2026-11-21 16:35 UTC, one H200, 16 cores): bash .exp/call_k.sh with run12_cores.py as .exp/cores.py; timeout 100 cut it after region=True processes=4
# issue 8, run 12: CPU topology and how crop making scales with worker processes
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
L=$OUT/k.log
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|MHz" | tee $L; nproc | tee -a $L
python3 scripts/make_jpeg_folder.py /tmp/j --classes 10 --train-per-class 100 --val-per-class 1 2>&1 | tail -1 | tee -a $L
timeout 100 python3 .exp/cores.py 2>&1 | grep "####" | tee -a $L
