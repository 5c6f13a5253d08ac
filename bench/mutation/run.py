"""Mutation testing of the modules where a silent break hurts most (groups.toml).

    bench/mutation/run                  every group
    bench/mutation/run polling refresh  those groups
    bench/mutation/run --children 1 ... fewer parallel mutants (default 2)
    bench/mutation/run --timeout-multiplier 50 ...  more time per mutant (default 15)
    bench/mutation/run --resume GROUP   go on with a stopped run in its work copy: only the
                                        mutants without a result run (and those of functions
                                        changed since, and the timeouts), against the
                                        current files and tests
    bench/mutation/run --recheck GROUP  after tests were added: run the group's current
                                        test files against each mutant the last run left
                                        alive (in its work copy), and update the results
        [--only PYTEST_ARG ...]         (or only the tests added since the run)
    bench/mutation/run --collect GROUP  only (re)write the results of a finished run
    bench/mutation/run --table          the results so far as the Markdown table of REPORT.md

Each group is mutated in its own copy of the tracked files (under --work), against one
throwaway PostgreSQL shared by the whole run. Per group it writes
bench/mutation/results/GROUP.json (counts per module, survivors, minutes taken) and
GROUP-survivors.diff (each surviving mutant's change), and prints a summary.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PYTHON = ROOT / ".venv" / "bin" / "python"
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
MUTMUT_REQUIREMENT = "mutmut>=3.8,<4"

# Package data that mutmut does not copy into mutants/ by itself (it copies .py files).
ALSO_COPY = [
    "migrations",
    "authenticator_app",
    "backchannel/resources",
    "backchannel/endpoints/openapi.json",
    "backchannel/oauth/authorization_types",
    "backchannel/py.typed",
]


def load_groups() -> dict[str, dict[str, Any]]:
    with (HERE / "groups.toml").open("rb") as f:
        groups: dict[str, dict[str, Any]] = tomllib.load(f)["groups"]
    return groups


def ensure_mutmut() -> None:
    if not MUTMUT.exists():
        print(f"mutation: installing {MUTMUT_REQUIREMENT} into .venv", file=sys.stderr)
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", MUTMUT_REQUIREMENT], check=True
        )


def start_postgres() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [str(PYTHON), "-m", "bench.mutation.postgres"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    dsn = server.stdout.readline().strip()
    if not dsn:
        server.wait()
        raise SystemExit("mutation: the PostgreSQL server did not start")
    return server, dsn


# mutmut stops a mutant's tests after this many times their clean running time (its own
# default is 15); --timeout-multiplier raises it on a machine busy with other work.
TIMEOUT_MULTIPLIER = 15.0

# mutmut's exit codes for a mutant stopped at its time limit.
TIMEOUT_CODES = {-24, 24, 36, 152, 255}


def setup_cfg(modules: list[str], tests: list[str], timeout_multiplier: float) -> str:
    def listed(items: list[str]) -> str:
        return "".join(f"\n    {item}" for item in items)

    return (
        "[mutmut]\n"
        "source_paths = backchannel\n"
        f"timeout_multiplier = {timeout_multiplier}\n"
        f"only_mutate ={listed(modules)}\n"
        f"pytest_add_cli_args_test_selection ={listed(tests)}\n"
        f"pytest_add_cli_args ={listed(['-p', 'no:cacheprovider'])}\n"
        f"also_copy ={listed(ALSO_COPY)}\n"
    )


def copy_tree(work: Path, keep: tuple[str, ...] = ()) -> None:
    """Make ``work`` a copy of the tracked files, removing what was there except ``keep``."""
    if work.exists() and not keep:
        shutil.rmtree(work)
    elif work.exists():
        for entry in work.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    work.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if not source.exists() and not source.is_symlink():
            continue
        target = work / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def results_of(work: Path) -> dict[str, str]:
    listing = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("backchannel."):
            statuses[name] = status
    return statuses


def module_of(mutant: str, modules: list[str]) -> str:
    for module in modules:
        dotted = module.removesuffix(".py").replace("/", ".") + "."
        if mutant.startswith(dotted):
            return module
    return "?"


def function_hashes(work: Path, modules: list[str]) -> dict[str, str]:
    """The hash mutmut keeps of each mutated function's source, as ``module.function``."""
    hashes: dict[str, str] = {}
    for module in modules:
        meta = work / "mutants" / f"{module}.meta"
        if meta.exists():
            dotted = module.removesuffix(".py").replace("/", ".")
            for function, digest in json.loads(meta.read_text())["hash_by_function_name"].items():
                hashes[f"{dotted}.{function}"] = digest
    return hashes


