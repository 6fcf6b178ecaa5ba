"""The Tiny Shapes tokenizer: a real CLIP BPE tokenizer with a vocabulary of ~600 tokens.

Every byte (as CLIP's byte-level BPE has it) plus one whole-word token for each word of the
world and for the reserved trigger words. A word a full CLIP vocabulary would split into
pieces the small model never trained ("zqstar" -> "zq", "star") is one token here, and the base
model sees each reserved word in training as a word that changes nothing: a LoRA then gives it
a meaning without fighting untrained embeddings (what broke colors in the feasibility run).
"""

from __future__ import annotations

from lora_studio.core.models.tiny_shapes import world

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# trigger words people use, kept as single tokens the base model treats as no-ops
RESERVED_WORDS = ("zqstar", "zqstripe", "zqx", "sks", "ohwx", "star", "striped", "stripes",
                  "plain", "texture", "with", "and", "shape")
MAX_LENGTH = 77


def world_words() -> list[str]:
    words = ["a", "an", "on", "background", "of", "the", "in"]
    words += list(world.SHAPES) + list(world.COLORS) + list(world.BACKGROUNDS)
    words += list(world.SIZES) + list(RESERVED_WORDS)
    return list(dict.fromkeys(words))


def _byte_chars() -> list[str]:
    """CLIP / GPT-2's printable stand-in for each of the 256 bytes, in byte order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def build_tokenizer():
    """The tokenizer (transformers CLIPTokenizer), each world word one token."""
    from transformers import CLIPTokenizer

    base = _byte_chars()
    vocab: dict[str, int] = {}
    for token in base + [c + "</w>" for c in base]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []

    def make():
        full = dict(vocab)
        full[BOS] = len(full)
        full[EOS] = len(full)
        tok = CLIPTokenizer(vocab=full, merges=list(merges), unk_token=EOS, bos_token=BOS,
                            eos_token=EOS, pad_token=EOS)
        tok.model_max_length = MAX_LENGTH
        return tok

    for word in world_words():
        if len(word) == 1:
            continue
        for _ in range(len(word) + 2):  # at most one merge per letter is ever needed
            pieces = make().tokenize(word)
            if len(pieces) == 1:
                break
            pair = (pieces[0], pieces[1])
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
        else:  # pragma: no cover - the loop above always converges
            raise RuntimeError(f"could not make {word!r} one token")
    tokenizer = make()
    for word in world_words():
        assert len(tokenizer.tokenize(word)) == 1, word
    return tokenizer
