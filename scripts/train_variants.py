"""Train bench variants into OUT/seedS/VARIANT with the bench's own `variant_config` and `train_fresh`,
without the bench's report, so that a variant can be added to a finished bench's folder or trained beside
another process (a finished run of the same config is kept). Prints each run's final top-1, training
seconds and iterations as JSON lines; `mgvideo bench tta --report-only` then reports the folder.

    python scripts/train_variants.py BENCH.yaml OUT VARIANT[,VARIANT...] SEEDS [key=value ...]

SEEDS is a count (3: seeds 0, 1, 2) or a list ("0,2"; "2," for seed 2 alone). A variant named again
trains again, into VARIANT~2 (~3, ...): a repeat in the same process, to time a process's first run
against the ones after it.
"""

import json
import sys
from pathlib import Path

from mgvideo.bench.tta import load_bench, train_fresh, variant_config
from mgvideo.engine.records import EvalRecord


def seeds_of(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x] if "," in text else list(range(int(text)))


def folder_names(variants: list[str]) -> list[tuple[str, str]]:
    """Each variant with its run folder's name: its own, then NAME~2, NAME~3 for its repeats."""
    seen: dict[str, int] = {}
    named = []
    for variant in variants:
        seen[variant] = seen.get(variant, 0) + 1
        named.append((variant, variant if seen[variant] == 1 else f"{variant}~{seen[variant]}"))
    return named


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        raise SystemExit(__doc__)
    config, out, variants, seeds, *overrides = argv
    spec, cfg = load_bench(config, overrides)
    for seed in seeds_of(seeds):
        for variant, folder_name in folder_names(variants.split(",")):
            folder = Path(out) / f"seed{seed}" / folder_name
            records, _ = train_fresh(variant_config(cfg, spec, variant, seed), folder, reuse=True)
            last = [r for r in records if isinstance(r, EvalRecord)][-1]
            print(json.dumps({"seed": seed, "variant": folder_name, "top1": last.top1,
                              "time": round(last.time, 1), "step": last.step}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
