"""``condense``: a thin command line over condensation.run (distill, evaluate, show, list, export)."""
from __future__ import annotations

import argparse
import json
import signal
import sys

from .errors import CondensationError, Interrupted


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condense", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    d = commands.add_parser("distill", help="condense a dataset into a container, save it and evaluate it")
    d.add_argument("--config", help="JSON or TOML file of run settings (flags override it)")
    d.add_argument("--recipe")
    d.add_argument("--dataset")
    d.add_argument("--ipc", type=int)
    d.add_argument("--iterations", type=int)
    d.add_argument("--seed", type=int)
    d.add_argument("--device")
    d.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: no-gradient forwards (real features and gradients, test accuracy) in bfloat16")
    d.add_argument("--time-limit", metavar="DURATION",
                   help="stop condensing at the first iteration after this wall clock (e.g. 900, 90s, 20m, 1.5h)")
    d.add_argument("--out")
    d.add_argument("--data-root")
    d.add_argument("--container")
    d.add_argument("--container-set", action="append", metavar="KEY=VALUE", help="container setting (repeatable)")
    d.add_argument("--objective")
    d.add_argument("--objective-set", action="append", metavar="KEY=VALUE", help="objective setting (repeatable)")
    d.add_argument("--lr", type=float, dest="learning_rate", help="container learning rate")
    d.add_argument("--optimizer", choices=["sgd", "adam"], help="container optimizer (default: the recipe's)")
    d.add_argument("--post-condense-set", action="append", metavar="KEY=VALUE",
                   help="setting of the recipe's post-condensation step, e.g. HMN pruning's beta_grid=[0,0.5,1]")
    d.add_argument("--preprocessing", choices=["normalize", "zca", "none"], help="override the recipe's")
    d.add_argument("--protocol")
    d.add_argument("--protocol-set", action="append", metavar="KEY=VALUE", help="protocol setting (repeatable)")
    d.add_argument("--architectures", help="comma-separated network names")
    d.add_argument("--no-evaluate", action="store_true")
    d.add_argument("--random-baseline", action="store_true", help="also evaluate random real images (>= 3 draws)")
    d.add_argument("--random-baseline-draws", type=int, help="independent draws of random real images (default 3)")
    d.add_argument("--checkpoint-every", type=int)
    d.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    e = commands.add_parser("evaluate", help="evaluate a saved artifact")
    e.add_argument("artifact")
    e.add_argument("--protocol", default="cpu")
    e.add_argument("--protocol-set", action="append", metavar="KEY=VALUE")
    e.add_argument("--architectures")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: test-set forwards in bfloat16")
    e.add_argument("--data-root")

    s = commands.add_parser("show", help="budget, shapes and the image grid of an artifact")
    s.add_argument("artifact")

    l = commands.add_parser("list", help="list registered names")
    l.add_argument("what", choices=["datasets", "recipes", "protocols", "containers", "objectives", "networks"])
    l.add_argument("--dataset", help="recipes: resolve every recipe's settings for this dataset (with --ipc)")
    l.add_argument("--ipc", type=int, default=None, help="recipes: the IPC to resolve for (default 1)")

    sr = commands.add_parser("show-recipe", help="a recipe's settings for a dataset and IPC, each with its source")
    sr.add_argument("recipe")
    sr.add_argument("--dataset", help="without it: the settings that hold for every dataset")
    sr.add_argument("--ipc", type=int, default=None, help="default 1")

    t = commands.add_parser("experts", help="train expert trajectories on real data for trajectory matching (MTT)")
    t.add_argument("--dataset", required=True)
    t.add_argument("--data-root")
    t.add_argument("--out", required=True)
    t.add_argument("--config", help="JSON file of expert settings (see condensation.engine.experts)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", dest="expert_set", help="expert setting (repeatable)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--quiet", action="store_true")

    r = commands.add_parser("report", help="a markdown table of the results.json of several run directories")
    r.add_argument("runs", nargs="+")

    x = commands.add_parser("export", help="export an artifact's generated set to a field layout")
    x.add_argument("artifact")
    x.add_argument("--format", choices=["dc", "mtt"], required=True)
    x.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime import tune_process

    tune_process()
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM as Ctrl-C: stop cleanly, say how to resume
    try:
        return COMMANDS[args.command](args)
    except Interrupted as error:
        print(f"condense: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        hint = " (rerun the same command with --resume to continue from the last checkpoint or artifact)" \
            if args.command == "distill" else ""
        print(f"condense: interrupted{hint}", file=sys.stderr)
        return 130
    except CondensationError as error:
        print(f"condense: error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        "precision": args.precision, "time_limit": args.time_limit,
        "architectures": tuple(args.architectures.split(",")) if args.architectures else None,
    }
    for key, pairs, flag in (("container_settings", args.container_set, "--container-set"),
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


def format_results_table(rows: list[dict]) -> str:
    """The small table the README's main command prints."""
    header = f"{'method':<10} {'IPC':>4} {'stored floats':>14} {'images/class':>12} {'test accuracy %':>18} {'random real %':>16}"
    lines = [header, "-" * len(header)]
    for r in rows:
        accuracies = r.get("accuracy") or {}
        first = next(iter(accuracies.values()), None)
        accuracy_text = f"{first['mean']:.2f} ± {first['std']:.2f}" if first else "not evaluated"
        baseline = r.get("random_baseline")
        baseline_text = f"{baseline['mean']:.2f} ± {baseline['std']:.2f}" if baseline else "-"
        lines.append(f"{r['recipe']:<10} {r['ipc']:>4} {r['stored_floats']:>14,} {r['generated_images_per_class']:>12} "
                     f"{accuracy_text:>18} {baseline_text:>16}")
    protocol = rows[0]["protocol"] if rows else {}
    if protocol:
        lines.append(f"protocol '{protocol['name']}': {protocol.get('description', '')}")
    for r in rows:
        if r.get("stopped_by_time_limit"):
            lines.append(f"{r['recipe']}: stopped by the {r['time_limit_seconds']:g} s time limit after "
                         f"{r['iterations']} of {r['iterations_planned']} iterations")
    return "\n".join(lines)


def _evaluate(args) -> int:
    from .run import evaluate_artifact

    result = evaluate_artifact(args.artifact, args.protocol,
                               tuple(args.architectures.split(",")) if args.architectures else None,
                               args.seed, args.device, args.data_root, precision=args.precision,
                               **_key_values(args.protocol_set, "--protocol-set"))
    for architecture, summary in result["accuracy"].items():
        print(f"{architecture}: {summary['mean']:.2f} ± {summary['std']:.2f} (n={summary['n']}, protocol {args.protocol})")
    print(json.dumps(result, indent=2))
    return 0


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
    print(f"image grid   {artifact.path / 'grid.png'}")
    return 0


def _list(args) -> int:
    from .containers import CONTAINERS
    from .data import DATASETS
    from .evaluation import PROTOCOLS
    from .networks import NETWORKS
    from .objectives import OBJECTIVES
    from .recipes import RECIPES

    if args.what == "recipes" and (args.dataset or args.ipc):
        from .recipes import describe_recipe, get_recipe

        DATASETS.get(args.dataset) if args.dataset else None
        if not args.dataset:
            raise CondensationError("list recipes --ipc needs --dataset")
        print("\n\n".join(describe_recipe(get_recipe(name, args.dataset, args.ipc or 1)) for name in sorted(RECIPES)))
    elif args.what == "recipes":
        for name in sorted(RECIPES):
            print(f"{name:<12} {RECIPES[name].description}")
    elif args.what == "protocols":
        for name in sorted(PROTOCOLS):
            print(f"{name:<8} {PROTOCOLS[name].description}")
    else:
        registry = {"datasets": DATASETS, "containers": CONTAINERS, "objectives": OBJECTIVES, "networks": NETWORKS}[args.what]
        print("\n".join(registry.names()))
    return 0


def _show_recipe(args) -> int:
    from .data import DATASETS
    from .recipes import describe_recipe, get_recipe

    if args.dataset:
        DATASETS.get(args.dataset)
    elif args.ipc:
        raise CondensationError("show-recipe --ipc needs --dataset")
    print(describe_recipe(get_recipe(args.recipe, args.dataset, args.ipc or 1 if args.dataset else None)))
    return 0


def _export(args) -> int:
    from .artifacts import export_dc, export_mtt, load_artifact

    artifact = load_artifact(args.artifact)
    written = export_dc(artifact, args.out) if args.format == "dc" else export_mtt(artifact, args.out)
    print(f"wrote {written}")
    return 0


def _experts(args) -> int:
    from .engine.experts import experts_command

    return experts_command(args, _key_values(args.expert_set, "--set"))


def _report(args) -> int:
    from .artifacts import load_results

    print(markdown_table([load_results(run) for run in args.runs]))  # each file checked before use
    return 0


def markdown_table(rows: list[dict]) -> str:
    """One row per run: what it stored, what it generated, what it scored, under which protocol."""
    lines = ["| recipe | dataset | seed | container | objective | IPC | iterations | stored floats (ratio to B) | "
             "images/class | accuracy % (mean ± std, n) | random real % (draws) | protocol | distill s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        accuracy = "; ".join(f"{name}: {a['mean']:.2f} ± {a['std']:.2f} (n={a['n']})" for name, a in r["accuracy"].items()) or "-"
        baseline = r.get("random_baseline")
        baseline_text = f"{baseline['mean']:.2f} ± {baseline['std']:.2f} ({len(baseline['draws'])})" if baseline else "-"
        lines.append(f"| {r['recipe']} | {r['dataset']} | {r['seed']} | {r['container']} | {r['objective'] or '-'} | "
                     f"{r['ipc']} | {r.get('iterations', '-')} | "
                     f"{r['stored_floats']:,} ({r['budget_ratio']:.3f}) | {r['generated_images_per_class']} | {accuracy} | "
                     f"{baseline_text} | {r['protocol']['name']} | {r['wall_clock_seconds']['distill']:.0f} |")
    return "\n".join(lines)


COMMANDS = {"show-recipe": _show_recipe, "report": _report, "experts": _experts, "distill": _distill, "evaluate": _evaluate, "show": _show, "list": _list, "export": _export}

if __name__ == "__main__":
    sys.exit(main())
