"""The README's Python example runs (on tiny arrays instead of CIFAR-10), and the generated results chart
in the docs is what benchmarks/plot_results.py writes from the results file today."""

import json
import os
import re

import numpy as np
import pytest

from benchmarks import docs_blocks, plot_results
from tests.conftest import ROOT


def _readme_python() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "DistillationModel" in b]
    imports = [line for line in block.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import keras, tensorflow as tf", "import iep"], imports  # the public names only
    return block


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """Same code; only the data (no download here), the teacher (a fresh network), the size and the epochs
    are swapped, each by a literal replacement that must apply."""
    code = _readme_python()
    swaps = {
        "keras.datasets.cifar10.load_data()": "_tiny_cifar()",
        'iep.load_teacher("runs/teacher")': (
            'iep.build_network("resnet8", 10, (32, 32, 3), data.mean, data.std, name="teacher")'
        ),
        '"wrn-16-1"': '"resnet8"',
        "iep.TrainConfig(epochs=100)": "iep.TrainConfig(epochs=1, batch_size=16, progress=False, export=False)",
        "epochs=30": "epochs=1",
        ".batch(128)": ".batch(16)",
        '"runs/mine"': "str(tmp_path / 'mine')",
        '"runs/fit"': "str(tmp_path / 'fit')",
    }
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    rng = np.random.default_rng(0)

    def _tiny_cifar():
        x = rng.integers(0, 255, size=(40, 32, 32, 3)).astype(np.uint8)
        return (x[:32], (np.arange(32) % 10).reshape(-1, 1)), (x[32:], (np.arange(8) % 10).reshape(-1, 1))

    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"_tiny_cifar": _tiny_cifar, "tmp_path": tmp_path})
    metrics = json.loads((tmp_path / "mine" / "metrics.json").read_text())
    assert metrics["history"][0]["loss/alteration"] > 0 and metrics["distill"] == "iep"
    assert os.listdir(tmp_path / "fit")  # the TensorBoard callback wrote its logs


def test_the_results_charts_are_up_to_date():
    for name, block in plot_results.blocks().items():
        for path in plot_results.BLOCKS[name]:
            text = open(path).read()
            assert block in text, f"{os.path.relpath(path, ROOT)}: run python benchmarks/plot_results.py"
        if name in ("results-chart", "short-chart"):
            assert "bar [" in block and block.count(",") >= 10
    headline = plot_results.blocks()["results-chart"]
    assert "100 epochs" in headline and "line [" in headline and "Kendall's τ" in headline


def test_the_measured_blocks_are_up_to_date_and_from_quiet_runs():
    """Every timing figure in the docs is its results file's, rendered now; and it was measured on a quiet
    machine (benchmarks/timing.py), so that no ratio of the docs is a ratio of loads."""
    for name, (filename, _, _) in docs_blocks.BLOCKS.items():
        text = open(docs_blocks.doc_path(name)).read()
        assert docs_blocks.render(name) in text, f"{name}: run python benchmarks/docs_blocks.py"
        results = json.load(open(os.path.join(docs_blocks.RESULTS_DIR, filename)))
        if name in docs_blocks.ACCURACY_BLOCKS:
            continue
        assert results["machine_load"]["quiet"], f"{filename} was measured on a busy machine: measure it again"


def test_the_table_prints_a_spread_only_over_two_or_more_seeds():
    assert docs_blocks.mean_spread(0.8068, 0.0, 1) == "80.68"
    assert docs_blocks.mean_spread(0.8078, 0.002, 2) == "80.78 ± 0.20"


def test_kendall_tau_of_two_rankings():
    tau, shared = plot_results.kendall_tau({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 10, "b": 20, "c": 40, "d": 30})
    assert shared == 4 and tau == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair of 6
    assert plot_results.kendall_tau({"a": 1, "b": 2, "x": 0}, {"a": 1, "b": 3})[1] == 2


def test_docs_state_the_clock_rule_the_code_uses():
    from iep.methods import CLOCK_RULE

    text = open(os.path.join(ROOT, "docs", "methods.md")).read()
    (block,) = re.findall(r"<!-- clock-rule:begin.*?-->\n> (.*?)\n<!-- clock-rule:end -->", text, re.S)
    assert block == CLOCK_RULE


