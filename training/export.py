"""Export a fine-tuned model for its owner: ``python -m training.export CHECKPOINT --out model.safetensors``.

Writes the model's weights (a whole segmentor: the backbone's under ``backbone.``) as safetensors,
with the metadata the owner's tools read (the cipher its inputs are encrypted with, and its
normalization, from the checkpoint's provenance). The owner then turns it into a plain model with
``python -m pipeline.run --stage decrypt-weights --checkpoint model.safetensors --out plain.safetensors``;
that stage also takes the training checkpoint itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract.errors import UserError, quoted, run_reporting
from contract.formats import CheckpointMetadata
from contract.outputs import OutputKind, check_output, guarded_path


def export(checkpoint: str, out: str | Path) -> Path:
    """Write the weights and provenance of the mmengine checkpoint ``checkpoint`` as safetensors at ``out``."""
    from safetensors.torch import save_file

    from training.loaders import load_from_pth
    from training.provenance import model_reads

    if not Path(checkpoint).is_file() and "://" not in checkpoint:
        raise UserError(f"{quoted(checkpoint)}: no such checkpoint file")
    check_output(out, OutputKind.CHECKPOINT)  # before the work: never over a key, a signer or another kind of file
    loaded = load_from_pth(checkpoint, map_location="cpu")
    provenance = model_reads(checkpoint, loaded)
    state = loaded.get("state_dict")
    if not isinstance(state, dict) or not all(hasattr(t, "contiguous") for t in state.values()):
        raise UserError(f"{quoted(checkpoint)}: holds no state dict of tensors")
    metadata = CheckpointMetadata.of(
        provenance.cipher, provenance.normalization, provenance.normalization, layout=CheckpointMetadata.SEGMENTOR_LAYOUT
    )
    with guarded_path(out, OutputKind.CHECKPOINT) as temporary:  # whole or not at all
        save_file({name: t.contiguous() for name, t in state.items()}, temporary, metadata=metadata.to_metadata())
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint training wrote (work_dir/iter_N.pth)")
    parser.add_argument("--out", required=True, help="the safetensors file to write")
    args = parser.parse_args(argv)

    def run() -> None:
        from training.plugin import register

        register()
        print(f"wrote {export(args.checkpoint, args.out)}")

    return run_reporting(run)


if __name__ == "__main__":
    sys.exit(main())
