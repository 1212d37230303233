#!/usr/bin/env bash
# Switchyard on one CUDA GPU, end to end, in one run (issue #13; docs/gpu.md):
#   0. the machine: nvidia-smi, python, torch and whether it sees CUDA; wheels from .whl/ if there; the repo
#      put on PYTHONPATH (no build, no network);
#   a. numerics on the GPU: tests/test_numerics.py with SWITCHYARD_TEST_DEVICE=cuda (float32, logits against
#      transformers on the same GPU to 1e-4, greedy tokens identical), then tests/test_gpu_numerics.py
#      (bfloat16 greedy against transformers in bfloat16) and tests/test_vllm_kernel.py (vLLM's CUDA kernel,
#      skipped where vLLM's CUDA build is missing);
#   b. serving on one GPU, router and 2 expert groups sharing it (fractional num_gpus): the built-in model,
#      then a random ~1B-parameter Mixtral-shaped checkpoint (scripts/make_random_checkpoint.py), each through
#      the OpenAI API (models, completions, chat, a stream, 8 concurrent requests);
#   c. decode tok/s at batch 1/32/128, Switchyard's engine against transformers' generate on the same GPU and
#      checkpoint (scripts/gpu_decode_bench.py), for both models.
# Every step runs under its own timeout, goes on after a failure, and the summary says which passed, failed or
# was skipped (and why). Meant to finish in under ~8 minutes on an H200.
#
#   bash scripts/gpu_check.sh            # outputs under ${OUT:-runs/gpu-check}
#   PYTHON=/opt/venv/bin/python bash scripts/gpu_check.sh
# Settings (environment): PYTHON (default python3), OUT, SWITCHYARD_GPU_CHECK_BUDGET_S (whole run, default 540),
# SWITCHYARD_GPU_CHECK_PORT (default 8011; the second server takes 10 more), SWITCHYARD_GPU_CHECK_WORK (checkpoints and logs, default
# $TMPDIR/switchyard-gpu-check).
#
# Outputs (few files, so that a remote runner can bring them all back): summary.md (the steps, the tables, the
# tail of each failed step's log), gpu-check.log (every step's whole output), env.txt, bench-*.json.
# Exit status: 0 if no step failed, 1 if one did, 2 if the machine cannot run the check at all.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/runs/gpu-check}
PYTHON=${PYTHON:-python3}
WORK=${SWITCHYARD_GPU_CHECK_WORK:-${TMPDIR:-/tmp}/switchyard-gpu-check}
PORT=${SWITCHYARD_GPU_CHECK_PORT:-8011}
BUDGET_S=${SWITCHYARD_GPU_CHECK_BUDGET_S:-540}  # the whole run; under a 10-minute limit with time to write up
mkdir -p "$OUT" "$WORK/logs"
LOG=$OUT/gpu-check.log
SUMMARY=$OUT/summary.md
: >"$LOG"
STARTED=$(date +%s)
RESULTS=()
FAILED=0

say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

