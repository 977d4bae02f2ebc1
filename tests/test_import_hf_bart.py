"""python -m training.import_hf --task translation on a BART: a tiny random BartForConditionalGeneration built
from a config, with a byte-level BPE tokenizer.json trained here, imported beside a committed model and served
by the real server. Its sources are <s> text </s> (manifest decoding.source_prefix_ids), its first output token
is forced to <s> as bart-large's generation config does, and greedy Translate equals torch `generate`."""

from __future__ import annotations

import json
import pathlib

import grpc
import pytest
import torch
from seqserve.v1 import translation_pb2, translation_pb2_grpc
from test_import_hf import model_dir_beside, refusal
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from training.import_hf import parse, run

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's ids 0..4
BOS, PAD, EOS = 0, 1, 2
# What the tokenizer learns from: a language pair the project never served (English -> ship's log).
CORPUS = ["the cutty sark sailed from greenwich to shanghai", "where is the harbour master?",
          "wind from the north west, all sails set", "thank you, captain", "the tea clipper is home"] * 4


def byte_level_tokenizer(post_processor: processors.PostProcessor | None = None) -> Tokenizer:
    """Byte-level BPE as BART ships it: every byte is in the alphabet, so no text has unknown tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer.post_processor = post_processor or processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS))
    return tokenizer


def tiny_bart(directory: pathlib.Path, tokenizer: Tokenizer | None = None) -> pathlib.Path:
    """A 2+2-layer BART whose generation config forces <s> first (as bart-large's) and sets what the
    served decoding does not apply (n-gram blocking, forced EOS at max_length)."""
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    tokenizer = tokenizer or byte_level_tokenizer()
    torch.manual_seed(0)
    # scale_embedding: BART scales inside its embedding module; the export must not scale a second time.
    config = BartConfig(vocab_size=tokenizer.get_vocab_size(), d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=128, scale_embedding=True, bos_token_id=BOS, pad_token_id=PAD,
                        eos_token_id=EOS, decoder_start_token_id=EOS, forced_eos_token_id=EOS)
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(decoder_start_token_id=EOS, bos_token_id=BOS, eos_token_id=EOS,
                                               pad_token_id=PAD, forced_bos_token_id=BOS, forced_eos_token_id=EOS,
                                               no_repeat_ngram_size=3, num_beams=4, max_length=128)
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_a_tokenizer_that_builds_other_sources_than_bart_is_refused(tmp_path, capsys) -> None:
    """Without <s> in front, the served sources would not be what the BART was trained on."""
    eos_only = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    checkpoint = tiny_bart(tmp_path / "bart", byte_level_tokenizer(eos_only))
    message = refusal([str(checkpoint), "--task", "translation", "--name", "x", "--out", str(tmp_path / "out"),
                       "--source-language", "en", "--target-language", "log"], capsys)
    assert "tokenizer.json: its post-processor encodes" in message and "prefix [0]" in message
    assert not (tmp_path / "out" / "x").exists()


@pytest.mark.slow
def test_an_imported_bart_translates_as_its_torch_model_does(tmp_path, start_server) -> None:
    from transformers import BartForConditionalGeneration

    repository = model_dir_beside("transformer", tmp_path / "models")
    checkpoint = tiny_bart(tmp_path / "bart")
    version = run(parse([str(checkpoint), "--task", "translation", "--name", "en-log", "--out", str(repository),
                         "--source-language", "en", "--target-language", "log"]))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["decoding"]["source_prefix_ids"] == [BOS]
    assert manifest["decoding"]["bos_id"] == EOS  # BART's decoder starts from </s>
    assert manifest["import"]["model_type"] == "bart" and manifest["import"]["forced_first_token"] == BOS
    assert manifest["import"]["generation_settings_not_applied"] == {"no_repeat_ngram_size": 3,
                                                                      "forced_eos_token_id": EOS}
    assert manifest["export_parity"]["greedy_tokens_equal"]
    assert manifest["export_parity"]["max_abs_log_prob_difference"] <= 1e-4

    # The last text has characters the tokenizer never saw: byte-level BPE spells them in bytes.
    texts = ["the cutty sark sailed from greenwich", "where is the harbour master?", "Zürich → 東京 🚢"]
    steps = 12
    model = BartForConditionalGeneration.from_pretrained(str(checkpoint)).eval()
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    assert tokenizer.token_to_id("<unk>") not in tokenizer.encode(texts[2]).ids
    expected = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids])  # <s> ... </s>, as BartTokenizer builds them
        assert ids[0, 0] == BOS and ids[0, -1] == EOS
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=1, do_sample=False,
                                 max_new_tokens=steps, no_repeat_ngram_size=0, forced_eos_token_id=None)[0, 1:]
        out = out.tolist()
        expected.append([tokenizer.id_to_token(t) for t in (out[: out.index(EOS)] if EOS in out else out)])
    assert all(tokens[0] == "<s>" for tokens in expected)  # forced BOS, then the model's own choice
    assert all(len(tokens) > 1 for tokens in expected)

    server = start_server(repository)
    with grpc.insecure_channel(server.target) as channel:
        stub = translation_pb2_grpc.TranslationStub(channel)
        greedy = stub.Translate(translation_pb2.TranslateRequest(
            texts=texts, model="en-log", options=translation_pb2.DecodingOptions(
                beam_size=1, max_output_tokens=steps, return_alignment=True)), timeout=60)
        assert greedy.model.name == "en-log"
        assert [list(r.hypotheses[0].tokens) for r in greedy.results] == expected
        columns = list(greedy.results[2].alignment.source_tokens)
        assert columns == ["<s>", *tokenizer.encode(texts[2], add_special_tokens=False).tokens, "</s>"]
        assert greedy.results[2].source_tokens == len(columns)
        # The limit counts <s> too: 127 subwords + <s> + </s> exceed the 128 source tokens of the model.
        too_long = "🚢" * 31 + "xxx"
        assert len(tokenizer.encode(too_long, add_special_tokens=False).ids) == 127
        with pytest.raises(grpc.RpcError) as refused:
            stub.Translate(translation_pb2.TranslateRequest(texts=[too_long], model="en-log"), timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "texts[0]: 129 source tokens exceeds the limit of 128" in refused.value.details()
        beam = stub.Translate(translation_pb2.TranslateRequest(texts=texts[:1], model="en-log", options=(
            translation_pb2.DecodingOptions(beam_size=3, n_best=2, max_output_tokens=steps))), timeout=60)
        assert len(beam.results[0].hypotheses) == 2
        assert all(h.tokens[0] == "<s>" for h in beam.results[0].hypotheses)  # forced in beam search too
        pieces = list(stub.TranslateStream(translation_pb2.TranslateStreamRequest(
            text=texts[2], model="en-log", max_output_tokens=steps), timeout=60))
        assert [p.token for p in pieces] == expected[2]
        committed = stub.Translate(translation_pb2.TranslateRequest(texts=["Jesus wept."], model="transformer"),
                                   timeout=60)
        assert committed.model.name == "transformer" and committed.results[0].hypotheses[0].text