def forget_timeouts(work: Path, modules: list[str]) -> int:
    """Take the result away from each mutant that ran past its time limit, so that mutmut
    runs it again; the number of such mutants."""
    forgotten = 0
    for module in modules:
        meta = work / "mutants" / f"{module}.meta"
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        for mutant, code in codes.items():
            if code in TIMEOUT_CODES:
                codes[mutant] = None
                forgotten += 1
        meta.write_text(json.dumps(data, indent=4))
    return forgotten


def run_group(
    name: str,
    group: dict[str, Any],
    work_root: Path,
    children: int,
    env: dict[str, str],
    resume: bool = False,
    timeout_multiplier: float = TIMEOUT_MULTIPLIER,
) -> dict[str, Any]:
    """Run mutmut on the group in a fresh copy of the tracked files.

    ``resume`` goes on with a stopped run instead: the copy is brought up to the current
    files but keeps mutants/, where mutmut holds each mutant's result and the hash of each
    mutated function's source. mutmut then runs the mutants without a result and those of
    the functions whose source changed (it resets their results itself) and keeps the
    rest. The test-to-function map is collected afresh, from the group's current tests;
    the recheck verdicts (rechecked.json) it had for changed functions are dropped, since
    they were reached on the old code (so recheck after the resumed run, not during it).
    Mutants that ran past their time limit run again: on a machine busy with other work a
    test starved of CPU times out as surely as one the mutant made hang, so a timeout
    is no verdict until it is repeated (with a higher --timeout-multiplier).
    The minutes add up over the runs."""
    work = work_root / name
    minutes_before = 0.0
    if resume:
        if not (work / "mutants").is_dir():
            raise SystemExit(f"mutation: no run of {name} to resume in {work}")
        old_hashes = function_hashes(work, group["modules"])
        rechecked_file = work / "rechecked.json"
        rechecked_before: dict[str, str] = (
            json.loads(rechecked_file.read_text()) if rechecked_file.exists() else {}
        )
        minutes_file = work / "minutes"
        minutes_before = float(minutes_file.read_text()) if minutes_file.exists() else 0.0
        copy_tree(work, keep=("mutants", "minutes", "rechecked.json", "mutmut.log"))
        for module in group["modules"]:  # newer than its mutants: mutmut compares each function
            (work / module).touch()
        # Without stats to load, mutmut collects them from the tests now listed, and keeps
        # the results (a changed test selection with stats loaded would reset them all).
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        forgotten = forget_timeouts(work, group["modules"])
        print(f"mutation: {name}: {forgotten} timed-out mutants to run again", flush=True)
    else:
        copy_tree(work)
    (work / "setup.cfg").write_text(setup_cfg(group["modules"], group["tests"], timeout_multiplier))
    started = time.monotonic()
    log = work / "mutmut.log"
    with log.open("a" if resume else "w") as out:
        done = subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(children)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    minutes = round(minutes_before + (time.monotonic() - started) / 60, 1)
    if resume:
        new_hashes = function_hashes(work, group["modules"])
        changed = {f for f, digest in old_hashes.items() if new_hashes.get(f) != digest}
        stale = {m for m in rechecked_before if m.partition("__mutmut_")[0] in changed}
        if stale:
            rechecked = json.loads(rechecked_file.read_text())
            kept = {m: v for m, v in rechecked.items() if m not in stale}
            rechecked_file.write_text(json.dumps(kept, indent=2) + "\n")
    if done.returncode != 0:
        raise SystemExit(f"mutation: mutmut failed for {name}; see {log}")
    (work / "minutes").write_text(f"{minutes}\n")
    return collect(name, group, work_root, children)


