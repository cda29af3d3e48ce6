"""The three stages in one command: encoder pretraining → LMM align + sft on the pretrained encoder →
lmms-eval on the offline local tasks.

    python scripts/run_stages.py                                   # embedded default, ~10 min on 2 CPU cores
    python scripts/run_stages.py --out outputs/stages_s1 --pretrain seed=1 --lmm seed=1
    python scripts/run_stages.py --launcher "deepspeed --num_gpus 8" --pretrain-config my_pretrain.yaml \\
        --lmm-config my_sft.yaml --eval-tasks videomme,mvbench

Stage 1 runs ``scripts/pretrain_encoder.py`` (its probe table: pretrained vs random init), stage 2
``scripts/train_lmm.py`` with ``model.tower.path`` set to stage 1's export, stage 3
``eval/run_all_16.sh`` on stage 2's export (needs the ``eval`` extra; ``--eval-tasks none`` skips it).
Each stage writes under ``OUT/`` (``pretrain/``, ``lmm/``, ``eval/``); a stage whose export already exists
is not run again (delete its folder to redo it). ``OUT/stages.json`` gathers the figures: the probe
accuracies, the LMM's held-out accuracy and the lmms-eval scores. Exit status: that of the first stage that
failed (its log's last lines are printed), else 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from llava_ov.train.distributed import child_job_env

ROOT = Path(__file__).resolve().parents[1]
LOCAL_TASKS = "llava_ov_motion_qa,llava_ov_shapes,llava_ov_shapes_mc"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/stages"), help="folder of the three stages")
    ap.add_argument("--launcher", default=f"{sys.executable}", help="command that runs a training script")
    ap.add_argument("--pretrain-config", default=None, help="pretraining config (default: its embedded one)")
    ap.add_argument("--pretrain", nargs="*", default=[], metavar="KEY=VALUE", help="pretraining overrides")
    ap.add_argument("--lmm-config", default=None, help="LMM run config (default: the embedded one)")
    ap.add_argument("--lmm", nargs="*", default=[], metavar="KEY=VALUE", help="LMM run overrides")
    ap.add_argument("--eval-tasks", default=LOCAL_TASKS, help="lmms-eval tasks ('none': no evaluation)")
    ap.add_argument("--eval-args", default="", help="more arguments for eval/run_all_16.sh, e.g. '--limit 2'")
    return ap.parse_args(argv)


def run_stage(name: str, cmd: list[str], log: Path) -> None:
    """Run one stage, its output to ``log``; a failure ends the pipeline with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {shlex.join(cmd)}\n[{name}] log: {log}", flush=True)
    start = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=child_job_env()).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        raise StageFailed(name, rc, tail)
    print(f"[{name}] done in {time.time() - start:.0f} s", flush=True)


class StageFailed(Exception):
    def __init__(self, name: str, rc: int, tail: str) -> None:
        super().__init__(f"stage {name} failed (exit {rc}); last lines of its log:\n{tail}")
        self.rc = rc


def config_args(path: str | None) -> list[str]:
    return ["--config", str(Path(path).absolute())] if path else []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.absolute()
    launcher = shlex.split(args.launcher)
    pre_out, lmm_out, eval_out = out / "pretrain", out / "lmm", out / "eval"
    export = pre_out / "pretrain" / "final"
    lmm_export = lmm_out / "sft" / "final"
    summary: dict = {"out": str(out)}
    try:
        if not (export / "config.json").is_file():
            cmd = [
                *launcher,
                str(ROOT / "scripts" / "pretrain_encoder.py"),
                *config_args(args.pretrain_config),
            ]
            run_stage("pretrain", [*cmd, f"output_dir={pre_out}", *args.pretrain], out / "pretrain.log")
        if (probe := pre_out / "pretrain" / "probe.json").is_file():
            summary["probe"] = json.loads(probe.read_text())
        if not (lmm_export / "llava_ov.json").is_file():
            cmd = [*launcher, str(ROOT / "scripts" / "train_lmm.py"), *config_args(args.lmm_config)]
            over = [f"output_dir={lmm_out}", f"model.tower.path={export}", *args.lmm]
            run_stage("align+sft", [*cmd, *over], out / "lmm.log")
        if (held := lmm_out / "sft" / "eval.json").is_file():
            summary["lmm_heldout"] = json.loads(held.read_text()).get("accuracy")
        if args.eval_tasks != "none":
            cmd = ["bash", str(ROOT / "eval" / "run_all_16.sh"), str(lmm_export), "--tasks", args.eval_tasks]
            # the local motion-QA task reads the held-out clips of the LMM run's own (saved) config
            local = ["--local-data", f"--config {lmm_out / 'config.yaml'}"]
            cmd += ["--out", str(eval_out), *local, *shlex.split(args.eval_args)]
            run_stage("eval", cmd, out / "eval.log")
            if (scores := eval_out / "summary.csv").is_file():
                with open(scores, newline="") as f:
                    summary["lmms_eval"] = list(csv.DictReader(f))
                print((eval_out / "summary.md").read_text(), end="")
    except StageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return e.rc
    (out / "stages.json").write_text(json.dumps(summary, indent=1))
    for task, res in summary.get("probe", {}).get("tasks", {}).items():
        print(
            f"probe ({task}): pretrained {res['pretrained']['accuracy']:.3f} vs random init "
            f"{res['random']['accuracy']:.3f} (chance {res['chance']:.3f})"
        )
    if summary.get("lmm_heldout") is not None:
        print(f"LMM held-out accuracy: {summary['lmm_heldout']:.3f}")
    print(f"summary: {out / 'stages.json'}")
    return 0


if __name__ == "__main__":
    from encoder.cli import run_cli  # a user's mistake (e.g. a launcher that does not exist): one line

    sys.exit(run_cli(main))
