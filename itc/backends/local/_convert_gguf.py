"""Convert a GGUF model into a float32 safetensors folder that vLLM's CPU backend can serve.

Run by ``models.ensure_model`` with the server venv's python (it needs torch, transformers
and gguf, which the itc venv does not have), so it imports nothing from itc:

    python _convert_gguf.py MODEL.gguf OUT_DIR

transformers dequantises the GGUF tensors on load; the tokenizer (with its chat template) is
rebuilt from the GGUF metadata the same way.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    kwargs: dict[str, object] = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    try:  # transformers >= 5 can keep GGUF blocks packed; we want plain dense weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    print(f"loaded {gguf.name} in {time.monotonic() - t0:.1f}s", flush=True)

    odd = {n: p.dtype for n, p in model.state_dict().items() if p.dtype != torch.float32}
    if odd:
        raise SystemExit(f"tensors not dequantized to float32: {odd}")
    # The weights are dense now, but the model still carries the GGUF quantizer, which makes
    # save_pretrained refuse and would make vLLM expect GGUF blocks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    if "quantization_config" in config:
        raise SystemExit("config.json still names a quantization_config")
    if not getattr(tokenizer, "chat_template", None):
        print("warning: the GGUF carries no chat template", flush=True)
    print(f"saved {out} in {time.monotonic() - t0:.1f}s", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    convert(Path(argv[0]).resolve(), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
