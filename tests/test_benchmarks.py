"""The benchmarks run, at a tiny size; their counts and comparisons are right. (Timings are not asserted.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import run
from benchmarks.flops import transformer_training_flops
from benchmarks.harness import Skipped, Timing, Workload, interleaved
from benchmarks.memory import PRELOAD, measure, preload
from benchmarks.references import TorchSeq2Seq, TorchvisionCifarResNet
from benchmarks.settings import Settings
from benchmarks.sizes import get_sizes
from benchmarks.suite import GROUPS, paired_ratio, row_specs
from benchmarks.workloads import SPECIAL, build, transformer_model, translation_batch, with_torch_dropout
from skipln.errors import ConfigError
from skipln.losses import label_smoothed_nll_loss
from skipln.models.dropout import Dropout
from skipln.models.resnet import ResNet
from skipln.models.transformer import Transformer


def test_the_tiny_run_writes_every_row_to_json_and_markdown(tmp_path: Path) -> None:
    # The end-to-end fit (whole Lightning fits) has its own, shorter test below.
    groups = [group for group in GROUPS if group != "fit"]
    report = run.main(["--size", "tiny", "--out", str(tmp_path), "--no-memory", "--groups", *groups])
    rows = json.loads((tmp_path / "tiny.json").read_text())["rows"]
    assert [row["label"] for row in rows] == [spec.label for spec in row_specs(get_sizes("tiny"), groups)]
    assert rows == json.loads(json.dumps(report["rows"]))
    for row in rows:
        assert ("ratio" in row) != ("skipped" in row), row["label"]
    table = (tmp_path / "tiny.md").read_text()
    assert all(f"| {row['label']} |" in table for row in rows)
    assert report["machine"]["torch_threads"] == 1


def test_interleaving_alternates_which_side_runs_first() -> None:
    order: list[str] = []
    ours = Workload("a", lambda: order.append("a"), 1.0, "x")
    reference = Workload("b", lambda: order.append("b"), 1.0, "x")
    ours_t, reference_t = interleaved(ours, reference, warmup=1, repeats=4)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(ours_t.seconds) == len(reference_t.seconds) == 4


def test_the_ratio_is_taken_within_each_round_so_load_that_slows_a_whole_round_cancels() -> None:
    # Round 2 ran under heavy load: both sides took 10x longer. Ours is 2x faster in every round.
    ours = Timing("a", "tok", 100.0, [1.0, 10.0, 1.0])
    reference = Timing("b", "tok", 100.0, [2.0, 20.0, 2.0])
    assert paired_ratio(ours, reference, "speed") == pytest.approx(2.0)
    assert paired_ratio(ours, reference, "time") == pytest.approx(0.5)


def test_the_speed_ratio_compares_rates_when_the_units_differ() -> None:
    # The FLOP row: 50 FLOP in 1 s against a peak of 200 FLOP in 2 s is half the peak.
    assert paired_ratio(Timing("a", "FLOP", 50.0, [1.0]), Timing("b", "FLOP", 200.0, [2.0]), "speed") == pytest.approx(0.5)


def test_the_analytic_flop_count_equals_torchs_flop_counter_on_a_training_step() -> None:
    # Attention dropout sends CPU attention through matmuls (bmm) that the counter sees, in full.
    model = Transformer(50, encoder_layers=2, decoder_layers=2, dim=16, ffn_dim=24, heads=2, dropout=0.0, attention_dropout=0.1)
    batch = translation_batch(get_sizes("tiny"), 3, 5, 7, 50)
    with FlopCounterMode(display=False) as counter:
        logits = model(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])
        label_smoothed_nll_loss(logits, batch["target"], 0.1, SPECIAL.pad)[0].backward()
    expected = transformer_training_flops(
        sentences=3, source_len=5, target_len=7, dim=16, ffn_dim=24, vocab=50, encoder_layers=2, decoder_layers=2
    )
    assert counter.get_total_flops() == expected


def test_the_reference_transformer_has_ours_parameters_plus_the_two_final_norms_of_nn_transformer() -> None:
    ours = Transformer(64, encoder_layers=2, decoder_layers=2, dim=16, ffn_dim=32, heads=2)
    reference = TorchSeq2Seq(64, dim=16, heads=2, layers=2, ffn_dim=32, dropout=0.1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(reference) == count(ours) + 2 * (2 * 16)


def test_the_torchvision_resnet56_has_the_parameters_of_ours_with_projection_shortcuts() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(TorchvisionCifarResNet(56)) == count(ResNet(56, "basic", shortcut="B"))


def test_the_torchvision_resnet_is_built_from_torchvisions_own_blocks() -> None:
    from torchvision.models.resnet import BasicBlock

    blocks = [m for m in TorchvisionCifarResNet(20).modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9 and type(blocks[0]) is BasicBlock


def test_the_marian_row_says_how_to_install_transformers_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(Skipped, match=r"pip install -e '\.\[bench\]'"):
        build("beam/marian", get_sizes("tiny"))


def test_unknown_workloads_and_sizes_are_rejected_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="expected transformer/"):
        build("lstm/fast", get_sizes("tiny"))
    with pytest.raises(ConfigError, match="choose one of tiny, small, wmt_base, paper"):
        get_sizes("huge")
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        build("transformer/nope", get_sizes("tiny"))


def test_peak_memory_is_measured_in_a_fresh_process() -> None:
    small = measure("tiny", "resnet/skip/contiguous")
    assert small["workload"] == "resnet/skip/contiguous"
    assert 0 < small["peak_mib"] < small["process_peak_mib"]


def test_a_workload_step_trains_the_model() -> None:
    workload = build("transformer/rskip_ln2", get_sizes("tiny"))
    params = [p for cell in workload.run.__closure__ or () if isinstance(model := cell.cell_contents, torch.nn.Module)
              for p in model.parameters()]
    before = [p.detach().clone() for p in params]
    workload.run()
    assert params and any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))
    assert workload.units == 4 * 6 - 2 * 2  # target tokens of the tiny batch, padding excluded


def test_a_bf16_run_names_its_files_after_the_setting_and_records_it(tmp_path: Path) -> None:
    report = run.main(["--size", "tiny", "--out", str(tmp_path), "--no-memory", "--groups", "flops", "--precision", "bf16-mixed"])
    assert report["settings"] == {"device": "cpu", "precision": "bf16-mixed", "compile": False}
    assert (tmp_path / "tiny-bf16.json").is_file()
    assert "precision bf16-mixed" in (tmp_path / "tiny-bf16.md").read_text()
    # The peak to compare with is then bfloat16's.
    assert report["rows"][0]["reference"]["info"]["dtype"] == "bfloat16"


def test_settings_reject_an_unknown_precision_and_a_missing_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        Settings(precision="fp8")  # type: ignore[arg-type]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU; use --device cpu"):
        Settings(device="cuda")


def test_compile_compiles_the_trained_models_of_both_sides_in_place_but_not_decoding() -> None:
    settings = Settings(compile=True)
    for name in ("resnet/skip/contiguous", "resnet/torchvision/contiguous"):
        models = [cell.cell_contents for cell in build(name, get_sizes("tiny"), settings).run.__closure__ or ()
                  if isinstance(cell.cell_contents, torch.nn.Module)]
        assert models and all(model._compiled_call_impl is not None for model in models)  # noqa: SLF001
    beam = build("beam/cached", get_sizes("tiny"), settings)
    models = [c.cell_contents for c in beam.run.__closure__ or () if isinstance(c.cell_contents, torch.nn.Module)]
    assert models and all(model._compiled_call_impl is None for model in models)  # noqa: SLF001


def test_the_beam_rows_record_the_decoder_steps_each_side_ran() -> None:
    sizes = get_sizes("tiny")
    cached, recompute = build("beam/cached", sizes), build("beam/recompute", sizes)
    # Source length 4: at most 1.2·4 + 3 = 7 tokens, then eos: at most 8 steps.
    assert 1 <= cached.info["decoder_steps"] <= 8
    assert cached.info["decoder_steps"] == recompute.info["decoder_steps"]


def test_a_row_whose_sides_did_unequal_work_is_not_met(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import suite

    workloads = {"a": Workload("a", lambda: None, 1.0, "sent", info={"decoder_steps": 9}),
                 "b": Workload("b", lambda: None, 1.0, "sent", info={"decoder_steps": 12})}
    monkeypatch.setattr(suite, "build", lambda name, sizes, settings=None: workloads[name])
    spec = suite.RowSpec("beam", "a vs b", "a", "b", "speed", suite.Goal(">=", 0.0), equal_work="decoder_steps")
    row = suite.run_row(spec, get_sizes("tiny"))
    assert row["met"] is False
    assert row["equal_work"] == {"key": "decoder_steps", "ours": 9, "reference": 12, "equal": False}


def test_the_ablation_rows_swap_only_the_loss() -> None:
    sizes = get_sizes("tiny")
    assert build("transformer/post_ln/torch_loss", sizes).info["loss"] == "torch_loss"
    assert build("transformer/post_ln", sizes).info["loss"] == "skipln_loss"
    assert build("transformer/torch", sizes).info["loss"] == "torch_loss"
    with pytest.raises(ConfigError, match="unknown variant 'mse'"):
        build("transformer/post_ln/mse", sizes)


def test_the_dropout_ablation_swaps_only_the_dropout() -> None:
    sizes = get_sizes("tiny")
    workload = build("transformer/post_ln/torch_dropout", sizes)
    assert (workload.info["loss"], workload.info["dropout_module"]) == ("skipln_loss", "nn.Dropout")
    assert build("transformer/post_ln", sizes).info["dropout_module"] == "skipln Dropout"
    shape = {"dim": sizes.dim, "ffn_dim": sizes.ffn_dim, "heads": sizes.heads, "layers": sizes.layers}
    model = transformer_model(sizes.vocab, "post_ln", **shape)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    swapped = with_torch_dropout(model)
    assert not any(isinstance(m, Dropout) for m in swapped.modules())
    assert [m.p for m in swapped.modules() if isinstance(m, nn.Dropout)] == rates


def test_the_compiled_transformer_goal_is_higher() -> None:
    sizes = get_sizes("tiny")
    eager = row_specs(sizes, ["transformer"], Settings())[0]
    compiled = row_specs(sizes, ["transformer"], Settings(compile=True))[0]
    assert (str(eager.goal), str(compiled.goal)) == (">= 1.2", ">= 1.3")


def test_memory_preloads_the_libraries_of_both_sides_of_a_row_before_its_baseline() -> None:
    import importlib.util

    # beam/cached shares its row with MarianMT: both are measured with transformers already imported.
    loaded = preload("beam/cached")
    assert loaded == (["transformers"] if importlib.util.find_spec("transformers") else [])
    assert all(name in sys.modules for name in loaded)
    assert preload("fit/plain") == list(PRELOAD["fit"])
    assert preload("matmul") == []


@pytest.mark.slow
def test_the_end_to_end_fit_and_the_plain_loop_train_on_the_same_tokens() -> None:
    sizes = get_sizes("tiny")
    lightning, plain = build("fit/lightning", sizes), build("fit/plain", sizes)
    assert lightning.units == plain.units > 0
    lightning.run()
    plain.run()


def test_the_hand_written_loader_builds_the_same_batches_as_the_data_module() -> None:
    from benchmarks import endtoend

    data = endtoend.datamodule()
    plain = build("data/plain_loader", get_sizes("tiny"))
    assert plain.units == len(data.train_dataloader().dataset)
    loader = next(cell.cell_contents for cell in plain.run.__closure__ or () if isinstance(cell.cell_contents, torch.utils.data.DataLoader))
    ours, theirs = next(iter(data.train_dataloader())), next(iter(loader))
    for key in ("src_tokens", "src_lengths", "prev_output_tokens", "target"):
        assert torch.equal(ours[key], theirs[key]), key


def test_the_gpu_command_stops_with_one_line_when_there_is_no_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        gpu.main(["--out", "unused"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no CUDA GPU" in error


def test_the_summary_puts_each_setting_in_a_column(tmp_path: Path) -> None:
    from benchmarks.table import summary

    reports = [run.main(["--size", "tiny", "--out", str(tmp_path), "--no-memory", "--groups", "flops", *extra])
               for extra in ([], ["--precision", "bf16-mixed"])]
    table = summary(reports)
    assert "| row | float32 | bf16-mixed |" in table
    assert all(f"| {row['label']} | " in table for row in reports[0]["rows"])


def test_the_feature_map_norms_compared_compute_the_same_layer_norm() -> None:
    from benchmarks.workloads import FEATURE_NORMS

    x, weight, bias = torch.randn(2, 4, 3, 5), torch.randn(4), torch.randn(4)
    expected = torch.nn.functional.group_norm(x, 1, weight, bias)
    for layout in (torch.contiguous_format, torch.channels_last):
        for norm in FEATURE_NORMS.values():
            torch.testing.assert_close(norm(x.contiguous(memory_format=layout), weight, bias), expected)


def test_the_profile_names_the_command_and_the_operators(tmp_path: Path) -> None:
    from benchmarks import profile

    text = profile.main(["--size", "tiny", "--workload", "matmul", "--runs", "1", "--warmup", "0", "--out", str(tmp_path / "p.txt")])
    assert text.startswith("python -m benchmarks.profile --size tiny --workload matmul")
    assert "aten::mm" in (tmp_path / "p.txt").read_text()


def test_the_python_profile_lists_calls_by_cumulative_time(tmp_path: Path) -> None:
    from benchmarks import profile

    text = profile.main(["--size", "tiny", "--workload", "matmul", "--runs", "1", "--warmup", "0", "--python", "--out", str(tmp_path / "p.txt")])
    assert "Ordered by: cumulative time" in text and "aten::mm" not in text


def test_a_run_with_more_threads_or_a_tag_names_its_files_after_them(tmp_path: Path) -> None:
    report = run.main(["--size", "tiny", "--out", str(tmp_path), "--no-memory", "--groups", "flops", "--threads", "2", "--tag", "flops"])
    assert report["name"] == "tiny-2threads-flops" and (tmp_path / "tiny-2threads-flops.md").is_file()
    torch.set_num_threads(1)


def test_the_summary_merges_runs_of_one_setting_into_one_column(tmp_path: Path) -> None:
    from benchmarks.table import summary

    reports = [run.main(["--size", "tiny", "--out", str(tmp_path), "--no-memory", "--groups", group, "--tag", group])
               for group in ("flops", "beam")]
    table = summary(reports)
    assert "| row | float32 |" in table
    assert all(f"| {row['label']} | " in table for report in reports for row in report["rows"])
