"""``condense``: a thin command line over condensation.run (distill, evaluate, show, list, export)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .errors import CondensationError, ConfigError, Interrupted


def _key_values(pairs: list[str] | None, flag: str) -> dict:
    """``--set key=value`` pairs; values parsed as JSON where possible (numbers, booleans), else strings."""
    values = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CondensationError(f"{flag} expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' after a flag's help where X is a real value; None (the recipe's or preset's
    value, said in the help itself) and False (a switch) are left out."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _version_text() -> str:
    from . import __version__

    return f"condense (condensation) {__version__}"


def _add_method_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and tune a method over its recipe (distill, continual)."""
    parser.add_argument("--container", help="override the recipe's container (condense list containers)")
    parser.add_argument("--container-set", action="append", metavar="KEY=VALUE",
                        help="container setting, over the recipe's (repeatable)")
    parser.add_argument("--objective", help="override the recipe's objective (condense list objectives)")
    parser.add_argument("--objective-set", action="append", metavar="KEY=VALUE",
                        help="objective setting, over the recipe's (repeatable)")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="container learning rate (default: the recipe's)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], help="container optimizer (default: the recipe's)")
    parser.add_argument("--post-condense-set", action="append", metavar="KEY=VALUE",
                        help="setting of the recipe's post-condensation step, e.g. HMN pruning's beta_grid=[0,0.5,1]")
    parser.add_argument("--preprocessing", choices=["normalize", "zca", "none"],
                        help="preprocessing of the images (default: the recipe's)")


def _add_protocol_overrides(parser: argparse.ArgumentParser) -> None:
    """The flags that adjust the evaluation protocol (distill, continual)."""
    parser.add_argument("--protocol-set", action="append", metavar="KEY=VALUE",
                        help="protocol setting over the preset's, e.g. networks=1 (repeatable)")
    parser.add_argument("--architectures", help="comma-separated network names to evaluate (default: the protocol's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condense", description=__doc__)
    parser.add_argument("--version", action="version", version=_version_text())
    commands = parser.add_subparsers(dest="command", required=True)

    d = commands.add_parser("distill", help="condense a dataset into a container, save it and evaluate it",
                            formatter_class=_HelpFormatter)
    d.add_argument("--config", help="JSON or TOML file of run settings (RunConfig keys; flags override it)")
    d.add_argument("--recipe", help="the method: dm, dc, dsa, mtt, idc, haba, hmn, ... (condense list recipes); "
                                    "required unless --config names it")
    d.add_argument("--dataset", help="dataset name (condense list datasets); required unless --config names it")
    d.add_argument("--ipc", type=int, help="images per class: the storage budget is classes x IPC images (default 1)")
    d.add_argument("--iterations", type=int, help="outer condensation iterations (default: the recipe's)")
    d.add_argument("--seed", type=int, help="seed of the run: initialization, batches, evaluation (default 0)")
    d.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto: cuda when available)")
    d.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: no-gradient forwards (real features and gradients, test accuracy) in bfloat16 "
                        "(default fp32)")
    d.add_argument("--time-limit", metavar="DURATION",
                   help="stop condensing at the first iteration after this wall clock (e.g. 900, 90s, 20m, 1.5h; "
                        "default: no limit)")
    d.add_argument("--cpu-limit", metavar="DURATION",
                   help="stop condensing at the first iteration after this much process CPU time (same forms as "
                        "--time-limit): a budget other work on the machine does not bend (run with OMP_NUM_THREADS=1)")
    d.add_argument("--snapshots", metavar="FRACTIONS",
                   help="comma-separated fractions of the budget (cpu limit, else time limit, else iterations), e.g. "
                        "0.25,0.5: the container is saved there into OUT/snapshots/<percent>/, post-condensed and "
                        "evaluated as the run is")
    d.add_argument("--report", choices=["final", "paper"],
                   help="paper: also evaluate during condensation at the paper's points and report its statistic "
                        "(MTT: best of every 100 iterations; HaBa: best in the last 10%%), labelled as selected on "
                        "the test set; the final set's accuracy is reported beside it (default final)")
    d.add_argument("--isolate-classes", action="store_true",
                   help="per-class steps move only their class's rows, with per-class optimizer state (ours; no "
                        "official code does this; default: one optimizer over whole tensors)")
    d.add_argument("--evaluation-split", choices=["test", "validation"],
                   help="validation: report accuracy on the held-out validation split instead of the test split "
                        "(for choosing settings; default test)")
    d.add_argument("--out", help="run directory (default runs/<recipe>-<dataset>-ipc<N>-seed<S>, with -2, -3, ... "
                                 "rather than touching a finished run)")
    d.add_argument("--data-root", help="folder holding the dataset (default: none; digits needs none)")
    d.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files (loss per iteration, "
                                                         "accuracies) into DIR; needs `pip install tensorboard`")
    d.add_argument("--wandb", metavar="PROJECT", help="log the same scalars to this Weights & Biases project; "
                                                       "needs `pip install wandb`")
    d.add_argument("--dataset-set", action="append", metavar="KEY=VALUE",
                   help="dataset setting (repeatable), e.g. image_folder's image_size=32 to resize mixed sizes")
    _add_method_flags(d)
    d.add_argument("--protocol", help="evaluation protocol preset (condense list protocols; default: the recipe's)")
    _add_protocol_overrides(d)
    d.add_argument("--no-evaluate", action="store_true", help="save the artifact without evaluating it")
    d.add_argument("--random-baseline", action="store_true", help="also evaluate random real images (>= 3 draws)")
    d.add_argument("--random-baseline-draws", type=int, help="independent draws of random real images (default 3)")
    d.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints; 0: never (default 50)")
    d.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    e = commands.add_parser("evaluate", help="evaluate a saved artifact (the result is appended to "
                                             "ARTIFACT/evaluations.jsonl)", formatter_class=_HelpFormatter)
    e.add_argument("artifact", help="run directory holding the artifact (metadata.json)")
    e.add_argument("--protocol", default="cpu", help="evaluation protocol preset (condense list protocols)")
    e.add_argument("--protocol-set", action="append", metavar="KEY=VALUE",
                   help="protocol setting over the preset's, e.g. steps=400 or networks=5 (repeatable)")
    e.add_argument("--architectures", help="comma-separated network names (default: the protocol's)")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation networks")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: test-set forwards in bfloat16")
    e.add_argument("--data-root", help="folder holding the dataset (default: the one the run used)")

    s = commands.add_parser("show", help="budget, shapes and the image grid of an artifact")
    s.add_argument("artifact")

    listing = commands.add_parser("list", help="list registered names")
    listing.add_argument("what", choices=["datasets", "recipes", "protocols", "containers", "objectives", "networks"])
    listing.add_argument("--dataset", help="recipes: resolve every recipe's settings for this dataset (with --ipc)")
    listing.add_argument("--ipc", type=int, default=None, help="recipes: the IPC to resolve for (default 1)")

    sr = commands.add_parser("show-recipe", help="a recipe's settings for a dataset and IPC, each with its source")
    sr.add_argument("recipe")
    sr.add_argument("--dataset", help="without it: the settings that hold for every dataset")
    sr.add_argument("--ipc", type=int, default=None, help="default 1")

    t = commands.add_parser("experts", help="train expert trajectories on real data for trajectory matching (MTT)",
                            formatter_class=_HelpFormatter)
    t.add_argument("--dataset", required=True, help="dataset name (condense list datasets)")
    t.add_argument("--data-root", help="folder holding the dataset (default: none; digits needs none)")
    t.add_argument("--out", required=True, help="directory of the expert buffer")
    t.add_argument("--config", help="JSON file of expert settings (see condensation.engine.experts; "
                                     "default: the 'paper' preset, MTT's buffer.py)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", dest="expert_set",
                   help="expert setting over --config's, e.g. preset=cpu or experts=10 (repeatable)")
    t.add_argument("--seed", type=int, default=0, help="seed of the experts' initializations and batches")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    r = commands.add_parser("report", help="compare run directories: a markdown table, or one self-contained HTML page")
    r.add_argument("runs", nargs="+", help="run directories (each with a results.json)")
    r.add_argument("--html", metavar="OUT", help="also write one HTML page (leaderboard, loss curves, accuracy "
                                                  "strips, budget breakdowns, image grids) that needs no network")

    x = commands.add_parser("export", help="export an artifact's generated set to a field layout",
                            formatter_class=_HelpFormatter)
    x.add_argument("artifact", help="run directory holding the artifact (metadata.json)")
    x.add_argument("--format", choices=["dc", "mtt", "image_folder", "hf"], required=True,
                   help="dc: res.pt as DC/DSA/DM save it; mtt: images_best.pt, labels_best.pt (+ syn_lr_best.pt); "
                        "image_folder: one PNG per image in <class>/ folders, [0, 1] pixels; hf: a Hugging Face "
                        "dataset (save_to_disk; needs pip install 'condensation[hf]'). Every format adds "
                        "preprocessing.json/.safetensors and a README.md")
    x.add_argument("--out", required=True,
                   help="directory to create for the export (must not exist, or be empty; parents are created)")
    q = commands.add_parser("query", help="images for label mixtures (RTP's generalized queries) from an artifact",
                            formatter_class=_HelpFormatter)
    q.add_argument("run", metavar="RUN", help="run directory holding the artifact (metadata.json)")
    q.add_argument("--mix", action="append", required=True, metavar="MIX",
                   help="a label mixture: class names or indices with optional weights, e.g. Shirt, "
                        "'0.5*T-shirt/top+0.5*Shirt' or '2*3+1*5' (normalized to sum 1); repeatable, one grid row each")
    q.add_argument("--out", metavar="DIR", help="directory for queries.png and queries.safetensors (default: RUN/queries)")
    q.add_argument("--per-mix", type=int, default=10, metavar="N",
                   help="images per mix shown in queries.png (queries.safetensors holds all)")
    c = commands.add_parser("continual", help="class-incremental continual learning: condense each task of a stream "
                                              "into a container of its own, then train fresh networks on everything "
                                              "stored so far (docs/continual.md)", formatter_class=_HelpFormatter)
    c.add_argument("--stream", required=True,
                   help="split-fashion-mnist, split-mnist, split-digits (5 tasks of 2 classes), mnist-fashion-mnist "
                        "(2 tasks, 20 classes), or a .toml/.json stream file of [[tasks]] (dataset, classes)")
    c.add_argument("--stream-seed", type=int, help="seed of the class order of split streams (default: --seed)")
    c.add_argument("--recipe", required=True, help="the method condensing each task: random, herding, dm, idc, hmn, "
                                                   "rtp, haba, ... (condense list recipes)")
    c.add_argument("--ipc", type=int, help="images per class: each task's budget is its classes x IPC images "
                                           "(default 1)")
    c.add_argument("--iterations", type=int, help="outer condensation iterations per task (default: the recipe's)")
    c.add_argument("--seed", type=int, help="seed of every task's run and of the evaluation networks (default 0)")
    c.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto: cuda when available)")
    c.add_argument("--precision", choices=["fp32", "bf16"], help="as distill's (default fp32)")
    c.add_argument("--time-limit", metavar="DURATION", help="per task: stop condensing at the first iteration after "
                                                            "this wall clock (default: no limit)")
    c.add_argument("--out", help="directory of the continual run: task-N/ run directories, continual.json, "
                                 "continual.png (default runs/continual-<stream>-<recipe>-ipc<N>-seed<S>)")
    c.add_argument("--data-root", help="folder holding the datasets (for tasks whose stream entry names none)")
    _add_method_flags(c)
    c.add_argument("--protocol", help="evaluation protocol of the networks trained after each task (condense list "
                                      "protocols; default: the recipe's)")
    _add_protocol_overrides(c)
    c.add_argument("--reuse-memories", action="store_true",
                   help="memories containers (rtp): each later task addresses every earlier task's memories, frozen, "
                        "and stores only its addresses and --later-bases new memories")
    c.add_argument("--later-bases", type=int, metavar="K",
                   help="with --reuse-memories: new memories of each task after the first (default: as many as task "
                        "1; 0: addresses only)")
    c.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints; 0: never (default 50)")
    c.add_argument("--resume", action="store_true", help="continue a killed run from its last finished task (and "
                                                         "that task's checkpoint)")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime import tune_process

    tune_process()
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM as Ctrl-C: stop cleanly, say how to resume
    rank = int(os.environ.get("RANK", "0"))  # under torchrun rank 0 prints the results; every rank its errors
    where = f" (rank {rank})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    stdout = sys.stdout
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
    try:
        return COMMANDS[args.command](args)
    except Interrupted as error:
        print(f"condense{where}: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        hint = " (rerun the same command with --resume to continue from the last checkpoint or artifact)" \
            if args.command == "distill" else ""
        print(f"condense{where}: interrupted{hint}", file=sys.stderr)
        return 130
    except CondensationError as error:
        print(f"condense{where}: error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        from .distributed import shutdown

        shutdown()


def _terminate(number, frame):
    raise KeyboardInterrupt


def _distill(args) -> int:
    from .run import RunConfig, distill, load_run_config
    from .registry import build_config

    flags = {
        "recipe": args.recipe, "dataset": args.dataset, "ipc": args.ipc, "iterations": args.iterations,
        "seed": args.seed, "device": args.device, "out": args.out, "data_root": args.data_root,
        "container": args.container, "objective": args.objective, "learning_rate": args.learning_rate,
        "optimizer": args.optimizer, "protocol": args.protocol, "checkpoint_every": args.checkpoint_every,
        "random_baseline_draws": args.random_baseline_draws, "preprocessing": args.preprocessing,
        "precision": args.precision, "time_limit": args.time_limit, "tensorboard": args.tensorboard,
        "wandb": args.wandb, "cpu_limit": args.cpu_limit, "report": args.report,
        "isolate_classes": True if args.isolate_classes else None, "evaluation_split": args.evaluation_split,
        "snapshots": _fractions(args.snapshots) if args.snapshots else None,
        "architectures": tuple(args.architectures.split(",")) if args.architectures else None,
    }
    for key, pairs, flag in (("dataset_settings", args.dataset_set, "--dataset-set"),
                             ("container_settings", args.container_set, "--container-set"),
                             ("objective_settings", args.objective_set, "--objective-set"),
                             ("protocol_settings", args.protocol_set, "--protocol-set"),
                             ("post_condense_settings", args.post_condense_set, "--post-condense-set")):
        if pairs:
            flags[key] = _key_values(pairs, flag)
    if args.no_evaluate:
        flags["evaluate"] = False
    if args.random_baseline:
        flags["random_baseline"] = True
    if args.quiet:
        flags["progress"] = False
    if args.config:
        config = load_run_config(args.config, **flags)
    else:
        missing = [name for name in ("recipe", "dataset") if flags[name] is None]
        if missing:
            raise CondensationError(f"distill needs --{' and --'.join(missing)} (or --config FILE)")
        config = build_config(RunConfig, {k: v for k, v in flags.items() if v is not None}, "run")
    results = distill(config, resume=args.resume)
    print(format_results_table([results]))
    return 0


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CondensationError(f"--snapshots takes comma-separated fractions such as 0.25,0.5; got '{text}'") from None


def format_results_table(rows: list[dict]) -> str:
    """The small table the README's main command prints."""
    from .formatting import format_mean_std

    header = f"{'method':<10} {'IPC':>4} {'stored floats':>14} {'images/class':>12} {'test accuracy %':>18} {'random real %':>16}"
    lines = [header, "-" * len(header)]
    for r in rows:
        accuracies = r.get("accuracy") or r.get("validation_accuracy") or {}
        first = next(iter(accuracies.values()), None)
        shown = format_mean_std(first["mean"], first["std"], first["n"]) if first else "not evaluated"
        baseline = r.get("random_baseline")
        baseline_text = f"{baseline['mean']:.2f} ± {baseline['std']:.2f}" if baseline else "-"
        lines.append(f"{r['recipe']:<10} {r['ipc']:>4} {r['stored_floats']:>14,} {r['generated_images_per_class']:>12} "
                     f"{shown:>18} {baseline_text:>16}")
    protocol = rows[0]["protocol"] if rows else {}
    if protocol:
        lines.append(f"protocol '{protocol['name']}': {protocol.get('description', '')}")
    for r in rows:
        if r.get("stopped_by_time_limit"):
            lines.append(f"{r['recipe']}: stopped by the {r['time_limit_seconds']:g} s time limit after "
                         f"{r['iterations']} of {r['iterations_planned']} iterations")
        if r.get("stopped_by_cpu_limit"):
            lines.append(f"{r['recipe']}: stopped by the {r['cpu_limit_seconds']:g} s CPU limit after "
                         f"{r['iterations']} of {r['iterations_planned']} iterations")
        if r.get("paper_report"):
            paper = r["paper_report"]
            lines.append(f"{r['recipe']}: the paper's statistic, {paper['statistic']}, SELECTED ON THE TEST SET: "
                         f"{paper['mean']:.2f} ± {paper['std']:.2f} at iteration {paper['iteration']} "
                         f"(of {len(paper['evaluations'])} evaluations); the final set, not selected: "
                         + "; ".join(f"{a['mean']:.2f} ± {a['std']:.2f}" for a in r["accuracy"].values()))
        if r.get("budget_statement"):
            lines.append(f"{r['recipe']}: stores {r['budget_statement']}")
        if r.get("evaluation_split") == "validation":
            lines.append(f"{r['recipe']}: accuracy on the validation split, not the test split")
        for snapshot in r.get("snapshots") or ():
            shown = snapshot.get("accuracy") or snapshot.get("validation_accuracy") or {}
            first = next(iter(shown.values()), None)
            lines.append(f"{r['recipe']}: snapshot at {snapshot['fraction']:.0%} of the budget, "
                         f"{snapshot['iterations']} iterations: " + (f"{first['mean']:.2f}%" if first else "not evaluated"))
    return "\n".join(lines)


def _evaluate(args) -> int:
    from .evaluation import PROTOCOLS
    from .formatting import format_mean_std
    from .run import evaluate_artifact

    overrides = _key_values(args.protocol_set, "--protocol-set")
    result = evaluate_artifact(args.artifact, args.protocol,
                               tuple(args.architectures.split(",")) if args.architectures else None,
                               args.seed, args.device, args.data_root, precision=args.precision, **overrides)
    print(describe_protocol(result["protocol"], PROTOCOLS.get(args.protocol)))
    print(f"architectures evaluated: {', '.join(result['architectures'])}; seed {result['seed']}, "
          f"precision {result['precision']}")
    for architecture, summary in result["accuracy"].items():
        print(f"{architecture}: {format_mean_std(summary['mean'], summary['std'], summary['n'])}")
    if "recorded_in" in result:
        print(f"recorded in {result['recorded_in']}")
    print(json.dumps(result, indent=2))
    return 0


def describe_protocol(settings: dict, preset=None) -> str:
    """The protocol actually used: every setting, the preset's changed ones marked with their preset value."""
    base = preset.settings() if preset is not None else {}
    shown = []
    for key, value in settings.items():
        if key in ("name", "description"):
            continue
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        if key in base and base[key] != value and key != "architectures":
            previous = base[key]
            previous = ",".join(map(str, previous)) if isinstance(previous, (list, tuple)) else str(previous)
            text += f" (preset: {previous})"
        shown.append(f"{key}={text}")
    changed = any(key in base and base[key] != value for key, value in settings.items()
                  if key not in ("name", "description", "architectures"))
    header = f"protocol '{settings['name']}'" + (" with overrides" if changed else "")
    if settings.get("description"):
        header += f" (preset: {settings['description']})"
    return header + "\n  settings: " + ", ".join(shown)


def _show(args) -> int:
    from .artifacts import load_artifact

    artifact = load_artifact(args.artifact)
    meta, storage = artifact.metadata, artifact.metadata["storage"]
    print(f"artifact     {artifact.path}")
    print(f"recipe       {meta['recipe']} on {meta.get('dataset', '?')}, IPC {meta.get('ipc', '?')}, "
          f"seed {meta.get('seed', '?')}")
    print(f"container    {meta['container']['name']} {json.dumps(meta['container']['config'])}")
    print(f"storage      {storage['stored_floats']:,} floats ({storage['stored_bytes']:,} bytes) of a budget of "
          f"{storage['budget_floats']:,} (ratio {storage['budget_ratio']:.4f})")
    print(f"generated    {storage['generated_images_per_class']} images per class, {storage['generated_images_total']} in all, "
          f"shape {tuple(artifact.generated_images.shape[1:])}")
    for name, tensor in artifact.container.state_dict().items():
        print(f"  {name:<30} {tuple(tensor.shape)}")
    grid_note = (meta.get("grid") or {}).get("note")
    print(f"image grid   {artifact.path / 'grid.png'}" + (f" ({grid_note})" if grid_note else ""))
    return 0


def _list(args) -> int:
    from .data import DATASETS
    from .evaluation import PROTOCOLS
    from .listing import (list_containers, list_datasets, list_networks, list_objectives, list_protocols,
                          list_recipes)
    from .recipes import RECIPES

    if args.what == "recipes" and (args.dataset or args.ipc):
        from .recipes import describe_recipe, get_recipe

        DATASETS.get(args.dataset) if args.dataset else None
        if not args.dataset:
            raise CondensationError("list recipes --ipc needs --dataset")
        print("\n\n".join(describe_recipe(get_recipe(name, args.dataset, args.ipc or 1)) for name in sorted(RECIPES)))
    elif args.what == "recipes":
        for name in list_recipes():
            print(f"{name:<12} {RECIPES[name].description}")
    elif args.what == "protocols":
        for name in list_protocols():
            print(f"{name:<8} {PROTOCOLS[name].description}")
    else:
        names = {"datasets": list_datasets, "containers": list_containers, "objectives": list_objectives,
                 "networks": list_networks}[args.what]()
        print("\n".join(names))
    return 0


def _show_recipe(args) -> int:
    from .data import DATASETS
    from .recipes import describe_recipe, get_recipe

    if args.dataset:
        DATASETS.get(args.dataset)
    elif args.ipc:
        raise CondensationError("show-recipe --ipc needs --dataset")
    recipe = get_recipe(args.recipe, args.dataset, args.ipc or 1 if args.dataset else None)
    print(describe_recipe(recipe))
    if args.dataset:
        print(_storage_line(recipe, args.dataset, args.ipc or 1))
    return 0


def _storage_line(recipe, dataset: str, ipc: int) -> str:
    """What the recipe's container stores at this dataset's shape and IPC, against B."""
    from .containers import create_container
    from .data import Preprocessing
    from .data.datasets import published_spec

    spec = published_spec(dataset)
    if spec is None:
        return "  storage: depends on the images (no fixed shape for this dataset)"
    container = create_container(recipe.container, spec, ipc, Preprocessing("normalize"), **recipe.container_settings)
    stored, budget = container.stored_floats(), container.budget_floats
    parts = ", ".join(f"{name} {count:,}" for name, count in container.floats_per_part().items())
    line = (f"  storage: {stored:,} floats = {stored / budget:.2f}x B (B = {budget:,} for IPC {ipc}; {parts})")
    statement = container.budget_statement()
    if container.over_budget_ratio > 1:
        statement = (f"condensed at up to {container.over_budget_ratio:g}x B on purpose, then brought back within B by "
                     f"the recipe's post-condensation step ('{recipe.post_condense}')")
    return line + (f"\n  budget: {statement}" if statement else "")


def _export(args) -> int:
    from .artifacts import load_artifact
    from .exports import export_artifact

    artifact = load_artifact(args.artifact)
    written = export_artifact(artifact, args.format, args.out)
    files = sorted(path.name for path in written.iterdir())
    shown = ", ".join(files[:8]) + (f", ... ({len(files)} entries)" if len(files) > 8 else "")
    print(f"wrote {written} ({args.format}): {shown}; see {written / 'README.md'}")
    return 0


def _experts(args) -> int:
    """``condense experts``: settings come from ``--config`` (a JSON object), then ``--set key=value``;
    the key ``preset`` ('paper' or 'cpu') picks the starting values, the other keys are ExpertConfig fields."""
    import torch

    from .data import load_dataset
    from .engine.experts import expert_config, train_experts
    from .runtime import resolve_device

    values: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise ConfigError(f"expert config file '{path}' does not exist")
        try:
            values.update(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ConfigError(f"expert config file '{path}' is not valid JSON: {error}") from None
    values.update(_key_values(args.expert_set, "--set"))
    config = expert_config(values.pop("preset", "paper"), **values)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_root, validation_fraction=config.validation_fraction)
    generator = torch.Generator().manual_seed(args.seed)
    buffer = train_experts(dataset, config, args.out, generator, device, progress=not args.quiet)
    print(f"{buffer.count} experts x {buffer.epochs} epochs ({buffer.parameter_count:,} parameters each, "
          f"{config.preprocessing} preprocessing) in {args.out}")
    return 0


def _report(args) -> int:
    from .artifacts import load_results

    print(markdown_table([load_results(run) for run in args.runs]))  # each file checked before use
    if args.html:
        from .report import write_html_report

        print(f"wrote {write_html_report(args.runs, args.html)}")
    return 0


def markdown_table(rows: list[dict]) -> str:
    """One row per run: what it stored, what it generated, what it scored, under which protocol."""
    from .formatting import format_mean_std

    lines = ["| recipe | dataset | seed | container | objective | IPC | iterations | stored floats (ratio to B) | "
             "images/class | accuracy % (mean ± std, n) | random real % (draws) | protocol | distill s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        accuracy = "; ".join(f"{name}: {format_mean_std(a['mean'], a['std'], a['n'])}"
                             for name, a in r["accuracy"].items()) or "-"
        if r.get("paper_report"):
            accuracy += f"; paper statistic {r['paper_report']['mean']:.2f} (selected on the test set)"
        baseline = r.get("random_baseline")
        baseline_text = f"{baseline['mean']:.2f} ± {baseline['std']:.2f} ({len(baseline['draws'])})" if baseline else "-"
        lines.append(f"| {r['recipe']} | {r['dataset']} | {r['seed']} | {r['container']} | {r['objective'] or '-'} | "
                     f"{r['ipc']} | {r.get('iterations', '-')} | "
                     f"{r['stored_floats']:,} ({r['budget_ratio']:.3f}) | {r['generated_images_per_class']} | {accuracy} | "
                     f"{baseline_text} | {r['protocol']['name']} | {r['wall_clock_seconds']['distill']:.0f} |")
    return "\n".join(lines)


def _continual(args) -> int:
    """``condense continual``: the distill command's flag names, plus the stream's."""
    from .continual import ContinualConfig, continual, default_out
    from .results.continual import PLOT_FILE, RESULTS_FILE, format_continual_table
    from .registry import build_config

    flags = {name: getattr(args, name, None) for name in (
        "stream", "stream_seed", "recipe", "ipc", "seed", "out", "data_root", "device", "iterations", "container",
        "objective", "learning_rate", "optimizer", "preprocessing", "protocol", "checkpoint_every", "precision",
        "time_limit", "later_bases")}
    if args.reuse_memories:
        flags["reuse_memories"] = True
    if args.architectures:
        flags["architectures"] = tuple(name.strip() for name in args.architectures.split(",") if name.strip())
    if args.quiet:
        flags["progress"] = False
    for key, pairs, flag in (("container_settings", args.container_set, "--container-set"),
                             ("objective_settings", args.objective_set, "--objective-set"),
                             ("protocol_settings", args.protocol_set, "--protocol-set"),
                             ("post_condense_settings", args.post_condense_set, "--post-condense-set")):
        if pairs:
            flags[key] = _key_values(pairs, flag)
    config = build_config(ContinualConfig, {k: v for k, v in flags.items() if v is not None}, "continual")
    record = continual(config, resume=args.resume)
    print(format_continual_table(record))
    out = Path(config.out) if config.out else default_out(config, record["stream"]["name"])
    print(f"results: {out / RESULTS_FILE}; plot: {out / PLOT_FILE}")
    return 0


def _query(args) -> int:
    from .query import describe_query, query_artifact

    print(describe_query(query_artifact(args.run, args.mix, args.out, images_per_mix=args.per_mix)))
    return 0


COMMANDS = {"continual": _continual, "query": _query, "show-recipe": _show_recipe, "report": _report, "experts": _experts,
            "distill": _distill, "evaluate": _evaluate, "show": _show, "list": _list, "export": _export}

if __name__ == "__main__":
    sys.exit(main())
