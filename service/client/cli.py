"""`seqserve`: call a seqserve server from the shell.

    seqserve [--target HOST:PORT] [--json] sentiment TEXT... [--no-tokens]
    seqserve classify TEXT... [--model NAME] [--no-tokens]
    seqserve translate TEXT... [--model NAME] [--beam N] [--n-best N] [--stream] [--alignment-png FILE]
    seqserve ner TEXT... [--model NAME] [--tokens]
    seqserve document TEXT... [--model NAME] [--no-tokens]
        (each TEXT one document; sentences split by docs/han.md's rule)
    seqserve recommend [ITEM...] [-k N] [--exclude-seen] [--no-attention] [--model NAME]
        (ITEM: a title, #ID or @KEY, oldest first)
    seqserve models
    seqserve health [--service NAME]

Exit status: 0 on success, 1 when `health` finds the server not SERVING, 2 for a gRPC error (printed
as `error: CODE: message` on stderr) or a usage error.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from seqserve.v1 import classification_pb2, document_pb2, models_pb2, ner_pb2, sentiment_pb2, translation_pb2

from service.client.alignment_plot import PlottingUnavailableError, save_alignment_png
from service.client.channel import Connection
from service.client.client import SeqserveClient
from service.client.recommend_output import parse_history, print_recommendations

DEFAULT_TARGET = "127.0.0.1:50051"
TOP_TOKENS = 5
# Metrics worth a line in the human-readable listing; --json has all of them.
HEADLINE_METRICS = ("macro_f1", "accuracy", "bleu", "chrf", "sampled_hr@10", "sampled_ndcg@10")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqserve", description="Call a seqserve gRPC server.")
    parser.add_argument("--target", default=os.environ.get("SEQSERVE_TARGET", DEFAULT_TARGET),
                        help="server address HOST:PORT (env SEQSERVE_TARGET; default %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    security = parser.add_argument_group("TLS and auth (plaintext and no token by default)")
    security.add_argument("--tls", action="store_true", help="TLS, trusting the system's CA certificates")
    security.add_argument("--tls-ca", type=pathlib.Path, default=None, metavar="PEM",
                          help="TLS, trusting this CA certificate (the one that signed the server's)")
    security.add_argument("--tls-cert", type=pathlib.Path, default=None, metavar="PEM",
                          help="client certificate for mutual TLS (with --tls-key)")
    security.add_argument("--tls-key", type=pathlib.Path, default=None, metavar="PEM", help="its private key")
    security.add_argument("--tls-server-name", default=None, metavar="NAME",
                          help="check the server certificate against NAME instead of the target host")
    security.add_argument("--token-file", type=pathlib.Path, default=None, metavar="FILE",
                          help="send the bearer token in FILE with every call (env SEQSERVE_TOKEN: the token)")
    commands = parser.add_subparsers(dest="command", required=True)
    sentiment = commands.add_parser("sentiment", help="classify the sentiment of one or more texts")
    sentiment.add_argument("texts", nargs="+", metavar="TEXT")
    sentiment.add_argument("--model", default="", help="model name (default: the server's default)")
    sentiment.add_argument("--no-tokens", action="store_true", help="label and probabilities only, no token attention")
    classify = commands.add_parser("classify", help="label texts with a classification model (your own labels)")
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument("--model", default="", help="model name (default: the server's default classifier)")
    classify.add_argument("--no-tokens", action="store_true", help="label and probabilities only, no token attention")
    translate = commands.add_parser("translate", help="translate one or more texts (English -> French)")
    translate.add_argument("texts", nargs="+", metavar="TEXT")
    translate.add_argument("--model", default="", help="transformer or seq2seq-attention (default: the server's)")
    translate.add_argument("--beam", type=int, default=0, help="beam size; 1 = greedy (default: the model's)")
    translate.add_argument("--n-best", type=int, default=0, help="hypotheses per text (default 1)")
    translate.add_argument("--max-output-tokens", type=int, default=0, help="default: from the source length")
    translate.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha (default: the model's)")
    translate.add_argument("--stream", action="store_true", help="greedy, printed as it is produced (one text)")
    translate.add_argument("--alignment-png", type=pathlib.Path, default=None, metavar="FILE",
                           help="write the attention alignment as a PNG heatmap (needs matplotlib); with "
                                "several texts, FILE-1.png, FILE-2.png, ...")
    ner = commands.add_parser("ner", help="find named entities (person, geo-loc, company, ...) in texts")
    ner.add_argument("texts", nargs="+", metavar="TEXT")
    ner.add_argument("--model", default="", help="model name (default: the server's default)")
    ner.add_argument("--tokens", action="store_true", help="also show every word with its BIO tag")
    document = commands.add_parser("document", help="sentiment of whole documents, sentence by sentence")
    document.add_argument("texts", nargs="+", metavar="TEXT")
    document.add_argument("--model", default="", help="model name (default: the server's default)")
    document.add_argument("--no-tokens", action="store_true", help="no word attention inside the sentences")
    recommend = commands.add_parser("recommend", help="recommend items (movies, or a model's own catalogue) "
                                                      "after a history of them")
    recommend.add_argument("history", nargs="*", metavar="ITEM",
                           help='a title ("Toy Story (1995)"), #ID, or @KEY (the item\'s own id, e.g. '
                                '@sku-0042), oldest first; none: the most popular')
    recommend.add_argument("-k", type=int, default=None, help="how many items (default 10)")
    recommend.add_argument("--exclude-seen", action="store_true", help="never recommend a history item")
    recommend.add_argument("--model", default="", help="model name (default: the server's default)")
    recommend.add_argument("--no-attention", action="store_true", help="no attention over the history")
    commands.add_parser("models", help="list the loaded models")
    health = commands.add_parser("health", help="check the server's health")
    health.add_argument("--service", default="", help='one service, e.g. seqserve.v1.Sentiment (default: "")')
    return parser


def to_json(message: Message) -> str:
    # Proto field names (file_sha256, not fileSha256) and zero values (start 0) printed, so the JSON
    # reads like the .proto and every token has all four fields.
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _shorten(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_sentiment(
    texts: Sequence[str],
    response: sentiment_pb2.AnalyzeSentimentResponse | classification_pb2.ClassifyResponse,
    out: TextIO,
) -> None:
    """Label, probabilities and the most attended tokens per text (a Classify answer has the same shape)."""
    results: Sequence[sentiment_pb2.SentimentResult | classification_pb2.ClassifyResult] = response.results
    for number, (text, result) in enumerate(zip(texts, results, strict=True), start=1):
        print(f"[{number}] {_shorten(text)}", file=out)
        probabilities = "  ".join(f"{p.label} {p.probability:.3f}" for p in result.probabilities)
        print(f"    {result.label:<10} {probabilities}", file=out)
        note = "  (text truncated)" if result.truncated else ""
        if result.tokens:  # none when asked without (--no-tokens)
            top = sorted(result.tokens, key=lambda t: t.weight, reverse=True)[:TOP_TOKENS]
            attention = "  ".join(f"{text[t.start:t.end] or t.token} {t.weight:.2f}" for t in top)
            print(f"    attention  {attention}{note}", file=out)
        elif note:
            print(f"   {note}", file=out)
    print(f"model {response.model.name} version {response.model.version}", file=out)


def print_entities(texts: Sequence[str], response: ner_pb2.RecognizeEntitiesResponse, out: TextIO) -> None:
    for number, (text, result) in enumerate(zip(texts, response.results, strict=True), start=1):
        print(f"[{number}] {_shorten(text)}", file=out)
        if not result.entities:
            print("    (no entities)", file=out)
        for entity in result.entities:
            print(f"    {entity.type:<12} {entity.text!r:<30} chars {entity.start}-{entity.end}  "
                  f"confidence {entity.confidence:.2f}", file=out)
        if result.tokens:
            print("    tokens  " + " ".join(f"{t.token}/{t.tag}" for t in result.tokens), file=out)
        if result.truncated:
            print("    (text truncated: later words were not tagged)", file=out)
    print(f"model {response.model.name} version {response.model.version}", file=out)


def print_documents(texts: Sequence[str], response: document_pb2.AnalyzeDocumentResponse, out: TextIO) -> None:
    """The document's label, then each sentence with its weight, label and most attended words."""
    for number, (text, result) in enumerate(zip(texts, response.results, strict=True), start=1):
        probabilities = "  ".join(f"{p.label} {p.probability:.3f}" for p in result.probabilities)
        print(f"[{number}] {result.label:<10} {probabilities}", file=out)
        for sentence in result.sentences:
            top = sorted(sentence.tokens, key=lambda t: t.weight, reverse=True)[:TOP_TOKENS]
            words = "  ".join(f"{text[t.start:t.end] or t.token} {t.weight:.2f}" for t in top)
            shown = _shorten(text[sentence.start : sentence.end], 60)
            print(f"    weight {sentence.weight:.2f}  {sentence.label:<10} {shown}", file=out)
            if sentence.tokens:  # none when asked without (--no-tokens)
                print(f"        words  {words}", file=out)
    print(f"model {response.model.name} version {response.model.version}", file=out)


