"""KerasTuner's chief/worker mode: a chief and two workers on loopback finish a search together."""
import json
from pathlib import Path

from tune_cluster import free_port, start

from mcuformer_tf.nas.search_space import SubnetConfig

TRIALS = 8


def test_chief_and_two_workers_finish_a_search_together(trained_run, tmp_path):
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.training import load_supernet
    from tuner.subnet_tuner import SubnetScorer

    out, port = tmp_path / "t", free_port()
    chief = start("chief", trained_run.path, out, port, TRIALS)
    workers = [start(f"worker{k}", trained_run.path, out, port, TRIALS) for k in range(2)]
    try:
        outputs = [p.communicate(timeout=400) for p in [chief] + workers]
    finally:
        for p in [chief] + workers:
            p.kill()
    for p, (stdout, stderr) in zip([chief] + workers, outputs):
        assert p.returncode == 0, stderr[-3000:]
    ran = [int(stdout.split(" ran ")[1].split()[0]) for stdout, _ in outputs[1:]]
    assert sum(ran) == TRIALS
    assert f"{TRIALS} trials finished" in outputs[0][0]
    trials = [json.loads(p.read_text()) for p in Path(out, "search").glob("trial_*/trial.json")]
    assert len(trials) == TRIALS and {t["status"] for t in trials} == {"COMPLETED"}
    best = max(trials, key=lambda t: t["score"])
    results = json.loads((out / "results.json").read_text())
    assert results["top"][0]["search_accuracy"] == best["score"]
    # The best score a worker reported is what this process measures for the same subnet.
    config = SubnetConfig.load(out / "best_config.json")
    scorer = SubnetScorer(load_supernet(trained_run), load_digits(32))
    assert scorer(config) == best["score"]