# run_step NAME TIMEOUT_S COMMAND...: the command's output to its log and to gpu-check.log; the result noted.
# Each step's timeout is cut to what is left of the whole run's budget; a step with under 20 s left is skipped.
run_step() {
  local name=$1 limit=$2; shift 2
  local log="$WORK/logs/$name.log" start=$(date +%s) rc
  local left=$(( BUDGET_S - (start - STARTED) ))
  if [ $left -lt 20 ]; then skip_step "$name" "out of the run's ${BUDGET_S}s budget"; return 125; fi
  [ $left -lt $limit ] && limit=$left
  say "step $name: $* (timeout ${limit}s)"
  if declare -F "$1" >/dev/null; then  # a function of this script: run by a bash that has it (exported)
    timeout --kill-after=15 "$limit" bash -c '"$@"' _ "$@" >"$log" 2>&1
  else
    timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1
  fi
  rc=$?
  { echo "----- $name (exit $rc) -----"; cat "$log"; } >>"$LOG"
  local took=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    RESULTS+=("| $name | PASS | ${took}s | |")
  else
    local why="exit $rc"; [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="timed out after ${limit}s"
    RESULTS+=("| $name | **FAIL** | ${took}s | $why: see below and gpu-check.log |")
    FAILED=1
    { echo; echo "### $name failed ($why): last lines"; echo; echo '```'; tail -n 40 "$log"; echo '```'; } >>"$WORK/failures.md"
  fi
  say "step $name: exit $rc after ${took}s"
  return $rc
}

skip_step() {  # NAME REASON
  RESULTS+=("| $1 | SKIPPED | | $2 |")
  say "step $1: SKIPPED: $2"
}

write_summary() {
  {
    echo "# Switchyard GPU check, $(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - STARTED ))s"
    echo
    sed 's/^/    /' "$OUT/env.txt" 2>/dev/null
    echo
    echo "| step | result | time | note |"
    echo "|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    for table in "$WORK"/bench-*.md; do
      [ -f "$table" ] && { echo; cat "$table"; }
    done
    [ -f "$WORK/failures.md" ] && cat "$WORK/failures.md"
  } >"$SUMMARY"
  cat "$SUMMARY" >&2
}

# -- 0. the machine ---------------------------------------------------------------------------------------
rm -f "$WORK/failures.md" "$WORK"/bench-*.md
if ! command -v "$PYTHON" >/dev/null; then
  say "FAILED at step 0: no python at '$PYTHON' (set PYTHON=...)"; exit 2
fi
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
  say "installing the wheels in .whl/ into $WORK/site (no index, no dependencies)"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" "$REPO"/.whl/*.whl >>"$LOG" 2>&1; then
    say "FAILED at step 0: pip could not install the wheels in .whl/ (gpu-check.log has pip's message)"; exit 2
  fi
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The package `switchyard` is the repo root (pyproject's package-dir): a link named switchyard on PYTHONPATH
# installs it with no build step, which an offline machine could not run (pip would fetch setuptools).
mkdir -p "$WORK/pkg" && ln -sfn "$REPO" "$WORK/pkg/switchyard"
export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
{
  echo "repo        $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
  echo "python      $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu         /'
  else
    echo "gpu         nvidia-smi not found"
  fi
  "$PYTHON" - <<'EOF'
import importlib, importlib.util
try:
    import torch
    print(f"torch       {torch.__version__}, CUDA build {torch.version.cuda}, sees CUDA: {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
except Exception as err:
    print(f"torch       cannot be imported: {err}")
for name in ("transformers", "safetensors", "tokenizers", "pytest", "ray", "fastapi", "pydantic", "vllm"):
    spec = importlib.util.find_spec(name)
    version = "not installed"
    if spec is not None:
        try:
            version = getattr(importlib.import_module(name), "__version__", "installed")
        except Exception as err:
            version = f"installed but fails to import ({type(err).__name__}: {err})"
    print(f"{name:<11} {version}")
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$LOG" >&2
if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  say "FAILED at step 0: this python's torch cannot use a CUDA GPU (env.txt says what it has). Use a python with"
  say "a CUDA build of torch (PYTHON=...), or bring one as wheels in .whl/ (docs/gpu.md, 'Running the GPU check')."
  RESULTS+=("| 0-machine | **FAIL** | | torch sees no CUDA GPU |"); write_summary; exit 2
fi
missing=$("$PYTHON" - <<'EOF'
import importlib
need = ["transformers", "safetensors", "tokenizers", "pytest", "yaml", "numpy", "jinja2",
        "switchyard.router.engine", "switchyard.cluster.bench.engine"]
bad = []
for name in need:
    try:
        importlib.import_module(name)
    except Exception as err:
        bad.append(f"{name} ({type(err).__name__}: {err})")
print("; ".join(bad))
EOF
)
if [ -n "$missing" ]; then
  say "FAILED at step 0: cannot import $missing. Bring the missing packages as wheels in .whl/ (docs/gpu.md)."
  RESULTS+=("| 0-machine | **FAIL** | | cannot import: $missing |"); write_summary; exit 2
fi
RESULTS+=("| 0-machine | PASS | | env.txt above |")

# -- a. numerics on the GPU -------------------------------------------------------------------------------
cd "$REPO"
# filterwarnings without pyproject's pydantic entry: pytest refuses to start where pydantic is missing, and the
# GPU steps a and c do not need it.
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -o "filterwarnings=ignore::DeprecationWarning" --timeout=300)
"$PYTHON" -c "import pytest_timeout" 2>/dev/null || unset "PYTEST[-1]"  # no pytest-timeout: no --timeout
run_step a1-numerics-float32-cuda 240 env SWITCHYARD_TEST_DEVICE=cuda "${PYTEST[@]}" tests/test_numerics.py
run_step a2-gpu-numerics-bfloat16 180 "${PYTEST[@]}" -rs -s tests/test_gpu_numerics.py
run_step a3-vllm-kernel 180 "${PYTEST[@]}" -rs tests/test_vllm_kernel.py

# -- b. serving on one GPU --------------------------------------------------------------------------------
MIXTRAL=$WORK/mixtral-1b
run_step b0-make-mixtral-1b 180 "$PYTHON" scripts/make_random_checkpoint.py "$MIXTRAL" --device cuda
have_mixtral=$?

cat >"$WORK/share-one-gpu.yaml" <<'EOF'
# The router and 2 expert groups on one GPU: fractions of it, as Ray counts GPUs.
num_groups: 2
router_pool: {num_cpus: 2, num_gpus: 0.4}
expert_pool: {num_cpus: 2, num_gpus: 0.3}
EOF

cat >"$WORK/requests.py" <<'EOF'
"""A few requests through the OpenAI API; exits non-zero, saying which, when one fails."""
import json, sys, threading, urllib.request

base, name = sys.argv[1], sys.argv[2]


def post(path, body, stream=False):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as reply:
        if stream:
            return [line.decode().strip() for line in reply if line.strip()]
        return json.loads(reply.read())


models = json.loads(urllib.request.urlopen(base + "/v1/models", timeout=30).read())
print("models:", [m["id"] for m in models["data"]])
done = post("/v1/completions", {"model": name, "prompt": "The history of", "max_tokens": 16, "temperature": 0})
print("completion:", repr(done["choices"][0]["text"]), done["usage"])
assert done["usage"]["completion_tokens"] >= 1, done
chat = post("/v1/chat/completions", {"model": name, "max_tokens": 16,
                                     "messages": [{"role": "user", "content": "Tell me about trains."}]})
print("chat:", repr(chat["choices"][0]["message"]["content"]), chat["usage"])
lines = post("/v1/completions", {"model": name, "prompt": "A railway yard", "max_tokens": 16, "stream": True},
             stream=True)
assert lines[-1] == "data: [DONE]", lines[-3:]
print("stream:", len(lines) - 1, "events")
replies, errors = [], []


def one(i):
    try:
        replies.append(post("/v1/completions", {"model": name, "prompt": f"Request {i}:", "max_tokens": 24}))
    except Exception as err:
        errors.append(f"request {i}: {err}")


threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
print("8 concurrent:", sum(r["usage"]["completion_tokens"] for r in replies), "tokens")
EOF

# serve_and_query NAME MODEL PORT EXTRA_FLAGS...: `switchyard serve` in the background, wait until it answers,
# send the requests, stop it with Ctrl-C (SIGINT), as a user would. Each server gets its own port: the last
# one's may not be free again yet.
serve_and_query() {
  local name=$1 model=$2 port=$3; shift 3
  local log="$WORK/logs/$name-server.log"
  "$PYTHON" -m switchyard.cluster.cli serve "$model" --device cuda --config "$WORK/share-one-gpu.yaml" \
    --port "$port" --served-model-name "$name" --max-model-len 512 --max-num-seqs 16 --num-cpus 16 "$@" \
    >"$log" 2>&1 &
  local server=$! ready=0
  for _ in $(seq 1 180); do
    if ! kill -0 "$server" 2>/dev/null; then break; fi
    if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" \
        2>/dev/null; then ready=1; break; fi
    sleep 1
  done
  local rc=1
  if [ $ready -eq 1 ]; then
    "$PYTHON" "$WORK/requests.py" "http://127.0.0.1:$port" "$name"
    rc=$?
  else
    echo "the server did not answer on port $port (it exited, or took over 180 s); its log:"
  fi
  kill -INT "$server" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$server" 2>/dev/null || break; sleep 1; done
  kill -KILL "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  echo "----- server log -----"; cat "$log"
  return $rc
}

export REPO OUT PYTHON WORK
export -f serve_and_query
run_step b1-serve-demo-model 240 serve_and_query demo-model "$REPO/configs/demo-model" "$PORT"
if [ $have_mixtral -eq 0 ]; then
  run_step b2-serve-mixtral-1b 300 serve_and_query mixtral-1b "$MIXTRAL" $((PORT + 10)) --kv-cache-memory 4GiB
else
  skip_step b2-serve-mixtral-1b "no checkpoint: b0 failed"
fi

# -- c. decode tok/s against transformers -----------------------------------------------------------------
bench() {  # NAME MODEL
  "$PYTHON" scripts/gpu_decode_bench.py --model "$2" --device cuda --batches 1,32,128 --new-tokens 64 \
    --json "$OUT/bench-$1.json" | tee "$WORK/bench-$1.md"
  return "${PIPESTATUS[0]}"
}
export -f bench
run_step c1-decode-demo-model 180 bench demo-model "$REPO/configs/demo-model"
if [ $have_mixtral -eq 0 ]; then
  run_step c2-decode-mixtral-1b 240 bench mixtral-1b "$MIXTRAL"
else
  skip_step c2-decode-mixtral-1b "no checkpoint: b0 failed"
fi

write_summary
[ $FAILED -eq 0 ] && say "all steps passed" || say "some steps FAILED: summary.md says which"
exit $FAILED