def print_translations(
    texts: Sequence[str], response: translation_pb2.TranslateResponse, out: TextIO
) -> None:
    for number, (text, result) in enumerate(zip(texts, response.results, strict=True), start=1):
        print(f"[{number}] {_shorten(text)}", file=out)
        for rank, hypothesis in enumerate(result.hypotheses, start=1):
            marker = "->" if rank == 1 else f"{rank}."
            # The confidence is the best hypothesis's: shown on its line.
            extra = _confidence_note(result) if rank == 1 else ""
            print(f"    {marker} {hypothesis.text}  (score {hypothesis.score:.3f}{extra})", file=out)
    print(f"model {response.model.name} version {response.model.version}", file=out)


def _confidence_note(message: translation_pb2.TranslationResult | translation_pb2.TranslatePiece) -> str:
    """", confidence 0.83" (", LOW" appended when the server flagged it); "" for a model without one."""
    if not message.HasField("confidence"):
        return ""
    return f", confidence {message.confidence:.2f}" + (", LOW" if message.low_confidence else "")


def alignment_paths(path: pathlib.Path, count: int) -> list[pathlib.Path]:
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{n}{path.suffix or '.png'}") for n in range(1, count + 1)]


def run_translate(client: SeqserveClient, args: argparse.Namespace, out: TextIO) -> Message:
    if args.stream:
        if len(args.texts) != 1 or args.alignment_png is not None:
            raise UsageError("--stream takes exactly one text and no --alignment-png")
        last = translation_pb2.TranslatePiece()
        for piece in client.translate_stream(args.texts[0], model=args.model, max_output_tokens=args.max_output_tokens):
            print(piece.text, end="", file=out, flush=True)
            last = piece
        print(file=out)
        if last.HasField("confidence"):
            print(f"({_confidence_note(last)[2:]})", file=out)
        return last
    response = client.translate(args.texts, model=args.model, beam_size=args.beam, n_best=args.n_best,
                                max_output_tokens=args.max_output_tokens, length_penalty=args.length_penalty,
                                alignment=args.alignment_png is not None)
    if args.alignment_png is not None:
        for path, text, result in zip(alignment_paths(args.alignment_png, len(args.texts)), args.texts,
                                      response.results, strict=True):
            save_alignment_png(result.alignment, path, title=_shorten(text, 90))
            print(f"alignment written to {path}", file=sys.stderr)
    if not args.json:
        print_translations(args.texts, response, out)
    return response


