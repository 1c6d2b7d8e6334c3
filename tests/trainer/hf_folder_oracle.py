#!/usr/bin/env python3
"""Hugging Face's side of test_hf_folder: a fine-tune that starts from an HF
model folder and ends in an exported one.

  hf_folder_oracle.py make OUT SOURCE_DIR
      OUT/hf: a small random LlamaForCausalLM (config.json, model.safetensors,
      generation_config.json) with a byte-level BPE tokenizer trained here by
      the `tokenizers` package (tokenizer.json) and a tokenizer_config.json
      with Llama 3's special tokens and a Llama-3-style Jinja chat_template, as
      the published Llama 3 Instruct folders have them. OUT/chat.jsonl: chat
      data. OUT/expected.json: what transformers' AutoTokenizer answers for
      each conversation (apply_chat_template) and for a plain text, and its
      bos/eos ids.
  hf_folder_oracle.py check EXPORT OUT_PREFIX
      Loads EXPORT (written by liger-export) with AutoTokenizer,
      AutoModelForCausalLM and GenerationConfig.from_pretrained, and writes
      OUT_PREFIX.json (the tokenizer's ids for the conversations and the
      text, bos/eos ids, the generation config's) and
      OUT_PREFIX.safetensors (input_ids of the first conversation and the
      model's fp32 logits on them), for the C++ test to compare with ours.
  hf_folder_oracle.py check-tokenizer EXPORT TEXT_FILE OUT_JSON
      Loads only the tokenizer of EXPORT (a SentencePiece export needs the
      `sentencepiece` and `protobuf` packages) and writes its class, bos/eos
      ids and the ids of TEXT_FILE's text (no special tokens added).

Only public APIs of transformers and tokenizers are used.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

# The template of Meta-Llama-3-8B-Instruct's tokenizer_config.json.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "system", "content": "You answer in one short line."},
     {"role": "user", "content": "Who wrote Romeo and Juliet?"},
     {"role": "assistant", "content": "William Shakespeare, around 1595."}],
    [{"role": "user", "content": "Count to five, please."},
     {"role": "assistant", "content": "1, 2, 3, 4, 5."},
     {"role": "user", "content": "And back?"},
     {"role": "assistant", "content": "5, 4, 3, 2, 1 - done!"}],
    [{"role": "user", "content": "Say \"hello\" in French and in Japanese."},
     {"role": "assistant", "content": "Bonjour ; こんにちは."}],
]

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def train_tokenizer(source_dir):
    with open(os.path.join(source_dir, "data", "samples", "tinyshakespeare.txt"), encoding="utf-8") as f:
        corpus = f.read()[:200000]
    chats = " ".join(m["content"] for c in CONVERSATIONS for m in c)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus, chats] * 2, trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def make(out, source_dir):
    hf = os.path.join(out, "hf")
    os.makedirs(hf, exist_ok=True)
    tok = train_tokenizer(source_dir)
    tok.save(os.path.join(hf, "tokenizer.json"))
    bos, eos, eot = (tok.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
    # As the published Llama 3 folders write it (no add_bos_token: the
    # post-processor adds BOS).
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                   "eos_token": "<|end_of_text|>", "chat_template": LLAMA3_TEMPLATE,
                   "clean_up_tokenization_spaces": True, "model_max_length": 1024}, f, indent=2)

    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=112,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=500000.0,
                                      tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos,
                                      initializer_range=0.05)
    torch.manual_seed(11)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(hf)
    # Llama 3 Instruct's generation_config.json: sampling defaults and both stop tokens.
    GenerationConfig(bos_token_id=bos, eos_token_id=[eos, eot], do_sample=True, temperature=0.6,
                     top_p=0.9).save_pretrained(hf)

    with open(os.path.join(out, "chat.jsonl"), "w", encoding="utf-8") as f:
        for i in range(8):
            f.write(json.dumps({"messages": CONVERSATIONS[i % len(CONVERSATIONS)]}, ensure_ascii=False) + "\n")
    expected = answers(AutoTokenizer.from_pretrained(hf))
    expected["text"] = TEXT
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"made {hf}: vocab {tok.get_vocab_size()}, bos {bos}, eos {eos}, eot {eot}")


def chat_ids(tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    if not isinstance(ids, list):  # transformers 5 may answer a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def answers(tokenizer):
    return {"chat_ids": [chat_ids(tokenizer, c) for c in CONVERSATIONS],
            "text_ids": tokenizer(TEXT, add_special_tokens=False)["input_ids"],
            "bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id,
            "eot_id": tokenizer.convert_tokens_to_ids("<|eot_id|>")}


def check(export, out_prefix):
    tokenizer = AutoTokenizer.from_pretrained(export)
    result = answers(tokenizer)
    generation = GenerationConfig.from_pretrained(export)
    eos = generation.eos_token_id
    result["generation"] = {"bos_token_id": generation.bos_token_id,
                            "eos_token_id": eos if isinstance(eos, list) else [eos],
                            "do_sample": generation.do_sample, "temperature": generation.temperature,
                            "top_p": generation.top_p}
    major = int(transformers.__version__.split(".")[0])
    dtype_arg = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(export, attn_implementation="eager", **dtype_arg).eval()
    ids = torch.tensor([result["chat_ids"][0]], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    save_file({"input_ids": ids, "logits": logits.contiguous()}, out_prefix + ".safetensors")
    with open(out_prefix + ".json", "w") as f:
        json.dump(result, f)
    print(f"checked {export}: {type(tokenizer).__name__}, generation eos {result['generation']['eos_token_id']}")


def check_tokenizer(export, text_file, out_json):
    tokenizer = AutoTokenizer.from_pretrained(export)
    with open(text_file, encoding="utf-8") as f:
        text = f.read()
    result = {"class": type(tokenizer).__name__, "bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id,
              "ids": tokenizer(text, add_special_tokens=False)["input_ids"],
              "ids_with_specials": tokenizer("To be", add_special_tokens=True)["input_ids"]}
    with open(out_json, "w") as f:
        json.dump(result, f)
    print(f"{export}: {result['class']}, {len(result['ids'])} ids")


def main(argv):
    if len(argv) == 4 and argv[1] == "make":
        make(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "check":
        check(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "check-tokenizer":
        check_tokenizer(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
