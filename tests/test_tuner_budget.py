"""Budgets of targets, and budget oracles that never start a trial over budget."""
import dataclasses
import random
import tempfile

import pytest

from mcuformer_tf.board.targets import RUNTIME_SRAM
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.estimate import memory_of
from mcuformer_tf.nas.search_space import SearchSpace
from tuner.budget import (
    KIB,
    MIB,
    Budget,
    budget_rejecting,
    check_space_fits,
    footprint,
    least_memory_configs,
    parse_clock,
    parse_duration,
    parse_size,
    resolve_target,
)
from tuner.hyperparameters import config_from_values


@pytest.mark.parametrize("text, size", [("320KiB", 320 * 1024), ("1MiB", 1 << 20),
                                        ("0.5MB", 500_000), ("300000", 300_000),
                                        ("1.5 kib", 1536), ("16MiB", 16 << 20), ("2kB", 2000)])
def test_sizes_parse_in_human_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, message", [("320 parsecs", "is not a size"), ("KiB", "not a size"),
                                           ("0.1B", "whole number"), ("0", "whole number"),
                                           ("-5KiB", "not a size")])
def test_bad_sizes_are_one_line_errors(text, message):
    with pytest.raises(McuformerError, match=message):
        parse_size(text, "--sram")


@pytest.mark.parametrize("text, ms", [("800ms", 800), ("1.5s", 1500), ("250 us", 0.25), ("40", 40)])
def test_durations_parse_in_milliseconds(text, ms):
    assert parse_duration(text) == pytest.approx(ms)


def test_clocks_parse_in_hertz_and_bad_ones_are_one_line_errors():
    assert (parse_clock("216MHz"), parse_clock("480 mhz"), parse_clock("180000000")) == \
        (216_000_000, 480_000_000, 180_000_000)
    with pytest.raises(McuformerError, match="--clock '216 parsecs' is not a clock"):
        parse_clock("216 parsecs")
    with pytest.raises(McuformerError, match="--latency '-5ms' is not a duration"):
        parse_duration("-5ms")


def _latency_budget(space, share: float = 0.5) -> Budget:
    """A 1 MiB SRAM budget whose latency is the median of 400 random subnets' (at 216 MHz)."""
    from mcuformer_tf.board import latency

    times = sorted(latency.instructions(c) / 216e3 for c in space.sample_many(400, seed=5))
    return Budget(resolve_target("custom", "1MiB", "1MiB"), latency_ms=times[int(len(times) * share)])


def test_no_trial_over_the_latency_budget_is_ever_started(digits_space):
    from tuner.budget_oracle import make_oracle

    budget = _latency_budget(digits_space)
    oracle = _drive(make_oracle("evolution", digits_space, budget, max_trials=30, seed=3), digits_space, 30)
    assert len(oracle.trials) == 30 and oracle.rejected > 0
    for trial in oracle.trials.values():
        verdict = budget.check(config_from_values(digits_space, trial.hyperparameters.values))
        assert verdict.fits and trial.metrics.get_last_value("instructions") == verdict.instructions
        assert budget.milliseconds(verdict.instructions) <= budget.latency_ms
    slow = next(c for c in digits_space.sample_many(50, seed=1) if not budget.check(c).fits)
    assert budget.check(slow).reason.startswith("latency ") and "> " in budget.check(slow).reason
    assert budget.to_dict()["latency_ms"] == budget.latency_ms and budget.to_dict()["clock_hz"] == 216_000_000
    assert "latency_ms" not in Budget(budget.target).to_dict()  # a search without one resumes as before


def test_an_impossible_latency_names_the_fastest_subnet(digits_space):
    from mcuformer_tf.board import latency

    fastest = min(latency.instructions(c) for c in least_memory_configs(digits_space))
    budget = Budget(resolve_target("stm32f746"), latency_ms=fastest / 216e3 * 0.9)
    with pytest.raises(McuformerError, match=rf"^no subnet of space 'digits' runs within --latency .* on stm32f746 "
                                             rf"at 216 MHz: the fastest, .*, takes {fastest / 216e3:,.1f} ms "):
        check_space_fits(digits_space, budget)
    check_space_fits(digits_space, Budget(budget.target, latency_ms=fastest / 216e3 * 1.01))
    assert fastest == min(latency.instructions(c) for c in digits_space.sample_many(500, seed=2) + 
                          least_memory_configs(digits_space))