def test_the_public_names_import_from_iep_and_stay_the_deep_ones():
    import iep
    from iep.engine.trainer import Trainer
    from iep.keras_fit import DistillationModel

    for name in iep.__all__:
        assert getattr(iep, name) is not None, name
    assert iep.Trainer is Trainer and iep.DistillationModel is DistillationModel
    assert "kd" in iep.methods.methods()
    with pytest.raises(AttributeError, match="has no attribute 'trainer'"):
        iep.trainer  # noqa: B018


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower()).replace("_", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_in_the_docs_resolves():
    """README.md and docs/*.md: every relative link (and image) names a file of the repository, and every
    #anchor a heading of its target."""
    pages = [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", name)
        for name in sorted(os.listdir(os.path.join(ROOT, "docs")))
        if name.endswith(".md")
    ]
    broken = []
    for page in pages:
        text = open(page).read()
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such file)")
            elif anchor and resolved.endswith(".md"):
                headings = re.findall(r"^#+ (.+)$", open(resolved).read(), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _flag_names(app_module: str) -> set[str]:
    """The flags an app defines (read from its source: the three apps' flags cannot share one process)."""
    import ast

    path = os.path.join(ROOT, "iep", "apps", f"{app_module}.py")
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE"):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
    return names


def _documented_commands():
    """(page, program, [flag tokens]) for every train/eval/visualize command in a bash block of the docs."""
    programs = {"train.py": "train", "iep-train": "train", "eval.py": "evaluate", "iep-eval": "evaluate",
                "visualize.py": "visualize", "iep-visualize": "visualize"}  # fmt: skip
    pages = [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", n) for n in sorted(os.listdir(os.path.join(ROOT, "docs"))) if n.endswith(".md")
    ]
    for page in pages:
        for block in re.findall(r"```bash\n(.*?)```", open(page).read(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for command in line.split(";"):
                    words = command.split("#")[0].split()
                    hits = [i for i, w in enumerate(words) if w in programs]
                    if hits:
                        i = hits[0]
                        yield os.path.relpath(page, ROOT), programs[words[i]], words[i + 1 :]


def test_every_documented_command_uses_flags_its_program_has():
    from iep.methods import methods

    known = {app: _flag_names(app) | {"helpfull", "help", "flagfile"} for app in ("train", "evaluate", "visualize")}
    commands = list(_documented_commands())
    assert len(commands) > 30  # the walk reads the pages' commands
    wrong = []
    for page, app, words in commands:
        flags_ = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--") and "$" not in w)
        for name in flags_:
            bare = name[2:] if name.startswith("no") and name[2:] in known[app] else name
            if bare not in known[app]:
                wrong.append(f"{page}: {app} has no --{name}")
        distill = flags_.get("distill")
        if app == "train" and distill and "plugins" not in flags_ and distill not in methods():
            wrong.append(f"{page}: --distill={distill} is no method")
    assert not wrong, "\n".join(wrong)


def test_the_scarce_data_chart_draws_each_method_by_images_per_class_beside_the_papers_gains():
    paper = json.load(open(plot_results.PAPER))
    assert "No run of the scarce-data study" in plot_results.scarce_chart({"results": []}, paper)

    def row(method, test, seeds=3):
        return {"factor": "rate_0.01", "rate": 0.01, "method": method, "seeds": seeds, "validation": test,
                "validation_std": 0.01, "test": test, "test_std": 0.01, "runs": []}  # fmt: skip

    scarce = {"results": [row("none", 0.40), row("iep_bb", 0.47), row("co", 0.41, seeds=2),
                          {**row("co", 0.30, seeds=1), "factor": "rate_0.01_main_steps"}]}  # fmt: skip
    block = plot_results.scarce_chart(scarce, paper)
    assert "x-axis [45, 450]" in block and block.count("    line [") == 3  # none, co, iep_bb: both points
    ten_percent = {r["method"]: r["test"] for r in plot_results.paper_rows(paper)}
    assert f"line [40.0, {100 * ten_percent['none']:.1f}]" in block
    gains = next(line for line in block.splitlines() if line.startswith("| 45 (vanilla 40.00) | 2/3 |"))
    cells = gains.split("|")[3:-1]
    columns = list(plot_results.SCARCE_METHODS[1:])
    assert cells[columns.index("iep_bb")].strip() == "+7.00" and cells[columns.index("co")].strip() == "+1.00"
    assert cells[columns.index("at")].strip() == "—"  # not run at this rate
    assert "| 50 (vanilla 40.65) | +7.01 | +7.64 | +16.73 | -17.38 | +13.93 | +0.15 | +15.24 | +18.39 |" in block
    assert (
        "Lines: none black, co orange, iep_bb red." in block and "Not drawn until every point has a run: at," in block
    )
    assert (
        "As in the paper, distillation pays most where data is scarcest: 0 of 2 methods gain more over the vanilla "
        "student at 45 images per class than at 450." in block
    )
    assert (
        "As in the paper, where iep_bb leads at 50 images per class (+18.39) and CO is level with its vanilla "
        "student (+0.15), here iep_bb leads (+7.00 ± 1.00, 3 seeds)." in block
    )

    # Once every method has two columns, a column still in progress stays off the chart and in the table.
    complete = [row(m, 0.40 + i / 100) for i, m in enumerate(plot_results.SCARCE_METHODS)]
    partial = {**row("none", 0.50, seeds=1), "factor": "rate_0.025", "rate": 0.025}
    block = plot_results.scarce_chart({"results": [*complete, partial]}, paper)
    assert "x-axis [45, 450]" in block and block.count("    line [") == len(plot_results.SCARCE_METHODS)
    assert "Not on the chart until every method has a run there: 112 images per class" in block
    assert "| 112 (vanilla 50.00) | 1 |" in block


def test_the_scarce_data_sentences_give_the_measured_reason_with_the_uncapped_diagnostic():
    def row(method, test, ce, factor="rate_0.01", kept=None):
        losses = {"loss/cross_entropy": [2.5, ce]} | ({"distill/clip_ratio": [0.01, kept]} if kept else {})
        run = {"seed": 0, "validation": test, "test": test, "losses": losses}
        return {"factor": factor, "rate": 0.01, "method": method, "seeds": 1, "validation": test, "test": test,
                "validation_std": 0.0, "test_std": 0.0, "runs": [run]}  # fmt: skip

    rows = [row("none", 0.40, 0.12), row("co", 0.61, 0.31), row("iep", 0.50, 0.22, kept=0.05)]
    by_size = {45: {r["method"]: r for r in rows}}
    uncapped = {"results": [*rows, row("iep", 0.45, 0.9, factor="rate_0.01_no_clip")]}
    sentence = plot_results.departure_sentence(by_size, uncapped)
    assert "here co leads (+21.00 ± 0.00, 1 seed) and the best IEP, iep, gains +10.00." in sentence
    assert (
        "Measured: co adds its feature gradient uncapped and its students end less fitted to their few labels "
        "(last-epoch training cross-entropy 0.31 against the vanilla student's 0.12), while IEP's clip keeps 5 % of "
        "its distillation gradient's norm; without the cap iep +5.00 (capped +10.00): the cap is not what keeps IEP "
        "below co." in sentence
    )
    helped = {"results": [*rows, row("iep", 0.55, 0.9, factor="rate_0.01_no_clip")]}
    assert "the cap holds IEP back." in plot_results.departure_sentence(by_size, helped)
    assert "without the cap" not in plot_results.departure_sentence(by_size, {"results": rows})


def _published_figures() -> set[str]:
    """The paper's own figures (its Table 1 and their gains over its vanilla student), which pages quote."""
    published = set()
    for row in plot_results.PAPER_TABLE1.values():
        for accuracy in row.values():
            published |= {f"{accuracy:.2f}", f"{abs(accuracy - row['none']):.2f}"}
    method_doc = os.path.join(ROOT, "..", "shared", "docs", "iep-method.md")
    if os.path.exists(method_doc):
        published |= set(re.findall(r"\d{1,2}\.\d{2}", open(method_doc).read()))
    return published


def test_no_figure_from_a_results_file_is_typed_by_hand_outside_generated_blocks():
    """An accuracy (two digits, two decimals) or a signed gain in a page, outside a generated block, that equals
    100× a value of a results file was copied from it by hand and goes stale when the file changes. The paper's
    own figures are quoted, not measured, and pass."""
    import glob

    values = set()

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, float) and 0 < abs(x) < 1:  # accuracies, and gains of either sign
            values.add(f"{100 * abs(x):.2f}")

    for path in glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.json")):
        walk(json.load(open(path)))
    assert "81.73" in values  # the walk sees the results (IEP with the per-term clip, the paper-budget table)
    values -= _published_figures()
    accuracy = r"(?<![\d.])\d{2}\.\d{2}(?!\d| ?M\b)"  # (a count of parameters, "11.23 M", is not a percentage)
    gain = r"(?<![\w.])[+−-](\d{1,2}\.\d{2})(?!\d)"
    pages = ["README.md", *(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
    typed = {}
    for page in sorted(pages):
        text = re.sub(r"<!-- ([\w-]+):begin .*?<!-- \1:end -->", "", open(os.path.join(ROOT, page)).read(), flags=re.S)
        found = sorted({n for n in re.findall(accuracy, text) + re.findall(gain, text) if n in values})
        if found:
            typed[page] = found
    assert "81.73" not in _published_figures() and re.findall(gain, "IEP +8.76, RKD −3.56") == ["8.76", "3.56"]
    assert not typed, f"figures typed from results files (generate them, or cut them): {typed}"


def test_each_gain_in_the_table_is_against_the_vanilla_with_the_methods_decay_rule():
    def row(method, validation, test, vanilla=None):
        return {"factor": plot_results.FACTOR, "method": method, "seeds": 1, "runs": [{}], "validation": validation,
                "test": test, "validation_std": 0.0, "test_std": 0.0, "vanilla": vanilla}  # fmt: skip

    rows = [row("none", 0.73, 0.715), row("none_decay_all", 0.72, 0.721, "none"), row("pkt", 0.79, 0.772, "none")]
    protocol = {"teacher_arch": "wrn-28-1", "student_arch": "wrn-16-1"}
    short = {"results": []}
    alone = plot_results.results_chart({"results": rows, "protocol": protocol}, short)
    assert "| 1 | pkt | 1 | 79.00 | 77.20 | +5.70 |" in alone and "weight-decay rule" not in alone
    rows[2]["vanilla"] = "none_decay_all"  # what the study writes once that vanilla has a run
    chart = plot_results.results_chart({"results": rows, "protocol": protocol}, short)
    assert "| 1 | pkt | 1 | 79.00 | 77.20 | +5.10 (vs none_decay_all) |" in chart
    assert "| 3 | none_decay_all | 1 | 72.00 | 72.10 | +0.60 |" in chart
    assert "none_decay_all's own figure, against `none`, is what that rule does alone." in chart


def test_the_readme_table_keeps_the_first_ranks_and_the_vanilla_students():
    def row(method, validation, vanilla="none"):
        return {"factor": plot_results.FACTOR, "method": method, "seeds": 1, "runs": [{}], "validation": validation,
                "test": validation - 0.01, "validation_std": 0.0, "test_std": 0.0, "vanilla": vanilla}  # fmt: skip

    rows = [row("none", 0.70, None), row("a", 0.71), row("b", 0.80), row("c", 0.75), row("d", 0.78)]
    protocol = {"teacher_arch": "wrn-28-1", "student_arch": "wrn-16-1"}
    block = plot_results.results_chart({"results": rows, "protocol": protocol}, {"results": []}, top=2)
    table = [line for line in block.splitlines() if re.match(r"\| \d", line)]
    assert [line.split(" | ")[1] for line in table] == ["b", "d", "none"]  # ranks 1, 2 and the vanilla (5)
    assert table[-1].startswith("| 5 | none |") and "bar [70.0, 71.0, 75.0, 78.0, 80.0]" in block  # all charted
    assert "The first 2 of 5 methods" in block and "docs/reproduction.md#every-method-at-the-papers-budget" in block


def test_each_fidelity_fix_sits_beside_the_row_it_replaced():
    def row(method, validation, test, seeds=1):
        return {"factor": plot_results.FACTOR, "method": method, "seeds": seeds, "validation": validation,
                "test": test, "validation_std": 0.001 * (seeds > 1), "test_std": 0.002 * (seeds > 1)}  # fmt: skip

    rows = [row("dist", 0.7789, 0.7742, 2), row("dist_imagenet", 0.7558, 0.7451), row("vid", 0.78, 0.7732)]
    block = plot_results.fidelity_pass_3({"results": rows})
    assert "| 77.89 ± 0.10 / 77.42 ± 0.20 (2 seeds) | 75.58 / 74.51 (1 seed) | +2.31 / +2.91 |" in block
    assert "(`vid` against `vid_shared_init`) | 78.00 / 77.32 (1 seed) | not yet run | — |" in block


def test_the_readme_counts_the_baselines_the_registry_has():
    """The README's count of baselines is typed; it must be the registry's (every built-in method but the vanilla
    student, IEP, IEP+BB and the static methods that need no teacher)."""
    from iep.core.registry import METHODS, STATIC_METHODS

    baselines = [m for m in METHODS if m not in ("none", "iep", "iep_bb", *STATIC_METHODS)]
    (count,) = re.findall(r"\b(\d+) baselines\b", open(os.path.join(ROOT, "README.md")).read())
    assert int(count) == len(baselines), baselines


def test_every_method_cites_its_reference_file_and_line():
    """Fidelity is checkable only where a row says which lines it follows: every built-in method's row in
    docs/methods.md names a line of its reference (static KD, our design with no public code, aside), and the
    page names the commit those lines are read at."""
    from iep.core.registry import METHODS

    text = open(os.path.join(ROOT, "docs", "methods.md")).read()
    rows = {}  # each method's first row: the methods table (later tables list results by method)
    for match in re.finditer(r"^\| `(\w+)`[^\n]*", text, flags=re.M):
        rows.setdefault(match.group(1), match.group(0))
    uncited = [m for m in METHODS if m != "static_kd" and not re.search(r"\blines? \d", rows.get(m, ""))]
    assert not uncited, f"rows of docs/methods.md without a reference line: {uncited}"
    assert "**Line numbers** name each reference at one commit" in text
