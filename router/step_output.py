"""What a step emits for a sequence: its new text, cut at a stop string, and held back while a stop string or a
UTF-8 character may still complete."""

from __future__ import annotations

from switchyard.router.sequence import RequestOutput, Sequence
from switchyard.router.tokenizer import Tokenizer


def append_text(seq: Sequence, tokenizer: Tokenizer | None) -> None:
    """Detokenize the sequence's new tokens onto its text; a stop string that completes cuts the text there and
    finishes it."""
    if tokenizer is None:
        return
    decode, ids = tokenizer.decode, seq.output_ids
    new = seq.detokenizer.step(decode, ids, final=seq.finished)
    if not new:
        return
    searched_from = len(seq.text)
    seq.text += new
    for stop in seq.params.stop:  # only where the new text could complete a stop string
        at = seq.text.find(stop, max(0, searched_from - len(stop) + 1))
        if at != -1:
            seq.text, seq.finish_reason = seq.text[:at], "stop"


def step_output(seq: Sequence) -> RequestOutput:
    """What this step emits for the sequence: the text and logprobs not emitted yet."""
    # Hold back text that may still become a stop string or is an incomplete UTF-8 character.
    safe = len(seq.text)
    if not seq.finished:
        if seq.params.stop:
            safe -= max(len(s) for s in seq.params.stop) - 1
        if seq.text.endswith("\ufffd"):
            safe = min(safe, len(seq.text) - 1)
    safe = max(safe, seq.emitted)
    delta = seq.text[seq.emitted:safe]
    seq.emitted = safe
    logprobs = tuple(seq.logprobs[seq.emitted_logprobs:])
    seq.emitted_logprobs = len(seq.logprobs)
    prompt_logprobs = None
    if seq.prompt_logprobs and seq.prompt_done and not seq.emitted_prompt_logprobs:
        prompt_logprobs, seq.emitted_prompt_logprobs = tuple(seq.prompt_logprobs), True
    return RequestOutput(
        request_id=seq.request_id, delta_text=delta, text=seq.text, token_ids=tuple(seq.output_ids),
        prompt_tokens=len(seq.prompt_ids), finished=seq.finished, finish_reason=seq.finish_reason,
        error=seq.error,
        time_to_first_token=None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time,
        latency=None if seq.finish_time is None else seq.finish_time - seq.arrival_time,
        logprobs=logprobs, prompt_logprobs=prompt_logprobs)