def test_targets_and_overrides():
    f746 = resolve_target("stm32f746")
    assert (f746.sram, f746.flash, f746.external_flash) == (320 * KIB, MIB, 0)
    disco = resolve_target("stm32f746-disco", flash="2MiB")
    assert (disco.sram, disco.flash, disco.external_flash) == (320 * KIB, 2 * MIB, 16 * MIB)
    custom = resolve_target("custom", "128KiB", "512KiB")
    assert (custom.sram, custom.flash) == (128 * KIB, 512 * KIB)
    with pytest.raises(McuformerError, match="^target custom needs both --sram and --flash"):
        resolve_target("custom", "128KiB")
    with pytest.raises(McuformerError, match="^unknown target 'stm32h7'"):
        resolve_target("stm32h7")
    with pytest.raises(McuformerError, match="leaves nothing for the arena"):
        resolve_target("stm32f746", sram="8KiB")


def test_a_plan_takes_its_footprint_of_the_memory_model(digits_space):
    config = digits_space.largest()
    estimate = memory_of(config)
    assert footprint(config, "fused") == estimate.fused
    assert footprint(config, "unfused") == estimate.unfused
    assert estimate.fused.arena < estimate.unfused.arena


def test_check_sums_runtime_share_and_names_what_is_over(digits_space):
    config = digits_space.largest()
    used = footprint(config, "unfused")
    exact = resolve_target("custom", f"{used.working_arena + RUNTIME_SRAM}", "1MiB")
    verdict = Budget(exact, "unfused").check(config)
    assert verdict.fits and verdict.sram_used == exact.sram
    assert verdict.flash_used == used.flash + exact.runtime_flash
    assert verdict.macs == config.mac_count() > 0
    over = Budget(resolve_target("custom", f"{used.working_arena + RUNTIME_SRAM - 1}", "1MiB"),
                  "unfused")
    assert over.check(config).reason.startswith("SRAM ")


def test_disco_puts_the_model_in_external_flash():
    space = SearchSpace.load("deit-tiny-mcu")
    with pytest.raises(McuformerError, match=r"fits stm32f746 \(fused plan\).*flash .* > 1.00 MiB"):
        check_space_fits(space, Budget(resolve_target("stm32f746", sram="4MiB")))
    disco = Budget(resolve_target("stm32f746-disco", sram="4MiB"))
    check_space_fits(space, disco)
    verdict = disco.check(space.smallest())
    assert verdict.fits and verdict.flash_used == disco.target.runtime_flash


def test_no_subnet_is_below_the_least_memory_configs(space):
    least = [footprint(c, "fused") for c in least_memory_configs(space)]
    for config in space.sample_many(300, seed=5):
        used = footprint(config, "fused")
        assert used.arena >= min(f.arena for f in least)
        assert used.flash >= min(f.flash for f in least)


# -- oracles ------------------------------------------------------------------------------------
def _budget_rejecting_most(space):
    """An SRAM budget at the 20th percentile of the fused arenas of random subnets."""
    return budget_rejecting(space, 0.8, samples=400, seed=9)[0]


def _score(config):
    """A deterministic objective that favours large subnets (pushes the search to the edge)."""
    return config.mac_count() / 1e7 + random.Random(config.to_json()).random() / 100


def _drive(oracle, space, trials):
    oracle._set_project_dir(tempfile.mkdtemp(), "p")
    oracle.verbose = 0
    for _ in range(trials):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        oracle.update_trial(trial.trial_id, {
            "search_accuracy": _score(config_from_values(space, trial.hyperparameters.values))})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    return oracle


@pytest.mark.parametrize("algorithm", [  # KerasTuner's Gaussian process steps take seconds each
    "evolution", "random", "grid", pytest.param("bayesian", marks=pytest.mark.slow)])
