"""Does the tuned configuration hold, or was its refit lucky? For each seed tune_bench ran,
the best trial's hyperparameters are refit on the whole train channel with 3 training
seeds (the seed the tune used, +100, +200), each scored on the untouched test channel, and
the 3 refits mixed (`forecasting.Ensemble`) and scored.

    python benchmarks/refit_seeds.py [--seeds 0,1,2] [--work-dir out/tune_bench]

Needs `tune_bench.py --dataset synthetic`'s result files and work folders for those seeds.
Writes benchmarks/results/refit_seeds-synthetic.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tune_bench import REPO, score

from deepar_cli.config.hyperparameters import resolve
from deepar_cli.model import modelfolder
from deepar_cli.training import train

TRAINING_SEEDS = (0, 100, 200)  # added to the tune's seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--work-dir", type=Path, default=REPO / "out" / "tune_bench")
    args = parser.parse_args()
    results = REPO / "benchmarks" / "results"
    report = {}
    for seed in map(int, args.seeds.split(",")):
        folder = args.work_dir / "synthetic" / f"seed{seed}"
        run = json.loads((results / f"tune_bench-synthetic-seed{seed}.json").read_text())
        best = run["best"]["hyperparameters"]
        static = {k: v for k, v in run["fixed_hyperparameters"].items() if k not in best}
        hp = resolve({**static, **{k: str(v) for k, v in best.items()}})
        mixture = folder / "refit_seeds"
        shutil.rmtree(mixture, ignore_errors=True)
        for k, offset in enumerate(TRAINING_SEEDS):
            train(folder / "train.json", hp, mixture / "members" / str(k), seed=seed + offset)
        modelfolder.write_ensemble(mixture, len(TRAINING_SEEDS), {})
        test = folder / "test.json"
        report[seed] = {"hyperparameters": best,
                        "refits": [score(mixture / "members" / str(k), test, seed)["model"]
                                   for k in range(len(TRAINING_SEEDS))],
                        "mixture": score(mixture, test, seed)["model"]}
        print(f"seed {seed}: refits RMSE "
              + ", ".join(f"{r['RMSE']:.4f}" for r in report[seed]["refits"])
              + f"; mixture {report[seed]['mixture']['RMSE']:.4f} / "
              f"{report[seed]['mixture']['mean_wQuantileLoss']:.4f}", flush=True)
    output = results / "refit_seeds-synthetic.json"
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
