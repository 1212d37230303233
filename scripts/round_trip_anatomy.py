"""Where one MoE layer's round trip to the expert groups spends its time: a Compiled Graph taken apart.

    python scripts/round_trip_anatomy.py [--groups 2] [--tokens 1 --tokens 16 --tokens 64]

Each row is one piece of `switchyard bench round-trip`'s compiled-graph figure, measured alone, at each token
count (median of --samples calls, each the mean of --repeats):
  pickle            ExpertRequest and ExpertResponse of T tokens through pickle protocol 5, out-of-band
                    buffers (what a channel write and read cost beyond copying bytes)
  experts           the layer's routed experts computed in this process, one thread (the groups' work)
  graph, empty      a Compiled Graph to `--groups` bare actors, one float in and out: channel and scheduling only
  graph, echo       the same graph carrying the real messages (request in, a response of T rows back)
  graph, 1 actor    the echo graph with one actor, so the second process's share shows
  pipes, echo       the echo messages to `--groups` plain processes over OS pipes, each side blocking in read()
                    until its message is there: the hand-off when nobody spins (a Compiled Graph's reader spins
                    with sched_yield, so with more processes than cores a reader sees a write a time slice later)
The actors are plain Ray actors with 0.5 CPU each, as the expert-group replicas; nothing here imports the
project's transports.
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import time

import torch

from switchyard.experts.messages import ExpertRequest, ExpertResponse


def timed(fn, samples: int, repeats: int) -> float:
    """Median over `samples` of the mean ms of `repeats` calls (after one warm call)."""
    fn()
    means = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        means.append(1000 * (time.perf_counter() - start) / repeats)
    return statistics.median(means)


def request(tokens: int, hidden: int, top_k: int) -> ExpertRequest:
    return ExpertRequest(0, torch.randn(tokens, hidden), torch.randint(0, 8, (tokens, top_k)),
                         torch.rand(tokens, top_k))


def pickle_round(message) -> None:
    buffers = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    copies = [bytes(b.raw()) for b in buffers]  # a channel copies each buffer into shared memory once
    pickle.loads(data, buffers=copies)


def echo_over_pipe(conn) -> None:
    """A process at the far end of a pipe: answers each message as the echo actors do, until the pipe closes."""
    torch.set_num_threads(1)
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        reply = ExpertResponse(message.layer, message.hidden) if isinstance(message, ExpertRequest) else message
        conn.send_bytes(pickle.dumps(reply, protocol=5))


def pipes(groups: int):
    """`groups` processes behind pipes, and the call that sends a message to each and reads every answer."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ends = [context.Pipe() for _ in range(groups)]
    workers = [context.Process(target=echo_over_pipe, args=(far,), daemon=True) for _, far in ends]
    for worker in workers:
        worker.start()

    def call(payload):
        data = pickle.dumps(payload, protocol=5)
        for near, _ in ends:
            near.send_bytes(data)
        return [pickle.loads(near.recv_bytes()) for near, _ in ends]

    def close():
        for near, _ in ends:
            near.close()
        for worker in workers:
            worker.join(timeout=5)

    return call, close


def graph(actors, payload):
    import ray
    from ray.dag import InputNode, MultiOutputNode

    with InputNode() as inputs:
        dag = MultiOutputNode([a.echo.bind(inputs) for a in actors])
    compiled = dag.experimental_compile()
    return compiled, lambda: ray.get(compiled.execute(payload))  # one ref per actor (MultiOutputNode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--tokens", type=int, action="append")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    tokens = sorted(set(args.tokens or [1, 16, 64]))
    torch.set_num_threads(1)

    import ray
    from switchyard.cluster.bench.decode import time_round_trip
    from switchyard.configs.defaults import resolve_model
    from switchyard.configs.engine import EngineConfig
    from switchyard.router.engine import Engine

    engine = Engine.from_pretrained(resolve_model(None), EngineConfig(max_num_seqs=max(tokens), max_model_len=64))
    cfg = engine.model.config
    rows = {"pickle": [], "experts": [], "graph, empty": [], "graph, echo": [], "graph, 1 actor": [],
            "pipes, echo": []}
    for n in tokens:
        message = request(n, cfg.hidden_size, cfg.top_k)
        rows["pickle"].append(timed(lambda: (pickle_round(message), pickle_round(ExpertResponse(0, message.hidden))),
                                    args.samples, args.repeats))
        rows["experts"].append(1000 * statistics.median(
            time_round_trip(engine.experts, engine.model, n, args.repeats) for _ in range(args.samples)))

    @ray.remote(num_cpus=0.5)
    class Echo:
        def echo(self, message):
            if isinstance(message, ExpertRequest):
                return ExpertResponse(message.layer, message.hidden)
            return message

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        actors = [Echo.remote() for _ in range(args.groups)]
        ray.get([a.echo.remote(1.0) for a in actors])
        for name, members, payload_of in (("graph, empty", actors, lambda n: 1.0),
                                          ("graph, echo", actors, lambda n: request(n, cfg.hidden_size, cfg.top_k)),
                                          ("graph, 1 actor", actors[:1],
                                           lambda n: request(n, cfg.hidden_size, cfg.top_k))):
            for n in tokens:
                compiled, call = graph(members, payload_of(n))
                rows[name].append(timed(call, args.samples, args.repeats))
                compiled.teardown()
    finally:
        ray.shutdown()
    call, close = pipes(args.groups)
    try:
        for n in tokens:
            message = request(n, cfg.hidden_size, cfg.top_k)
            rows["pipes, echo"].append(timed(lambda: call(message), args.samples, args.repeats))
    finally:
        close()
    out = io.StringIO()
    print(f"ms per layer; {args.groups} actors; hidden {cfg.hidden_size}, top-{cfg.top_k}", file=out)
    print(f"{'piece':<16}" + "".join(f"{f'{n} tokens':>12}" for n in tokens), file=out)
    for name, values in rows.items():
        print(f"{name:<16}" + "".join(f"{v:>12.3f}" for v in values), file=out)
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main()
