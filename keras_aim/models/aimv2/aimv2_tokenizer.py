"""The CLIP byte-pair tokenizer of the AIMv2 LiT text tower.

Text goes through Hugging Face's `tokenizers` library (a Rust core with
wheels for every platform, maintained with the hub's file formats): it
reads a checkpoint folder's `tokenizer.json` as is, or builds CLIP's
byte-level BPE from `vocab.json` + `merges.txt` (the files of OpenAI's
CLIP vocabulary, 49,408 ids). It needs neither TensorFlow (as keras-hub's
tokenizers do) nor the transformers package, and gives the token ids of
transformers' `CLIPTokenizerFast`: NFC, whitespace runs to one space,
lower case, CLIP's split pattern, byte-level BPE with the `</w>`
end-of-word suffix. (OpenAI's own tokenizer also runs `ftfy` and HTML
unescaping first, which changes only broken or escaped text.)
"""

import json
import os

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
VOCABULARY_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# CLIP's pre-tokenizer split (special tokens are matched before it).
SPLIT_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def _library():
    try:
        import tokenizers
    except ImportError as error:
        raise ImportError(
            "The AIMv2 LiT tokenizer needs the `tokenizers` package (pip "
            "install 'keras-aim[text]' or pip install tokenizers)."
        ) from error
    return tokenizers


def clip_bpe_tokenizer(vocabulary, merges):
    """A `tokenizers.Tokenizer` for CLIP's byte-level BPE.

    Args:
        vocabulary: `{token: id}` (the content of `vocab.json`).
        merges: list of `(left, right)` pairs, highest priority first
            (the lines of `merges.txt` after its `#version` header).
    """
    tokenizers = _library()
    from tokenizers import normalizers
    from tokenizers import pre_tokenizers

    model = tokenizers.models.BPE(
        vocab=dict(vocabulary),
        merges=[tuple(m) for m in merges],
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
        fuse_unk=False,
        unk_token=END_TOKEN,
    )
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                tokenizers.Regex(SPLIT_PATTERN), behavior="removed", invert=True
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = tokenizers.decoders.BPEDecoder(suffix="</w>")
    tokenizer.add_special_tokens([START_TOKEN, END_TOKEN])
    return tokenizer


def _read_merges(path):
    merges = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(
                    f"{path}, line {number}: a merge must be two tokens "
                    f"separated by one space; got {line!r}."
                )
            merges.append(tuple(parts))
    return merges


class AIMv2Tokenizer:
    """Strings to the token ids of the AIMv2 LiT text tower (CLIP's BPE).

    Each text becomes `[<|startoftext|>, ..., <|endoftext|>]`, cut to
    `sequence_length` (the last id kept as `<|endoftext|>`) and padded
    with `pad_token_id`. The text tower pools at the first end-of-text id
    and attends causally, so the padding never changes its output.

    Args:
        tokenizer: a `tokenizers.Tokenizer` (see `from_folder`).
        sequence_length: int, ids per text. Defaults to 77.
        pad_token_id: int. Defaults to 0 (as OpenAI's CLIP pads).

    Example:

    ```python
    tokenizer = keras_aim.AIMv2Tokenizer.from_folder("aimv2-lit-folder")
    token_ids = tokenizer(["a photo of a cat", "a photo of a dog"])
    ```
    """

    def __init__(self, tokenizer, sequence_length=77, pad_token_id=0):
        for name, value, low in (
            ("sequence_length", sequence_length, 2),
            ("pad_token_id", pad_token_id, 0),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < low
            ):
                raise ValueError(
                    f"`{name}` must be an integer >= {low}; got "
                    f"{name}={value!r}."
                )
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.sequence_length = int(sequence_length)
        self.pad_token_id = int(pad_token_id)
        ids = [tokenizer.token_to_id(t) for t in (START_TOKEN, END_TOKEN)]
        if None in ids:
            missing = [
                t for t, i in zip((START_TOKEN, END_TOKEN), ids) if i is None
            ]
            raise ValueError(
                f"The tokenizer has no {missing} token; a CLIP vocabulary "
                f"has both {START_TOKEN} and {END_TOKEN}."
            )
        self.start_token_id, self.end_token_id = ids

    @property
    def vocabulary_size(self):
        """Number of ids (special tokens included)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_folder(cls, folder, sequence_length=77, pad_token_id=0):
        """Reads `tokenizer.json`, else `vocab.json` + `merges.txt`.

        Raises:
            ValueError: the folder has neither, or a file is damaged.
        """
        folder = os.fspath(folder)
        path = os.path.join(folder, TOKENIZER_FILE)
        tokenizers = _library()
        if os.path.isfile(path):
            try:
                tokenizer = tokenizers.Tokenizer.from_file(path)
            except Exception as error:  # The Rust core raises its own types.
                raise ValueError(
                    f"Could not read the tokenizer {path}: {error}"
                ) from error
        else:
            vocabulary = os.path.join(folder, VOCABULARY_FILE)
            merges = os.path.join(folder, MERGES_FILE)
            if not (os.path.isfile(vocabulary) and os.path.isfile(merges)):
                raise ValueError(
                    f"{folder!r} holds no tokenizer: expected {TOKENIZER_FILE}"
                    f", or {VOCABULARY_FILE} and {MERGES_FILE} (CLIP's BPE)."
                )
            try:
                with open(vocabulary, encoding="utf-8") as f:
                    vocab = json.load(f)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"Could not read {vocabulary}: {error}"
                ) from error
            if not isinstance(vocab, dict) or not all(
                isinstance(v, int) for v in vocab.values()
            ):
                raise ValueError(
                    f"{vocabulary} must map each token to an integer id."
                )
            tokenizer = clip_bpe_tokenizer(vocab, _read_merges(merges))
        return cls(tokenizer, sequence_length, pad_token_id)

    @staticmethod
    def has_files(folder):
        """Whether `folder` holds the files `from_folder` reads."""
        folder = os.fspath(folder)
        return os.path.isfile(os.path.join(folder, TOKENIZER_FILE)) or all(
            os.path.isfile(os.path.join(folder, name))
            for name in (VOCABULARY_FILE, MERGES_FILE)
        )

    def tokenize(self, text):
        """The BPE ids of one string, without start and end tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def __call__(self, texts):
        """Token ids of a string or a list of strings.

        Returns:
            int32 `(len(texts), sequence_length)` NumPy array (one row for a
            single string).
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(
            isinstance(t, str) for t in texts
        ):
            raise ValueError(
                "`texts` must be a string or a list of strings; got "
                f"{texts!r:.100}."
            )
        if not texts:
            raise ValueError("`texts` is empty: give at least one string.")
        length = self.sequence_length
        out = np.full((len(texts), length), self.pad_token_id, np.int32)
        encodings = self.tokenizer.encode_batch(
            list(texts), add_special_tokens=False
        )
        for row, encoding in enumerate(encodings):
            ids = [self.start_token_id, *encoding.ids][: length - 1]
            ids.append(self.end_token_id)
            out[row, : len(ids)] = ids
        return out

    def save_to_preset(self, folder):
        """Writes `tokenizer.json` into a (preset) folder."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        self.tokenizer.save(os.path.join(folder, TOKENIZER_FILE))