def test_no_trial_over_budget_is_ever_started(digits_space, algorithm):
    from tuner.budget_oracle import make_oracle

    budget = _budget_rejecting_most(digits_space)
    assert sum(budget.check(c).fits for c in digits_space.sample_many(400, seed=1)) < 200
    trials = 10 if algorithm == "bayesian" else 40  # its Gaussian process steps are slow
    oracle = make_oracle(algorithm, digits_space, budget, max_trials=trials, seed=3)
    if algorithm == "bayesian":
        oracle.num_initial_points = 7
    oracle = _drive(oracle, digits_space, trials)
    assert len(oracle.trials) == trials
    for trial in oracle.trials.values():
        verdict = budget.check(config_from_values(digits_space, trial.hyperparameters.values))
        assert verdict.fits
        assert {m: trial.metrics.get_last_value(m) for m in ("arena", "flash", "macs", "instructions")} == \
            verdict.metrics()
    assert oracle.checked == oracle.rejected + trials
    if algorithm != "grid":  # the grid walks from the smallest subnets up: all fit early on
        assert oracle.rejected > 0


@pytest.mark.parametrize("algorithm", ["evolution", "random"])
def test_seed_zero_fixes_the_draws_too(digits_space, algorithm):
    from tuner.budget_oracle import make_oracle

    budget = _budget_rejecting_most(digits_space)
    draws = [[t.hyperparameters.values for t in _drive(
        make_oracle(algorithm, digits_space, budget, max_trials=15, seed=0), digits_space,
        15).trials.values()] for _ in range(2)]
    assert len(draws[0]) == 15 and draws[0] == draws[1]


def test_counts_survive_a_reload(digits_space):
    from tuner.budget_oracle import make_oracle

    budget = _budget_rejecting_most(digits_space)
    oracle = _drive(make_oracle("random", digits_space, budget, max_trials=10, seed=3),
                    digits_space, 10)
    again = make_oracle("random", digits_space, budget, max_trials=10, seed=3)
    again._set_project_dir(oracle._directory, oracle._project_name)
    again.reload()
    assert (again.checked, again.rejected, len(again.trials)) == (
        oracle.checked, oracle.rejected, 10)
    other = make_oracle("random", digits_space,
                        Budget(resolve_target("custom", "320KiB", "1MiB"), "unfused"), 10, seed=3)
    other._set_project_dir(oracle._directory, oracle._project_name)
    with pytest.raises(McuformerError, match="made for another budget"):
        other.reload()


def test_a_space_with_no_feasible_subnet_is_refused_with_numbers(digits_space):
    from tuner.budget_oracle import make_oracle

    tiny = Budget(resolve_target("custom", "28KiB", "1MiB"))
    with pytest.raises(McuformerError, match=r"^no subnet of space 'digits' fits custom .*SRAM"):
        make_oracle("evolution", digits_space, tiny, max_trials=5)


def test_an_algorithm_that_finds_nothing_feasible_stops_with_a_reason(digits_space):
    from tuner.budget_oracle import make_oracle

    # Only the subnets with the least arena fit: random draws almost never hit one.
    least = min(footprint(c, "fused").working_arena for c in least_memory_configs(digits_space))
    budget = Budget(resolve_target("custom", str(least + RUNTIME_SRAM), "1MiB"))
    oracle = make_oracle("random", digits_space, budget, max_trials=50, seed=0)
    oracle.max_rejections = 30
    oracle = _drive(oracle, digits_space, 50)
    assert len(oracle.trials) < 50
    assert oracle.stop_reason.startswith("30 candidates in a row were over the budget")


def test_mac_count_of_a_dense_subnet_by_hand(digits_space):
    config = digits_space.make(32, 4, 1.0, 64, [2, 1], [4.0, 2.0])  # rank 1.0: every layer dense
    n, e = 64, 64
    blocks = sum(n * (e * 3 * a + a * e + e * h + h * e) + 2 * heads * n * n * 64
                 for heads, a, h in ((2, 128, 256), (1, 64, 128)))
    assert config.mac_count() == n * 4 * 4 * 3 * e + blocks + e * 10
    low = digits_space.make(32, 4, 0.5, 64, [2, 1], [4.0, 2.0])
    assert low.mac_count() < config.mac_count()


# -- 4-bit weights: the flash that binds -------------------------------------------------------
def _at_bits(space, bits):
    return dataclasses.replace(space, weight_bits=(bits,))


