"""Train SynSeg with MCCL: ``python -m synseg_core.train --config CONFIG.yaml [key=value ...] [--resume] [--out RUN_DIR]``.

Writes RUN_DIR/config.yaml (the resolved config), metrics.jsonl, tb/ (TensorBoard),
checkpoints/step_NNNNNN/ + checkpoints/latest, and at the end model/ (what
``synseg_core.segment`` and ``synseg_core.evaluate`` take). docs/TRAINING.md has the details.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from synseg_core.checkpoint import CheckpointError
from synseg_core.training.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    ConfigError,
    RunDirError,
    apply_overrides,
    config_from_dict,
    load_config,
    read_yaml,
)

log = logging.getLogger("synseg.train")

EPILOG = f"""
examples:
  # a few CPU minutes: the tiny model on procedural scenes (packaged configs: synseg_core/{CONFIG_DIR.name}/)
  python -m synseg_core.data.synthetic data/synthetic --num 2000
  python -m synseg_core.train --config synseg_core/configs/tiny.yaml \\
      data.train=data/synthetic/captions.jsonl --out runs/tiny

  # continue it after a crash or kill (or extend it: add train.steps=2000)
  python -m synseg_core.train --out runs/tiny --resume

  # the MCCL ablation without L_sep, and the single-category InfoNCE baseline
  python -m synseg_core.train --config synseg_core/configs/tiny.yaml loss.weights.sep=0 --out runs/no_sep ...
  python -m synseg_core.train --config synseg_core/configs/tiny.yaml loss.name=single_infonce --out runs/infonce ...

  # the paper's recipe on 8 GPUs (see docs/REPRODUCE.md for several nodes)
  torchrun --nproc-per-node 8 -m synseg_core.train --config synseg_core/configs/synseg_vitb16_cc12m.yaml \\
      data.train='cc12m/{{00000..01242}}.tar' --out runs/synseg_cc12m --resume

overrides are dotted keys with YAML values: train.steps=200 optim.lr=5e-4 loss.weights.sep=0 data.num_workers=0
--print-config shows every key of the resolved config, with its default where neither the file nor an
override sets it (docs/TRAINING.md explains each):
  python -m synseg_core.train --config synseg_core/configs/tiny.yaml --print-config
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.train",
        description="Train SynSeg's FiLM, decoder and projector with MCCL (the CLIP towers stay frozen). "
                    "Writes RUN_DIR/config.yaml, metrics.jsonl, tb/, checkpoints/ and model/ (docs/TRAINING.md).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys, YAML values)")
    parser.add_argument("--config", type=Path, help="YAML config (with --resume it defaults to RUN_DIR/config.yaml)")
    parser.add_argument("--out", type=Path, help="run directory (overrides the config's 'out')")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR's newest readable checkpoint (starts at step 0 if there is none yet)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks on errors)")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


def resolve_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """--config (or, when resuming, RUN_DIR/config.yaml) + overrides + --out -> (config, run_dir)."""
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out is not None else [])
    if args.config is not None:
        config = load_config(args.config, overrides)
    elif args.resume and args.out is not None:
        saved = args.out / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"{saved}: not found; start the run with --config, or point --out at an existing run")
        config = config_from_dict(apply_overrides(read_yaml(saved), overrides))
    else:
        raise ConfigError("give --config CONFIG.yaml (or --resume --out RUN_DIR to continue a run)")
    return config, Path(config.out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s")
    try:
        config, run_dir = resolve_config(args)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        from synseg_core.training.trainer import train

        final = train(config, run_dir, resume=args.resume)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        log.error("training needs PyTorch: pip install 'synseg[train]'")
        return 2
    except (ConfigError, RunDirError) as exc:
        log.error("%s", exc)
        return 2
    except (CheckpointError, OSError, ValueError, RuntimeError) as exc:
        log.error("%s", exc, exc_info=args.verbose)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted: the steps since the last checkpoint are lost; continue with --resume")
        return 130
    if rank == 0:
        print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
