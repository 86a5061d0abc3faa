"""Recipes: a text model trained in stages by one command (python -m train.train --recipe NAME).

    python -m train.train --train ../shared/data/meld/train_sent_emo.csv \\
        --dev ../shared/data/meld/dev_sent_emo.csv --out runs/minilm --recipe minilm-top2-lora16 --seed 2

A recipe is a list of stages, each a set of train.train options; every stage after the first starts
from the checkpoint the stage before it kept (--init). The command line gives what the stages share
(--train, --dev, --seed, --limit, ...); an option a recipe sets may not be given as well (one line
says so), except --threads, which then applies to every stage. The stages write under the run's
folder (--tb, default runs/<out folder name>): <tb>/<stage>/ holds that stage's logs, its resume.pt
(after every epoch) and, for all but the last stage, its checkpoint; the last stage writes --out.

A stage with `seeds` > 1 runs that many times from the same start, with the command's --seed, +1,
+2, ... (<tb>/<stage>-s<seed>/), and train.soup averages the runs into the stage's checkpoint (a
"model soup": README, "The shipped model"). With --keep-states the stages share one folder
(<tb>) for the frozen layers' output, so it is computed once for the whole recipe.

--stop-after N counts epochs over the whole recipe (stage 2's first epoch is epoch E1 + 1), and
--resume skips the stages that ended (<tb>/<stage>/done.json), continues the one that was stopped
from its resume.pt (or starts it, if it was stopped before its first epoch ended) and runs the rest:
the result is the one an unstopped run gives, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from . import resume as resuming


@dataclass(frozen=True)
class Stage:
    name: str
    options: dict            # train.train options by dest name (tune_layers=2, ...)
    seeds: int = 1           # runs from the same start (seed, seed + 1, ...), averaged by train.soup
    soup: bool = False       # set by stage_argvs on the step that averages a seeded stage's runs


MPNET_FIRST = Stage("lora16", {"text_model": "mpnet", "tune_layers": 0, "tune_attention": 0, "lora_rank": 16,
                               "lora_layers": 6, "encoder_lr": 5e-4, "context_turns": 3, "context_ahead": 1,
                               "ema": 0.998, "epochs": 3, "threads": 2})
MPNET_MORE = {"tune_layers": 0, "tune_attention": 0, "lora_rank": 16, "lora_layers": 6, "encoder_lr": 1e-4,
              "lr": 1e-4, "context_turns": 3, "context_ahead": 1, "ema": 0.998, "epochs": 1, "threads": 2}

RECIPES: dict[str, tuple[Stage, ...]] = {
    # the MiniLM model (assets/model-minilm): the release before it, then LoRA r 16 on all six layers on top
    "minilm-top2-lora16": (
        Stage("top2", {"tune_layers": 2, "tune_attention": 1, "context_turns": 3, "context_ahead": 1,
                       "ema": 0.998, "epochs": 4, "threads": 1}),
        Stage("lora16", {"tune_layers": 0, "tune_attention": 0, "lora_rank": 16, "encoder_lr": 2e-4, "lr": 2e-4,
                         "context_turns": 3, "context_ahead": 1, "ema": 0.998, "epochs": 2, "threads": 2}),
    ),
    # MPNet-base: only LoRA fits the 10 MB limit (one fp16 MPNet layer is 14 MB); on the top 6 of its
    # 12 layers, so that the 6 below are computed once (a step costs about half of all 12's)
    "mpnet-lora16-top6": (MPNET_FIRST,),
    # the release before: the recipe above, then one more epoch of a second LoRA r 16 on the same
    # layers at a fifth of the learning rate (the dev scores were still rising at epoch 3)
    "mpnet-lora16-top6-more": (MPNET_FIRST, Stage("more", MPNET_MORE)),
    # the shipped text model: the same two stages, the second run with three seeds (the command's,
    # +1, +2) and the three averaged (train.soup); each run alone scored 62.45-62.94 emotion on dev
    "mpnet-lora16-top6-soup": (MPNET_FIRST, Stage("more", MPNET_MORE, seeds=3)),
}
OVERRIDABLE = ("threads",)                      # may be given on the command line with a recipe
PER_RUN = ("recipe", "out", "tb", "init", "resume", "stop_after")   # set per stage by run()
DONE_FILE = "done.json"


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """Options whose value differs from the parser's default (i.e. given on the command line)."""
    own = vars(args)
    return {a.dest for a in parser._actions if a.dest in own and own[a.dest] != a.default}


