"""Copy a trained video model folder into the package as the default model (`vidiff/assets/default-model/`).

    python scripts/tiny_default/ship.py outputs/tiny-default/temporal-a/model [--guidance 1.5] [--eval EVAL_JSON]

Writes the model folder plus `sampling.json` (the guidance scale the model samples best with, which `vidiff
generate` and `vidiff eval` use when no --guidance is given) and `provenance.json` (where it came from, its
evaluation when given). Built beside the destination and renamed into place. Refuses more than 30 MB of weights in
the whole default model, stages included; the default already in place is then left as it was.

The default's later stages (interpolation, upscale; `ship_stage.py`) stay, with the text encoder and scheduler
they were trained with: where the new model's differ from those shipped now, each stage folder that has none of its
own gets a copy of the current ones (the cascade loads a stage's own components before the base's).
"""

import argparse
import filecmp
import json
import shutil
from pathlib import Path

from vidiff.atomic import atomic_dir
from vidiff.model_folder import COMPONENTS, component_classes, write_model_index
from vidiff.pipelines.cascade import CASCADE_FILE, read_cascade
from vidiff.model_folder import DEFAULT_MODEL_DIR, SAMPLING_FILE

MAX_BYTES = 30_000_000  # the cap on the shipped weights


STAGE_KEEPS = ("text_encoder", "scheduler")  # components a stage keeps when a new base model changes them


def component_changes(new: Path, current: Path, name: str) -> bool:
    """Whether model folder `new`'s text encoder weights, or its scheduler settings, differ from `current`'s."""
    if name == "scheduler":
        def settings(folder: Path) -> dict:
            path = folder / "scheduler" / "scheduler_config.json"
            config = json.loads(path.read_text()) if path.is_file() else {}
            return {k: v for k, v in config.items() if k != "_diffusers_version"}

        return settings(current) != {} and settings(new) != settings(current)
    old = current / name / "model.safetensors"
    return old.is_file() and not filecmp.cmp(new / name / "model.safetensors", old, shallow=False)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="trained video model folder (unet/ vae/ text_encoder/ ...)")
    parser.add_argument("--guidance", type=float, default=1.5, help="recommended guidance scale (default 1.5)")
    parser.add_argument("--eval", type=Path, help="eval.json of this model, summarised into provenance.json")
    parser.add_argument("--note", default="", help="free text for provenance.json (how the model was made)")
    args = parser.parse_args(argv)

    weights = sum(p.stat().st_size for p in args.model.glob("*/*.safetensors"))
    if weights > MAX_BYTES:
        parser.error(f"{args.model} holds {weights / 1e6:.1f} MB of weights; the default must stay under 30 MB")
    provenance = {"source": str(args.model), "weights_bytes": weights, "note": args.note}
    if args.eval:
        report = json.loads(args.eval.read_text())
        provenance["eval"] = {k: report[k] for k in ("settings", "summary", "timings") if k in report}
    with atomic_dir(DEFAULT_MODEL_DIR, overwrite=True) as tmp:
        for name in (*COMPONENTS, "unet"):
            shutil.copytree(args.model / name, tmp / name)
        write_model_index(tmp, component_classes(args.model))  # a TextToVideoPipeline index, whatever the source
        (tmp / SAMPLING_FILE).write_text(json.dumps({"guidance": args.guidance}, indent=2) + "\n")
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        for stage in read_cascade(DEFAULT_MODEL_DIR).values():  # later stages (ship_stage.py) stay
            shutil.copytree(stage.path, tmp / stage.path.name)
            for name in STAGE_KEEPS:
                if not (stage.path / name).is_dir() and component_changes(args.model, DEFAULT_MODEL_DIR, name):
                    shutil.copytree(DEFAULT_MODEL_DIR / name, tmp / stage.path.name / name)
                    print(f"stage {stage.name} keeps the {name} it was trained with")
        if (DEFAULT_MODEL_DIR / CASCADE_FILE).is_file():
            shutil.copy2(DEFAULT_MODEL_DIR / CASCADE_FILE, tmp / CASCADE_FILE)
        total = sum(p.stat().st_size for p in tmp.rglob("*.safetensors"))  # the stages and their copies too
        if total > MAX_BYTES:
            raise SystemExit(f"the default model would hold {total / 1e6:.1f} MB of weights with its stages, over "
                             f"30 MB; {DEFAULT_MODEL_DIR} is left as it was")
    print(f"shipped {args.model} ({weights / 1e6:.1f} MB of weights; {total / 1e6:.1f} MB with the stages) to "
          f"{DEFAULT_MODEL_DIR}")
    return DEFAULT_MODEL_DIR


if __name__ == "__main__":
    main()