class UsageError(Exception):
    """A bad combination of options, reported like a gRPC error (exit 2)."""


def headline_metrics(metrics: Mapping[str, float]) -> list[str]:
    """The overall ("pooled") macro-F1 and accuracy when the manifest has them, else every one."""
    keys = sorted(k for k in metrics if k.rsplit(".", 1)[-1] in HEADLINE_METRICS)
    pooled = [k for k in keys if "pooled" in k.split(".")]
    return pooled or keys


def print_models(response: models_pb2.ListModelsResponse, out: TextIO) -> None:
    if not response.models:
        print("no models loaded", file=out)
    for info in response.models:
        default = "  (default)" if info.is_default else ""
        print(f"{info.name}  version {info.version}  task {info.task}{default}", file=out)
        if info.labels:
            print(f"    labels   {', '.join(info.labels)}", file=out)
        for key in headline_metrics(info.metrics):
            print(f"    {key} {info.metrics[key]:.4f}", file=out)


def connection(args: argparse.Namespace) -> Connection:
    """The TLS and token settings from the flags; unreadable files are usage errors."""
    token = os.environ.get("SEQSERVE_TOKEN") or None
    try:
        if args.token_file is not None:
            token = args.token_file.read_text("utf-8").strip()
        for flag, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
            if path is not None and not path.is_file():
                raise UsageError(f"{flag}: {path} is not a readable file")
    except OSError as exc:
        raise UsageError(f"--token-file: {exc.strerror}: {args.token_file}") from None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together (mutual TLS)")
    return Connection(tls=args.tls, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, token=token,
                      server_name=args.tls_server_name)


def run(args: argparse.Namespace, out: TextIO) -> int:
    with SeqserveClient(args.target, timeout=args.timeout, connection=connection(args)) as client:
        response: Message
        if args.command == "sentiment":
            response = client.sentiment(args.texts, model=args.model, omit_tokens=args.no_tokens)
            if not args.json:
                print_sentiment(args.texts, response, out)
        elif args.command == "classify":
            response = client.classify(args.texts, model=args.model, omit_tokens=args.no_tokens)
            if not args.json:
                print_sentiment(args.texts, response, out)
        elif args.command == "ner":
            response = client.ner(args.texts, model=args.model, include_tokens=args.tokens)
            if not args.json:
                print_entities(args.texts, response, out)
        elif args.command == "document":
            response = client.document(args.texts, model=args.model, omit_tokens=args.no_tokens)
            if not args.json:
                print_documents(args.texts, response, out)
        elif args.command == "recommend":
            response = client.recommend(parse_history(args.history), k=args.k, exclude_seen=args.exclude_seen,
                                        model=args.model, omit_attention=args.no_attention)
            if not args.json:
                print_recommendations(response, len(args.history), out)
        elif args.command == "translate":
            response = run_translate(client, args, out)
            if args.stream:
                return 0
        elif args.command == "models":
            response = client.list_models()
            if not args.json:
                print_models(response, out)
        else:
            health = client.health(args.service)
            response = health
            if not args.json:
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(health.status), file=out)
        if args.json:
            print(to_json(response), file=out)
        if args.command == "health" and health.status != health_pb2.HealthCheckResponse.SERVING:
            return 1
    return 0


BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a filter stopped by a closed pipe


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = run(args, sys.stdout)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) surfaces here, not at exit
        return code
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly like any Unix filter. Point stdout at /dev/null so the
        # interpreter's own flush at exit does not raise again (the recipe in Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except (PlottingUnavailableError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        # Every grpc.RpcError raised by a sync unary call is also a grpc.Call with code and details.
        status = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or "(no details)"
        print(f"error: {status}: {details}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