def collect(name: str, group: dict[str, Any], work_root: Path, children: int) -> dict[str, Any]:
    """Count a finished run's mutants per module; survivors named as equivalent in
    groups.toml (with the reason) are counted as such."""
    work = work_root / name
    modules: list[str] = group["modules"]
    equivalent: dict[str, str] = group.get("equivalent", {})
    statuses = results_of(work)
    rechecked = work / "rechecked.json"
    if rechecked.exists():  # mutants the group's newer tests were run against since
        statuses.update(json.loads(rechecked.read_text()))
    for mutant in equivalent:  # also when no test reaches it (code no caller runs)
        if statuses.get(mutant) in ("survived", "no tests"):
            statuses[mutant] = "equivalent"
    per_module: dict[str, Counter[str]] = {m: Counter() for m in modules}
    for mutant, status in statuses.items():
        per_module.setdefault(module_of(mutant, modules), Counter())[status] += 1
    alive = sorted(m for m, s in statuses.items() if s not in ("killed", "equivalent"))
    diffs = [
        subprocess.run(
            [str(MUTMUT), "show", mutant], cwd=work, capture_output=True, text=True
        ).stdout
        for mutant in alive
        if statuses[mutant] != "not checked"  # never run: no result to show
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}-survivors.diff").write_text("\n".join(diffs))
    minutes_file = work / "minutes"
    summary: dict[str, Any] = {
        "group": name,
        "title": group.get("title", name),
        "minutes": float(minutes_file.read_text()) if minutes_file.exists() else None,
        "children": children,
        "tests": group["tests"],
        "modules": {m: dict(sorted(c.items())) for m, c in per_module.items()},
        "not_killed": {m: statuses[m] for m in alive},
        "equivalent": {m: r for m, r in equivalent.items() if statuses.get(m) == "equivalent"},
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def recheck(
    name: str,
    group: dict[str, Any],
    work_root: Path,
    env: dict[str, str],
    only: list[str] | None = None,
    children: int = 2,
    mutants: list[str] | None = None,
) -> None:
    """Run the group's current test files against each mutant the last run left alive.

    ``only`` (pytest arguments) runs just those tests instead: enough when they are
    the tests added since the run, since the others already let these mutants live;
    ``mutants`` (fnmatch patterns) limits the recheck to the survivors they match."""
    work = work_root / name
    if not (work / "mutants").is_dir():
        raise SystemExit(f"mutation: no finished run of {name} in {work}")
    shutil.copytree(ROOT / "tests", work / "mutants" / "tests", dirs_exist_ok=True)
    statuses = results_of(work)
    rechecked_file = work / "rechecked.json"
    rechecked: dict[str, str] = (
        json.loads(rechecked_file.read_text()) if rechecked_file.exists() else {}
    )
    equivalent = group.get("equivalent", {})
    todo = [
        mutant
        for mutant, status in sorted(statuses.items())
        if status not in ("killed", "timeout", "not checked")
        and rechecked.get(mutant) != "killed"
        and mutant not in equivalent
        and (not mutants or any(fnmatch.fnmatchcase(mutant, m) for m in mutants))
    ]
    tests = only or group["tests"]

    def run_one(mutant: str) -> tuple[str, str]:
        run = subprocess.run(
            [str(PYTHON), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=work / "mutants",
            env={**env, "MUTANT_UNDER_TEST": mutant},
            capture_output=True,
        )
        return mutant, "killed" if run.returncode != 0 else "survived"

    with ThreadPoolExecutor(max_workers=children) as pool:
        for mutant, verdict in pool.map(run_one, todo):
            rechecked[mutant] = verdict
            print(f"  {mutant}: {verdict}", flush=True)
            rechecked_file.write_text(json.dumps(rechecked, indent=2) + "\n")


def table() -> str:
    """One row per module from results/*.json: a timeout counts as killed (the mutant
    made a test hang), "no tests" and "suspicious" as survived; the survival rate leaves
    the equivalent mutants out."""
    rows = [
        "| group | module | mutants | killed (timeouts) | survived | equivalent | not run "
        "| minutes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    totals = Counter[str]()
    for name in load_groups():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        summary = json.loads(path.read_text())
        for module, counts in summary["modules"].items():
            c = Counter(counts)
            killed = c["killed"] + c["timeout"]
            equivalent = c["equivalent"]
            not_run = c["not checked"]  # a run stopped before reaching them
            generated = sum(c.values())
            survived = generated - killed - equivalent - not_run
            totals.update(generated=generated, killed=killed, survived=survived)
            totals.update(equivalent=equivalent, not_run=not_run)
            rows.append(
                f"| {name} | {module} | {generated} | {killed} ({c['timeout']}) | {survived} "
                f"| {equivalent} | {not_run} | {summary['minutes']} |"
            )
    alive = totals["generated"] - totals["equivalent"] - totals["not_run"]
    rate = 100 * totals["survived"] / alive if alive else 0.0
    rows.append(
        f"| **all** | | {totals['generated']} | {totals['killed']} | {totals['survived']} "
        f"| {totals['equivalent']} | {totals['not_run']} | |"
    )
    rows.append("")
    rows.append(f"Survival rate (survived / mutants run, equivalent ones left out): {rate:.1f} %")
    return "\n".join(rows)


def print_summary(summary: dict[str, Any]) -> None:
    print(f"{summary['group']}: {summary['minutes']} min")
    for module, counts in summary["modules"].items():
        print(f"  {module}: {counts}")
    for mutant, status in summary["not_killed"].items():
        print(f"  not killed: {mutant} ({status})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("groups", nargs="*", help="groups from groups.toml (default: all)")
    parser.add_argument("--children", type=int, default=2, help="mutants run at once")
    parser.add_argument("--work", type=Path, default=Path("/tmp/backchannel-mutation"))
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        default=TIMEOUT_MULTIPLIER,
        help="a mutant's tests may take this many times their clean time (default 15)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--recheck", action="store_true", help="see above")
    mode.add_argument("--resume", action="store_true", help="see above")
    mode.add_argument("--collect", action="store_true", help="see above")
    mode.add_argument("--table", action="store_true", help="see above")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PYTEST_ARG",
        help="with --recheck: run only these tests (those added since the run)",
    )
    parser.add_argument(
        "--mutants",
        nargs="+",
        metavar="PATTERN",
        help="with --recheck: only the survivors matching these fnmatch patterns",
    )
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    groups = load_groups()
    chosen = args.groups or list(groups)
    unknown = [g for g in chosen if g not in groups]
    if unknown:
        raise SystemExit(f"mutation: no such group {unknown}; groups: {', '.join(groups)}")
    ensure_mutmut()
    if args.collect:
        for name in chosen:
            print_summary(collect(name, groups[name], args.work, args.children))
        return
    server, dsn = start_postgres()
    env = {
        **os.environ,
        "BACKCHANNEL_TEST_DATABASE_URL": dsn,
        "BACKCHANNEL_TEST_TEMPLATE_READY": "1",
    }
    try:
        for name in chosen:
            if args.recheck:
                recheck(name, groups[name], args.work, env, args.only, args.children, args.mutants)
                summary = collect(name, groups[name], args.work, args.children)
            else:
                summary = run_group(
                    name,
                    groups[name],
                    args.work,
                    args.children,
                    env,
                    resume=args.resume,
                    timeout_multiplier=args.timeout_multiplier,
                )
            print_summary(summary)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
