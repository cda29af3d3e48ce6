"""Write the data of the offline lmms-eval tasks (idempotent; instant when up to date).

    python eval/prepare_local_tasks.py                       # all local tasks, embedded default's data
    python eval/prepare_local_tasks.py --tasks llava_ov_motion_qa --config configs/train/default.yaml \\
        data.synthetic.out_dir=/data/synthetic                # any run config + its key=value overrides

``llava_ov_motion_qa``: the eval sources of the run config's last stage (the embedded default: the
synthetic motion-QA held-out clips, generated first if they are not cached) → ``TASKS/llava_ov/data/
motion_qa/``. ``llava_ov_shapes`` / ``llava_ov_shapes_mc``: generated stills → ``TASKS/llava_ov/data/
shapes/``. Then ``lmms-eval --include_path TASKS --tasks ...`` finds them (``bash eval/run_all_16.sh``
runs this script itself when a local task is asked for).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TASKS = {"llava_ov_motion_qa": "motion_qa", "llava_ov_shapes": "shapes", "llava_ov_shapes_mc": "shapes"}
TASK_FOLDER = "llava_ov"  # the folder under the tasks dir holding the YAMLs, utils.py and data/


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tasks-dir", type=Path, default=HERE / "tasks", help="lmms-eval include path (default eval/tasks)"
    )
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument(
        "--config",
        default=str(ROOT / "configs" / "train" / "default.yaml"),
        help="run config whose eval sources become llava_ov_motion_qa (default: the embedded default)",
    )
    ap.add_argument("--stills", type=int, default=60, help="images of the shapes tasks")
    ap.add_argument("--seed", type=int, default=7, help="seed of the shapes stills")
    ap.add_argument("overrides", nargs="*", help="run config overrides, e.g. data.synthetic.num_heldout=20")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from encoder.typed_config import ConfigError
    from llava_ov.data.local_tasks import export_eval_source, write_stills
    from llava_ov.train.build import stage_data_config
    from llava_ov.train.config import load_train_config

    args = parse_args(argv)
    wanted = [t for t in args.tasks.split(",") if t]
    if bad := sorted(set(wanted) - set(TASKS)):
        print(f"error: unknown local task(s) {bad}; expected some of {sorted(TASKS)}", file=sys.stderr)
        return 2
    folder = args.tasks_dir / TASK_FOLDER
    if not (folder / "utils.py").is_file():
        print(
            f"error: {folder} holds no local task definitions (copy eval/tasks/{TASK_FOLDER} there)",
            file=sys.stderr,
        )
        return 2
    data = folder / "data"
    try:
        if "llava_ov_motion_qa" in wanted:
            cfg = load_train_config(args.config, args.overrides)
            n = export_eval_source(stage_data_config(cfg, cfg.stages[-1]), data / "motion_qa")
            print(f"llava_ov_motion_qa: {n} clips in {data / 'motion_qa'}")
        if {"llava_ov_shapes", "llava_ov_shapes_mc"} & set(wanted):
            n = write_stills(data / "shapes", count=args.stills, seed=args.seed)
            print(f"llava_ov_shapes(_mc): {n} stills in {data / 'shapes'}")
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake: one line, exit 2

    sys.exit(run_cli(main))
