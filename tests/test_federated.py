"""Federated probe (fmadapt/federated/, strategy "federated", `fmadapt federate`): partitions, options, the update
screen, local training, and whole federations in Flower's simulation engine (Ray) with hostile clients."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fmadapt.errors import ConfigError, DataError
from fmadapt.federated.config import FederatedConfig
from fmadapt.federated.partition import describe, partition


def _labels(n_per_class: int = 50, classes: int = 4) -> np.ndarray:
    return np.repeat(np.arange(classes), n_per_class)


@pytest.mark.parametrize("kind,param", [("iid", None), ("dirichlet", 0.5), ("classes", 2)])
def test_partitions_cover_every_example_once(kind, param):
    y = _labels()
    parts = partition(y, 10, kind, param, seed=3)
    joined = np.concatenate(parts)
    assert len(parts) == 10 and min(len(p) for p in parts) >= 1
    assert sorted(joined.tolist()) == list(range(len(y)))  # each example on exactly one client
    assert [p.tolist() for p in partition(y, 10, kind, param, seed=3)] == [p.tolist() for p in parts]  # seeded


def test_label_skew_grows_as_the_partition_gets_less_iid():
    y = _labels(100)

    def skew(kind, param):
        return np.mean([r["label_skew"] for r in describe(partition(y, 10, kind, param, seed=0), y, list("abcd"))])

    iid, mild, strong, two = skew("iid", None), skew("dirichlet", 10.0), skew("dirichlet", 0.1), skew("classes", 1)
    assert iid < 0.15 and iid < mild < strong and two >= 0.7
    # one class per client: every client holds a single class
    parts = partition(y, 8, "classes", 1, seed=0)
    assert all(len(set(y[p].tolist())) == 1 for p in parts)


def test_by_column_keeps_each_value_on_one_client_and_refuses_too_few_values():
    y = _labels(30)
    column = [f"hospital-{i % 7}" for i in range(len(y))]
    parts = partition(y, 3, "by-column", "site", column=column)
    owner = {}
    for c, p in enumerate(parts):
        for i in p:
            assert owner.setdefault(column[i], c) == c
    assert len(owner) == 7
    with pytest.raises(DataError, match="7 distinct value"):
        partition(y, 8, "by-column", "site", column=column)
    with pytest.raises(DataError, match="cannot be split among 500 clients"):
        partition(y, 500, "iid")


def test_options_are_checked_with_messages_that_name_them():
    assert FederatedConfig.from_dict({"clients": 3, "lr": 1}).lr == 1.0
    for bad, words in [({"clients": "3"}, "federated option clients: '3' is not of type int"),
                       ({"partition": "dir:1"}, "dirichlet:ALPHA"),
                       ({"aggregation": "mean"}, "aggregation must be one of"), ({"attacks": ["nan:12"]}, "client 12"),
                       ({"attacks": ["boom:1"]}, "KIND one of"), ({"cliens": 3}, "unknown option(s) cliens"),
                       ({"trim": 0.5}, "trim must be"), ({"proximal_mu": 200.0}, "overshoots"),
                       ({"secure": True, "aggregation": "krum"}, "combines with fedavg only"),
                       ({"secure": True, "attacks": ["nan:1"]}, "screened on the plain path only"),
                       ({"secure": "yes"}, "secure: 'yes' is not of type bool"),
                       ({"superlink": "localhost"}, "HOST:PORT"), ({"superlink": "10.0.0.5:8000"}, "root_certificates"),
                       ({"superlink": "127.0.0.1:8000", "partition": "classes:2"}, "no partition applies"),
                       ({"superlink": "127.0.0.1:8000", "attacks": ["nan:1"]}, "simulation only")]:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            FederatedConfig.from_dict(bad)


def test_command_line_values_take_each_option_type():
    from fmadapt.federated.config import assignments

    got = assignments(["lr=1e-3", "max_norm_ratio=none", "secure=false", "min-clients=2", "attacks=nan:1;crash:2"])
    assert got == {"lr": 0.001, "max_norm_ratio": None, "secure": False, "min_clients": 2,
                   "attacks": ["nan:1", "crash:2"]}
    assert FederatedConfig.from_dict(got).min_clients == 2
    with pytest.raises(ConfigError, match=r"--fed 'clients=three'.*not a valid value for clients \(int\)"):
        assignments(["clients=three"])
    with pytest.raises(ConfigError, match="unknown option.*cliens"):  # (named by from_dict, with the known ones)
        FederatedConfig.from_dict(assignments(["cliens=3"]))


def test_what_a_federated_fit_does_not_do_yet_is_refused_before_any_data_is_read():
    from fmadapt import TextClassifier

    for opts in ({"task": "regression"}, {"task": "multilabel"}, {"features": "age"}, {"ensemble": 2}):
        with pytest.raises(ConfigError, match="'federated'"):
            TextClassifier(backbone="tiny-bert", strategy="federated", **opts).fit("no-such-file.csv")


def test_screen_rejects_broken_and_outsized_updates():
    from fmadapt.federated.server import screen

    cur = [np.zeros((3, 4), np.float32), np.zeros(3, np.float32)]
    rng = np.random.default_rng(0)
    good = [[rng.normal(0, 0.1, (3, 4)).astype(np.float32), rng.normal(0, 0.1, 3).astype(np.float32)]
            for _ in range(4)]
    nan = [np.full((3, 4), np.nan, np.float32), np.zeros(3, np.float32)]
    shape = [np.zeros((3, 3), np.float32), np.zeros(3, np.float32)]
    huge = [g * 100 for g in good[0]]
    kept, rejected = screen([*good, nan, shape, huge, None], cur, 10.0)
    assert kept == [0, 1, 2, 3]
    assert rejected[4] == "NaN/Inf" and rejected[5] == "wrong shape" and rejected[7] == "failed"
    assert rejected[6].startswith("norm ")
    kept, rejected = screen([*good, huge], cur, None)  # no norm screen: the outsized update is kept
    assert kept == [0, 1, 2, 3, 4] and not rejected


def test_local_training_learns_and_the_proximal_term_holds_it_near_the_global_head():
    from fmadapt.federated.client import attack, local_train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    start = [np.zeros((2, 6), np.float32), np.zeros(2, np.float32)]
    cfg = {"lr": 0.1, "weight-decay": 0.0, "batch-size": 16, "local-epochs": 3}
    mu, sd = np.zeros(6, np.float32), np.ones(6, np.float32)
    free, _, _ = local_train(x, y, start, mu, sd, cfg, seed=1)
    pred = (x @ free[0].T + free[1]).argmax(1)
    assert (pred == y).mean() > 0.9
    held, _, _ = local_train(x, y, start, mu, sd, {**cfg, "proximal-mu": 5.0}, seed=1)
    assert np.linalg.norm(held[0]) < 0.5 * np.linalg.norm(free[0])
    flipped = attack("sign-flip", free, start)
    assert np.allclose(flipped[0], -4 * free[0])
    with pytest.raises(RuntimeError, match="simulated client failure"):
        attack("crash", free, start)


def test_dp_sgd_spends_the_target_epsilon_over_all_rounds_and_not_more():
    pytest.importorskip("opacus")
    from fmadapt.federated.client import local_train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    w = [np.zeros((2, 5), np.float32), np.zeros(2, np.float32)]
    cfg = {"lr": 0.01, "weight-decay": 0.0, "batch-size": 16, "local-epochs": 2, "dp-epsilon": 3.0,
           "dp-delta": 1e-5, "dp-clip": 1.0, "dp-lr": 0.5, "dp-rounds": 3}
    spent, steps = [], 0
    for r in range(3):
        w, _, privacy = local_train(x, y, w, np.zeros(5, np.float32), np.ones(5, np.float32), cfg, seed=r,
                                    steps_done=steps)
        steps = int(privacy["steps"])
        spent.append(privacy["epsilon"])
    assert spent[0] < spent[1] < spent[2] <= 3.0 + 0.03 and spent[2] > 2.9  # the budget, spent by the last round
    assert steps == 3 * 2 * 8  # (120 examples, expected batch 16: 8 Poisson batches an epoch)
    assert privacy["noise_multiplier"] > 0.5


@pytest.mark.integration  # (Flower's simulation engine runs the clients in Ray worker processes)
def test_federated_fit_with_hostile_clients_saves_an_ordinary_model(tmp_path):
    pytest.importorskip("ray")
    from conftest import text_frame
    from fmadapt import TextClassifier

    df = text_frame(40)
    clf = TextClassifier(backbone="tiny-bert", strategy="federated", extra={"federated": {
        "clients": 4, "rounds": 2, "partition": "dirichlet:1.0", "aggregation": "trimmed-mean",
        "attacks": ["nan:2", "wrong-shape:3"], "min_clients": 2}})
    clf.fit(df)
    fed = clf.history_["federation"]
    assert [r["round"] for r in fed["rounds"]] == [1, 2]
    for r in fed["rounds"]:
        assert r["rejected"] == {"2": "NaN/Inf", "3": "wrong shape"} and r["used"] == 2 and r["sampled"] == 4
        assert r["bytes_up"] > 0 and 0.0 <= r["accuracy"] <= 1.0
    assert fed["rejected"] == 4 and sum(c["examples"] for c in fed["clients"]) == len(clf.splits_["train"])
    assert fed["start"]["accuracy"] == pytest.approx(0.5)  # the zero head, before any round
    assert clf.metrics_["val"]["accuracy"] >= 0.75  # the two honest clients' head learnt the toy task
    clf.save_pretrained(tmp_path / "m")
    again = TextClassifier.from_pretrained(tmp_path / "m")
    texts = df["text"].tolist()[:8]
    assert np.allclose(again.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["strategy"] == "federated" and cfg["fit"]["extra"]["federated"]["aggregation"] == "trimmed-mean"
    assert "Rounds: the global model" in (tmp_path / "m" / "report.html").read_text()


@pytest.mark.integration
def test_federate_command(tmp_path):
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from conftest import text_frame
    from fmadapt.cli import app

    df = text_frame(30)
    df["site"] = [f"s{i % 5}" for i in range(len(df))]
    df.to_csv(tmp_path / "t.csv", index=False)
    runner = CliRunner()
    bad = runner.invoke(app, ["federate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "x"), "--partition",
                              "zipf"])
    assert bad.exit_code == 2 and "partition must be" in bad.output and not (tmp_path / "x").exists()
    assert runner.invoke(app, ["federate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "x"), "--strategy",
                               "lora", "--secure"]).exit_code == 2
    bad_dp = runner.invoke(app, ["federate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "x"), "--dp", "eps=1"])
    assert bad_dp.exit_code == 2 and "epsilon=E" in bad_dp.output
    r = runner.invoke(app, ["federate", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--backbone",
                            "tiny-bert", "--clients", "3", "--rounds", "2", "--partition", "by-column:site",
                            "--aggregation", "median", "--fed", "attacks=crash:0", "--dp", "epsilon=8,delta=1e-4",
                            "--report", "basic", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    fed = summary["history"]["federation"]
    assert summary["strategy"] == "federated" and fed["failed"] == 2 and fed["aggregation"] == "median"
    # DP-SGD: every client that trained spent at most its budget; the one that crashed reported nothing
    assert 0 < summary["epsilon"] <= 8.0 + 0.08 and set(fed["privacy"]["clients"]) == {"1", "2"}
    assert fed["statistics_round"]["from"].startswith("the server's validation split")
    assert "projection" not in fed["privacy"]  # (32 features: fewer than the default 256 axes, nothing to project)
    assert "epsilon spent" in (tmp_path / "m" / "README.md").read_text()
    assert all(r["failed_clients"] == [0] and r["used"] == 2 for r in fed["rounds"])
    # by-column: every site on one client
    assert all(len(c["classes"]) >= 1 for c in fed["clients"]) and sum(c["examples"] for c in fed["clients"]) == \
        summary["data"]["sizes"]["train"]
    p = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "t.csv"), "--output",
                            str(tmp_path / "p.csv")])
    assert p.exit_code == 0, p.output


@pytest.mark.integration
def test_secure_aggregation_trains_the_head_without_the_server_seeing_an_update():
    pytest.importorskip("ray")
    from conftest import text_frame
    from fmadapt import TextClassifier

    clf = TextClassifier(backbone="tiny-bert", strategy="federated",
                         extra={"federated": {"clients": 3, "rounds": 2, "secure": True}})
    clf.fit(text_frame(30))
    fed = clf.history_["federation"]
    assert fed["secure"]["protocol"].startswith("SecAgg+") and [r["round"] for r in fed["rounds"]] == [1, 2]
    assert not any("note" in r for r in fed["rounds"])  # every round's SecAgg+ completed and moved the head
    assert fed["statistics_round"]["from"].startswith("the server's validation split")
    assert clf.metrics_["val"]["accuracy"] >= 0.75


@pytest.mark.integration
@pytest.mark.parametrize("aggregation,extra", [("fedprox", {}), ("fedadam", {"fraction": 0.5}),
                                               ("multikrum", {"attacks": ["sign-flip:0"], "krum_f": 1})])
def test_the_other_flower_strategies_train_the_head(aggregation, extra):
    pytest.importorskip("ray")
    from conftest import text_frame
    from fmadapt import TextClassifier

    clf = TextClassifier(backbone="tiny-bert", strategy="federated",
                         extra={"federated": {"clients": 4, "rounds": 2, "aggregation": aggregation, **extra}})
    clf.fit(text_frame(30))
    rounds = clf.history_["federation"]["rounds"]
    sampled = 2 if "fraction" in extra else 4  # (fraction 0.5 of 4 clients)
    assert [(r["sampled"], r["used"]) for r in rounds] == [(sampled, sampled)] * 2
    assert clf.metrics_["val"]["accuracy"] >= 0.75


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration  # (Flower's deployment engine: a SuperLink, 3 SuperNodes and fmadapt, 5 processes; ~2 min)
def test_deployment_superlink_and_three_supernodes_survives_a_client_dying_mid_round(tmp_path):
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time

    from conftest import timm_dir, write_image_folder

    if not shutil.which("flower-superlink"):
        pytest.skip("Flower's deployment commands are not installed (pip install 'fmadapt[federated]')")
    for i in range(3):  # each SuperNode holds its own data, which nothing else reads
        write_image_folder(tmp_path / f"client{i}", per_class=6 + 2 * i, seed=i + 1)
    write_image_folder(tmp_path / "server", per_class=5, seed=9)
    backbone = timm_dir(tmp_path / "bb")
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"), "FLWR_TELEMETRY_ENABLED": "0"}
    link = _free_port()
    procs = [subprocess.Popen(["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
                               "--host", "127.0.0.1", "--port", str(link)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for _ in range(100):  # (the SuperLink's API is up)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", link)) == 0:
                    break
            time.sleep(0.2)
        for i in range(3):  # client 2's ClientApp process dies in round 2 (os._exit), as a crashed one would
            node = f'data="{tmp_path / f"client{i}"}"' + (' attack="exit:2"' if i == 2 else "")
            procs.append(subprocess.Popen(["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
                                           "--port", str(_free_port()), "--node-config", node], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = subprocess.run([sys.executable, "-m", "fmadapt", "federate", str(tmp_path / "server"), "--superlink",
                            f"127.0.0.1:{link}", "--clients", "3", "--rounds", "2", "--backbone", str(backbone),
                            "--out", str(tmp_path / "m"), "--report", "off", "--json"], env=env, capture_output=True,
                           text=True, timeout=600)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    fed = summary["history"]["federation"]
    assert fed["deployment"]["superlink"] == f"127.0.0.1:{link}" and fed["partition"] == "each SuperNode's own data"
    # every SuperNode's examples counted (18, 24 and 30 images), none of them read by the server
    assert sorted(c["examples"] for c in fed["clients"]) == [18, 24, 30]
    assert summary["data"]["sizes"] == {"train": 72, "val": 15}
    one, two = fed["rounds"]
    assert one["used"] == 3 and one["failed"] == 0
    dead = {c["client"] for c in fed["clients"] if c["examples"] == 30}
    assert two["used"] == 2 and set(two["failed_clients"]) == dead and fed["failed"] == 1
    assert two["accuracy"] >= 0.8  # (three colours: the round went on with two clients' heads)
    # the nodes deleted the features they kept for the run
    assert not list((Path(os.environ["FMADAPT_CACHE"]) / "federated").glob("*.npz"))
    p = subprocess.run([sys.executable, "-m", "fmadapt", "predict", str(tmp_path / "m"), str(tmp_path / "server"),
                        "--output", str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def test_by_column_reads_the_column_of_a_table_of_image_paths_and_refuses_a_folder(tmp_path, image_folder):
    import pandas as pd

    from fmadapt.adapt.federated import _column
    from fmadapt.config import FitConfig
    from fmadapt.data.filetable import file_examples

    files = sorted(image_folder.rglob("*.png"))
    rows = [{"path": str(p.relative_to(image_folder)), "label": p.parent.name, "site": f"s{i % 3}"}
            for i, p in enumerate(files)]
    pd.DataFrame(rows).to_csv(image_folder / "photos.csv", index=False)
    cfg = FitConfig()
    ex = file_examples(str(image_folder / "photos.csv"), cfg, "image", need_label=True)
    sub = ex.subset([5, 0, 7])  # (a training split: its own order)
    assert _column(sub, "site", cfg) == ["s2", "s0", "s1"]
    folder = dataclasses.replace(sub, source=str(image_folder))
    with pytest.raises(ConfigError, match="a table of the image files"):
        _column(folder, "site", cfg)


@pytest.mark.integration
def test_a_federation_in_which_no_round_aggregates_is_an_error_that_says_why():
    pytest.importorskip("ray")
    from conftest import text_frame
    from fmadapt import TextClassifier
    from fmadapt.errors import TrainingDiverged

    clf = TextClassifier(backbone="tiny-bert", strategy="federated", extra={"federated": {
        "clients": 3, "rounds": 1, "min_clients": 1, "attacks": ["crash:0,1,2"]}})
    with pytest.raises(TrainingDiverged, match=r"no round .* round 1: 0 usable, failed \[0, 1, 2\]"):
        clf.fit(text_frame(20))


@pytest.mark.integration
def test_dp_on_principal_axes_folds_back_into_an_exact_head():
    pytest.importorskip("ray")
    pytest.importorskip("opacus")
    from conftest import text_frame
    from fmadapt import TextClassifier

    clf = TextClassifier(backbone="tiny-bert", strategy="federated", extra={"federated": {
        "clients": 3, "rounds": 2, "dp_epsilon": 8.0, "dp_delta": 1e-4, "dp_axes": 5}})
    clf.fit(text_frame(40))
    fed = clf.history_["federation"]
    assert fed["privacy"]["projection"]["axes"] == 5 and "on 5 principal axes" in fed["trainable"]
    assert fed["rounds"][0]["bytes_up"] == 3 * 4 * (2 * 5 + 2)  # (3 clients sent 2 x 5 weights + 2 biases)
    # the head the server scored on the axes, folded back onto the backbone's features: the same probabilities
    val = clf.splits_["val"]
    p = clf.proba(val, calibrated=False)[np.arange(len(val)), [clf.classes_.index(v) for v in val.labels]]
    assert float(-np.log(p).mean()) == pytest.approx(fed["rounds"][-1]["loss"], abs=1e-4)
