"""The one error of the optional "vllm" expert kernel, shared by its CPU and CUDA paths."""

from switchyard.configs.model import ConfigError

README_SECTION = 'the README section "vLLM kernel (optional)"'
GPU_DOC = "docs/gpu.md"


class VllmUnavailable(ConfigError):
    """expert_kernel "vllm" asked for where vLLM's op for the experts' device cannot run."""