@pytest.mark.parametrize("preset, target, least_8_bit", [("deit-tiny-mcu", "stm32h743", "2.49 MiB"),
                                                         ("deit-tiny-mcu-int4", "stm32f746", "1019.3 KiB")])
def test_at_4_bits_the_tuner_finds_subnets_in_internal_flash_where_8_bits_finds_none(preset, target,
                                                                                     least_8_bit):
    """deit-tiny-mcu on the STM32H743 (2 MiB of flash), the low-rank preset on the STM32F746
    (1 MiB): at 8 bits even the least subnet's model is over the flash, at 4 bits an evolution
    search's every trial fits, with its flash predicted at 4 bits, and none would at 8."""
    from tuner.budget_oracle import make_oracle

    space, budget = SearchSpace.load(preset), Budget(resolve_target(target))
    limit = f"{budget.target.flash / MIB:.2f} MiB"
    with pytest.raises(McuformerError, match=rf"^no subnet of space '{preset}' fits {target} \(fused plan\): even the "
                                             rf"least, .*, needs flash .* \(model {least_8_bit} .*\) > {limit}$"):
        check_space_fits(_at_bits(space, 8), budget)
    int4 = _at_bits(space, 4)
    oracle = _drive(make_oracle("evolution", int4, budget, max_trials=20, seed=0), int4, 20)
    assert len(oracle.trials) == 20
    for trial in oracle.trials.values():
        config = config_from_values(int4, trial.hyperparameters.values)
        assert config.weight_bits == 4 and budget.check(config).fits
        assert trial.metrics.get_last_value("flash") == memory_of(config).fused.flash
        assert not budget.check(dataclasses.replace(config, weight_bits=8)).fits


def test_the_int4_preset_is_deit_tiny_mcu_with_lower_ranks_at_4_bits():
    deit, low = SearchSpace.load("deit-tiny-mcu"), SearchSpace.load("deit-tiny-mcu-int4")
    assert low.weight_bits == (4,) and max(low.rank_ratio) < min(deit.rank_ratio)
    assert dataclasses.replace(low, name=deit.name, rank_ratio=deit.rank_ratio, weight_bits=(8,)) == deit
    with pytest.raises(McuformerError, match="^no subnet of space 'deit-tiny-mcu' fits stm32f746"):
        check_space_fits(_at_bits(deit, 4), Budget(resolve_target("stm32f746")))


def test_int4_weights_halve_the_weights_flash_and_unpack_into_the_unfused_arena(digits_space):
    """The memory model at 4 bits: each weight tensor's bytes halved (rounded up) in both files,
    the unfused arena at least the largest filter (stock TFLM unpacks it), the fused arena's only
    growth the head's FULLY_CONNECTED filter (the MCUF kernels read INT4 in place)."""
    from mcuformer_tf.memory.counts import fused_graph_counts, graph_counts
    from mcuformer_tf.memory.form import QAT

    for config in digits_space.sample_many(20, seed=6):
        int4 = dataclasses.replace(config, weight_bits=4)
        form = QAT._replace(weight_bits=4)
        shapes = [s for layer in range(config.depth) for s in config.linear_shapes(layer).values()]
        kernels = [s.in_dim * s.out_dim for s in shapes if s.dense] + [
            n for s in shapes if not s.dense for n in (s.in_dim * s.rank, s.rank * s.out_dim)] + [
            config.patch_size ** 2 * 3 * config.embed_dim, config.embed_dim * config.num_classes]
        assert graph_counts(config).weights == sum(kernels)
        assert graph_counts(config, form).weights == sum((n + 1) // 2 for n in kernels)
        assert fused_graph_counts(config).data - fused_graph_counts(config, form).data == sum(n // 2 for n in kernels)
        eight, four = memory_of(config), memory_of(int4)
        assert four.unfused.non_persistent >= max(kernels)
        assert four.fused.flash < eight.fused.flash and four.unfused.flash < eight.unfused.flash
        assert eight.fused.non_persistent <= four.fused.non_persistent <= max(
            eight.fused.non_persistent, config.embed_dim * config.num_classes + 2048)