def stage_argvs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[Stage, list[str], Path]]:
    """Per stage: the train.train command line it runs (without --resume / --stop-after) and its folder."""
    stages = RECIPES[args.recipe]
    asked = given(parser, args)
    clash = sorted(d for d in asked for s in stages if d in s.options and d not in OVERRIDABLE)
    if clash:
        raise SystemExit(f"error: --recipe {args.recipe} sets {_flag(clash[0])} itself (stage by stage); "
                         "leave it out, or train without --recipe")
    if "init" in asked:
        raise SystemExit(f"error: --recipe {args.recipe} starts from the packaged encoder; --init does not apply")
    common = []                                  # what the stages share: the options given, as given
    for a in parser._actions:
        if a.dest in asked and a.dest not in PER_RUN and a.dest not in OVERRIDABLE:
            common += [a.option_strings[0]] if a.nargs == 0 else [a.option_strings[0], str(getattr(args, a.dest))]
    root = Path(args.tb) if args.tb else Path("runs") / (Path(args.out).resolve().name or "model")
    if args.keep_states:
        common += ["--states-dir", str(root)]
    out, previous = [], None
    for k, stage in enumerate(stages):
        folder = root / stage.name
        last = k == len(stages) - 1
        final = Path(args.out) if last else folder / "checkpoint"
        opts = {**stage.options, **({d: getattr(args, d) for d in OVERRIDABLE if d in asked})}
        argv = list(common)
        for dest, value in opts.items():
            argv += [_flag(dest), str(value)]
        if previous is not None:
            argv += ["--init", str(previous)]
        if stage.seeds <= 1:
            out.append((stage, argv + ["--out", str(final), "--tb", str(folder)], folder))
        else:                                   # one run per seed, then their average
            runs = []
            for seed in range(args.seed, args.seed + stage.seeds):
                sub = root / f"{stage.name}-s{seed}"
                runs.append(sub / "checkpoint")
                out.append((Stage(sub.name, stage.options), argv + ["--seed", str(seed), "--out", str(runs[-1]),
                                                                    "--tb", str(sub)], sub))
            out.append((Stage(stage.name, {"epochs": 0}, soup=True),
                        ["--from", *map(str, runs), "--out", str(final)] + (["--dev", args.dev] if args.dev else []),
                        folder))
        previous = final
    return out


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, train_main) -> dict:
    """Run the recipe's stages in order through `train_main` (train.train.main); returns the last
    stage's summary with every stage's under "stages"."""
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    plan = stage_argvs(parser, args)
    done_epochs, summaries = 0, []
    for stage, argv, folder in plan:
        epochs = int(stage.options["epochs"])
        done = folder / DONE_FILE
        if args.resume and done.is_file() and stage.soup:
            summaries.append(json.loads(done.read_text())["summary"])
            log(f"recipe {args.recipe}: the runs of stage {stage.name} had been averaged; kept")
            continue
        if args.resume and done.is_file():
            resuming.check_args(resuming.saved_args(folder / resuming.STATE_FILE), _run_args(parser, argv))
            summaries.append(json.loads(done.read_text())["summary"])
            log(f"recipe {args.recipe}: stage {stage.name} had ended; kept")
            done_epochs += epochs
            continue
        if args.stop_after is not None and args.stop_after <= done_epochs:
            log(f"recipe {args.recipe}: stopping before stage {stage.name} as asked; continue with --resume")
            break
        if stage.soup:
            from . import soup
            log(f"recipe {args.recipe}: stage {stage.name}: python -m train.soup {' '.join(argv)}")
            summaries.append(soup.main(argv))
            folder.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps({"argv": argv, "summary": summaries[-1]}, indent=1))
            continue
        extra = ["--resume"] if args.resume and (folder / resuming.STATE_FILE).is_file() else []
        stop = args.stop_after - done_epochs if args.stop_after is not None else None
        if stop is not None and stop < epochs:
            extra += ["--stop-after", str(stop)]
        log(f"recipe {args.recipe}: stage {stage.name}: python -m train.train {' '.join(argv + extra)}")
        summary = train_main(argv + extra)
        summaries.append(summary)
        if stop is not None and stop < epochs and summary["epochs_run"] < epochs:
            log(f"recipe {args.recipe}: stopped in stage {stage.name}; continue with the same command and --resume")
            break
        done.write_text(json.dumps({"argv": argv, "summary": summary}, indent=1))
        done_epochs += epochs
    last = dict(summaries[-1]) if summaries else {}
    last.update({"recipe": args.recipe, "stages": summaries,
                 "complete": len(summaries) == len(plan) and (plan[-1][2] / DONE_FILE).is_file()})
    return last


def _run_args(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """The arguments a stage's resume.pt records (train.train: everything but resume.FREE_ARGS)."""
    from .train import parse_args
    args = parse_args(argv)
    return json.loads(json.dumps({k: v for k, v in vars(args).items() if k not in resuming.FREE_ARGS},
                                 default=str))
