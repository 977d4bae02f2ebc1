"""Issue #16 item 3, measured from outside: a heavy Translate call against a real server.

Starts `python -m service` on the committed models, keeps light clients (one short greedy Translate each,
back to back) running, sends the heavy call(s) (64 texts of ~255 source tokens, beam 16, 256 output
tokens by default) with a client deadline, and reports: the heavy call's status and time, how long the
server kept its CPU busy after the heavy call ended, its peak RSS (VmHWM) and RSS before and after, and
the light clients' latencies during the heavy call. The server is stopped at the end.

    .venv/bin/python -m bench.translation_heavy_call [--beam 16] [--n-best 1] [--alignment] [--deadline 10]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc
from seqserve.v1 import translation_pb2, translation_pb2_grpc
from tokenizers import Tokenizer

from bench.servers import REPO, free_port

LIGHT_TEXT = "Jesus wept."
VERSE = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
         "and darkness was upon the face of the deep. ")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of the server, in KiB."""
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmRSS", "VmHWM"))}


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks of 1/100 s


def long_text(model_dir: pathlib.Path, tokens: int) -> str:
    """A text of `tokens` subwords (+ [EOS] makes tokens + 1) of the model's tokenizer, under 2,000 characters."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = VERSE * 20
    encoding = tokenizer.encode(text, add_special_tokens=False)
    end = encoding.offsets[tokens - 1][1]
    return text[:end]


@dataclass
class LightClients:
    target: str
    count: int
    stop: threading.Event = field(default_factory=threading.Event)
    samples: list[tuple[float, float, str]] = field(default_factory=list)  # (start, seconds, code)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(self.count):
            thread = threading.Thread(target=self._loop, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = translation_pb2_grpc.TranslationStub(channel)
            request = translation_pb2.TranslateRequest(
                texts=[LIGHT_TEXT], model="transformer", options=translation_pb2.DecodingOptions(beam_size=1))
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    stub.Translate(request, timeout=30)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                self.samples.append((start, time.monotonic() - start, code))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--source-tokens", type=int, default=254)
    parser.add_argument("--beam", type=int, default=16)
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--max-output-tokens", type=int, default=256)
    parser.add_argument("--alignment", action="store_true")
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--heavy-calls", type=int, default=1, help="concurrent heavy calls")
    parser.add_argument("--models", default="transformer", help="comma-separated; heavy call i goes to model i mod n")
    parser.add_argument("--light-clients", type=int, default=2)
    parser.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable)")
    args = parser.parse_args()

    port, metrics_port = free_port(), free_port()
    log_path = pathlib.Path("/tmp") / f"heavy-call-server-{port}.log"
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", str(metrics_port), "--model-dir", str(REPO / "exported"), *args.server_arg]
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(command, cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                                  stdout=log_file, stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    try:
        text = long_text(REPO / "exported" / "transformer" / "1", args.source_tokens)
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            stub = translation_pb2_grpc.TranslationStub(channel)
            light = translation_pb2.TranslateRequest(texts=[LIGHT_TEXT], model="transformer")
            for _ in range(120):  # SERVING once loaded and warmed up
                try:
                    stub.Translate(light, timeout=5)
                    break
                except grpc.RpcError:
                    time.sleep(0.5)
            before = proc_status(server.pid)
            clients = LightClients(target, args.light_clients)
            clients.start()
            time.sleep(2.0)  # light-only latencies first
            options = translation_pb2.DecodingOptions(beam_size=args.beam, n_best=args.n_best,
                                                      max_output_tokens=args.max_output_tokens,
                                                      return_alignment=args.alignment)
            models = args.models.split(",")
            heavy_start = time.monotonic()
            results: list[tuple[str, float]] = []

            def heavy(model: str) -> None:
                request = translation_pb2.TranslateRequest(texts=[text] * args.texts, model=model, options=options)
                start = time.monotonic()
                try:
                    stub.Translate(request, timeout=args.deadline)
                    results.append(("OK", time.monotonic() - start))
                except grpc.RpcError as error:
                    results.append((f"{error.code().name}: {(error.details() or '')[:160]}", time.monotonic() - start))

            heavy_threads = [threading.Thread(target=heavy, args=(models[i % len(models)],))
                             for i in range(args.heavy_calls)]
            for thread in heavy_threads:
                thread.start()
            peak = 0
            while any(t.is_alive() for t in heavy_threads):
                peak = max(peak, proc_status(server.pid)["VmRSS"])
                time.sleep(0.05)
            heavy_end = time.monotonic()
            time.sleep(1.0)
            clients.finish()
            # How long the server keeps a core busy after the heavy call ended (decoding for nobody).
            previous, busy_until = cpu_seconds(server.pid), time.monotonic()
            while time.monotonic() - heavy_end < 300:
                time.sleep(1.0)
                current = cpu_seconds(server.pid)
                if current - previous < 0.3:  # under 30% of a core: idle (health checks, metrics)
                    break
                previous, busy_until = current, time.monotonic()
            after_idle = proc_status(server.pid)
            time.sleep(3.0)
            after = proc_status(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=300)  # a decode still running holds the process until it ends
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def latencies(start: float, end: float) -> dict[str, float | int]:
        window = [s for s in clients.samples if start <= s[0] < end]
        seconds = sorted(s[1] for s in window)
        failed = sum(1 for s in window if s[2] != "OK")
        if not seconds:
            return {"calls": 0}
        return {"calls": len(seconds), "failed": failed, "p50_ms": round(statistics.median(seconds) * 1000, 1),
                "max_ms": round(seconds[-1] * 1000, 1)}

    report = {
        "heavy": {"texts": args.texts, "source_tokens": args.source_tokens + 1, "beam": args.beam,
                  "n_best": args.n_best, "max_output_tokens": args.max_output_tokens, "alignment": args.alignment,
                  "deadline_s": args.deadline, "calls": args.heavy_calls, "models": args.models,
                  "server_args": args.server_arg},
        "heavy_results": [(code, round(seconds, 2)) for code, seconds in results],
        "server_busy_after_heavy_s": round(max(0.0, busy_until - heavy_end), 1),
        "rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "rss_peak_sampled_mib": round(peak / 1024, 1),
        "vmhwm_mib": round(after["VmHWM"] / 1024, 1),
        "rss_when_idle_mib": round(after_idle["VmRSS"] / 1024, 1),
        "rss_3s_later_mib": round(after["VmRSS"] / 1024, 1),
        "light_before_heavy": latencies(0.0, heavy_start),
        "light_during_heavy": latencies(heavy_start, heavy_end),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
