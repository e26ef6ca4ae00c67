"""The options of a federated fit (`fmadapt federate`), saved in the model's config.json under
`extra["federated"]`. Torch-free and Flower-free: the CLI checks them before anything heavy is imported."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

AGGREGATIONS = ("fedavg", "fedprox", "fedadam", "trimmed-mean", "median", "krum", "multikrum")
#: simulated misbehaving clients (benchmarks and tests): what each does to the update it sends back
ATTACKS = ("sign-flip", "scale", "nan", "wrong-shape", "crash")


@dataclass
class FederatedConfig:
    """How the federation runs. Data are split among `clients` simulated clients (`partition`); each round every
    sampled client trains the trainable part (the probe head) for `local_epochs` on its own examples from the
    global weights and sends the weights back; the server aggregates them (`aggregation`)."""

    clients: int = 10
    rounds: int = 20
    #: iid | dirichlet:ALPHA (label skew; smaller = more skewed) | classes:K (each client holds K classes) |
    #: by-column:COL (a table column names each example's client)
    partition: str = "iid"
    aggregation: str = "fedavg"
    #: fraction of the clients sampled for each round (at least `min_clients`)
    fraction: float = 1.0
    #: a round needs this many clients' updates (default: all sampled ones but one, at least 1); fewer: it fails
    min_clients: int | None = None
    local_epochs: int = 2
    batch_size: int = 32
    #: local SGD (momentum 0.9) on standardised features, with weight decay; chosen over 5 datasets x 2 partitions
    #: (benchmarks/federated_defaults.py, notes/federated_defaults.md)
    lr: float = 0.01
    weight_decay: float = 0.01
    #: fedprox: strength of the proximal term (mu/2)·||w - w_global||²
    proximal_mu: float = 0.01
    #: fedadam: the server's learning rate
    server_lr: float = 0.05
    #: trimmed-mean: the fraction cut at each end of every coordinate
    trim: float = 0.2
    #: krum, multikrum: how many clients may be hostile (default: a fifth of the sampled ones); multikrum averages
    #: the sampled clients but that many, those Krum scores best
    krum_f: int | None = None
    #: an update whose distance to the global weights is above this many times the round's median distance is
    #: rejected (counted and reported), as are updates with NaN/Inf or a wrong shape (None: no norm check)
    max_norm_ratio: float | None = 10.0
    #: differential privacy: DP-SGD on every client (Opacus: per-example clipping at `dp_clip`, Gaussian noise
    #: calibrated so that each client's training over all rounds spends at most `dp_epsilon` at `dp_delta`, RDP
    #: accountant); None: off. The features are then standardised with the server's own validation split, so no
    #: client statistic leaves a client outside DP-SGD.
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    #: the clients' learning rate under DP (clipped gradients are smaller than plain ones)
    dp_lr: float = 0.03
    #: under DP (simulation): the clients train the head on this many top principal axes of the standardised
    #: features, found on the server's validation split (fewer weights: less noise in all; applied when there are
    #: more features and more validation examples than axes); None: all features. 256: best mean over 5 datasets x
    #: 2 partitions at epsilon 8 (benchmarks/notes/federated_dp.md)
    dp_axes: int | None = 256
    #: secure aggregation (Flower's SecAgg+, fedavg only): the server sees the sum of the clients' heads only;
    #: weights are clipped to +-secure_clip before they are quantised and masked
    secure: bool = False
    secure_clip: float = 8.0
    #: deployment: the SuperLink's address (HOST:PORT of its API, e.g. 127.0.0.1:8000); the clients are Flower
    #: SuperNodes started apart, each with its own data (--node-config data=PATH). None: Flower's simulation engine
    superlink: str | None = None
    #: deployment over TLS: the CA certificate the SuperLink's certificate is checked with (required for a SuperLink
    #: that is not on this machine; without it the connection is plain HTTP, allowed on loopback only)
    root_certificates: str | None = None
    #: deployment: seconds to wait for `clients` SuperNodes to connect before the first round
    connect_timeout: float = 300.0
    #: federated-finetune, federated-lora: how many top blocks of the backbone the clients train (-1: all that can be
    #: cut off; the blocks below stay frozen and their activations are computed once per client)
    unfreeze: int = 2
    #: federated-finetune, federated-lora: rounds of the federated probe that train the head alone first, on the
    #: frozen features (LP-FT, as `fit`'s head_init=probe); 0: the blocks and a new head from the first round
    head_rounds: int = 10
    seed: int = 0
    #: simulation only (benchmarks, tests): ["KIND:CLIENT,CLIENT", ...] with KIND one of ATTACKS
    attacks: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        from ..options import check_types

        check_types(self, "federated option")  # (a ConfigError naming the option, never a TypeError below)
        checks = [
            (self.clients >= 2, "clients must be >= 2"),
            (self.rounds >= 1, "rounds must be >= 1"),
            (self.aggregation in AGGREGATIONS, f"aggregation must be one of {' | '.join(AGGREGATIONS)}, got "
             f"{self.aggregation!r}"),
            (0.0 < self.fraction <= 1.0, "fraction must be in (0, 1]"),
            (self.min_clients is None or 1 <= self.min_clients <= self.clients,
             "min_clients must be between 1 and the number of clients"),
            (self.local_epochs >= 1, "local_epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0 and self.server_lr > 0, "lr and server_lr must be positive"),
            (self.weight_decay >= 0 and self.proximal_mu >= 0, "weight_decay and proximal_mu must be >= 0"),
            (self.lr * self.proximal_mu < 1.0, "lr x proximal_mu must be < 1 (a larger proximal pull overshoots)"),
            (0.0 <= self.trim < 0.5, "trim must be in [0, 0.5)"),
            (self.krum_f is None or self.krum_f >= 0, "krum_f must be >= 0"),
            (self.dp_epsilon is None or self.dp_epsilon > 0, "dp epsilon must be > 0"),
            (0.0 < self.dp_delta < 1.0, "dp delta must be in (0, 1), e.g. 1e-5"),
            (self.dp_clip > 0 and self.dp_lr > 0, "dp clip and dp_lr must be > 0"),
            (self.dp_axes is None or self.dp_axes >= 1, "dp_axes must be >= 1 (or none)"),
            (self.dp_epsilon is None or self.aggregation != "fedprox",
             "fedprox does not combine with dp: DP-SGD clips per-example gradients, which the proximal term is not"),
            (not self.secure or self.aggregation == "fedavg",
             "secure aggregation (SecAgg+) computes a weighted mean: it combines with fedavg only (robust "
             "aggregations need each client's update, which SecAgg+ hides from the server)"),
            (not self.secure or not self.attacks, "secure aggregation hides each update: simulated attacks are "
             "screened on the plain path only"),
            (not self.secure or self.dp_epsilon is None, "secure aggregation with DP-SGD is not built yet"),
            (self.secure_clip > 0, "secure_clip must be > 0"),
            (self.max_norm_ratio is None or self.max_norm_ratio > 1.0,
             "max_norm_ratio must be > 1 (or none: no check)"),
            (self.connect_timeout > 0, "connect_timeout must be > 0"),
            (self.unfreeze == -1 or self.unfreeze >= 1, "unfreeze must be >= 1 (top blocks) or -1 (all)"),
            (self.head_rounds >= 0, "head_rounds must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"federated: {msg}")
        self.partition_spec()
        self.attack_of()
        if self.superlink is not None:
            self._check_deployment()

    def _check_deployment(self) -> None:
        host, sep, port = str(self.superlink).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"federated: superlink must be HOST:PORT (the SuperLink's API, e.g. 127.0.0.1:8000), "
                              f"got {self.superlink!r}")
        if self.root_certificates is None and host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"federated: superlink {self.superlink} is not on this machine: give the CA "
                              "certificate its TLS certificate is checked with (root_certificates=PATH); plain "
                              "HTTP is allowed on loopback only")
        for ok, msg in [(self.partition == "iid", "each SuperNode reads its own data: no partition applies"),
                        (not self.secure, "secure aggregation runs in the simulation only so far"),
                        (not self.attacks, "simulated attacks run in the simulation only")]:
            if not ok:
                raise ConfigError(f"federated deployment (superlink): {msg}")

    @property
    def sampled(self) -> int:
        """Clients sampled in each round."""
        return max(1, min(self.clients, math.ceil(self.clients * self.fraction)))

    @property
    def required(self) -> int:
        """Updates a round needs (min_clients, else all sampled but one)."""
        return self.min_clients or max(1, self.sampled - 1)

    def partition_spec(self) -> tuple[str, Any]:
        """(kind, parameter) of `partition`: ("iid", None), ("dirichlet", alpha), ("classes", k), ("by-column", col)."""
        p = self.partition.strip()
        if p == "iid":
            return "iid", None
        m = re.fullmatch(r"dirichlet:([0-9.eE+-]+)", p)
        if m:
            alpha = float(m.group(1))
            if alpha > 0 and math.isfinite(alpha):
                return "dirichlet", alpha
        m = re.fullmatch(r"classes:(\d+)", p)
        if m and int(m.group(1)) >= 1:
            return "classes", int(m.group(1))
        if p.startswith("by-column:") and p[len("by-column:"):].strip():
            return "by-column", p[len("by-column:"):].strip()
        raise ConfigError(f"federated: partition must be iid, dirichlet:ALPHA (ALPHA > 0, e.g. dirichlet:0.5), "
                          f"classes:K (K >= 1) or by-column:COLUMN, got {self.partition!r}")

    def attack_of(self) -> dict[int, str]:
        """Simulated hostile clients: client index -> attack."""
        out: dict[int, str] = {}
        for spec in self.attacks:
            kind, _, who = str(spec).partition(":")
            if kind not in ATTACKS or not re.fullmatch(r"\d+(,\d+)*", who):
                raise ConfigError(f"federated: attacks are KIND:CLIENT[,CLIENT...] with KIND one of "
                                  f"{' | '.join(ATTACKS)}, got {spec!r}")
            for c in who.split(","):
                if int(c) >= self.clients:
                    raise ConfigError(f"federated: attack {spec!r} names client {c}; clients are 0..{self.clients - 1}")
                out[int(c)] = kind
        return out

    def check_top(self, strategy: str) -> None:
        """ConfigError for what federated fine-tuning and LoRA (`strategy`) do not do yet."""
        for ok, what in [(self.dp_epsilon is None, "differential privacy (--dp)"),
                         (not self.secure, "secure aggregation (--secure)"),
                         (self.superlink is None, "deployment on a SuperLink (--superlink)"),
                         (self.aggregation != "fedadam", "fedadam (its server rates are chosen for the head)")]:
            if not ok:
                raise ConfigError(f"federated: {what} is built for the probe only so far; strategy {strategy} "
                                  "runs in the simulation with fedavg, fedprox, trimmed-mean, median, krum or "
                                  "multikrum, without DP")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FederatedConfig:
        from ..options import dataclass_from_dict

        return dataclass_from_dict(cls, d, "federated")  # type: ignore[no-any-return]


def assignments(items: list[str], where: str = "--fed") -> dict[str, Any]:
    """["lr=0.05", "max_norm_ratio=none", "attacks=sign-flip:0,1;crash:5", ...] -> each value of its federation
    option's type (options.coerce, as for `fmadapt fit --set`); `attacks` is a ;-separated list."""
    from ..options import dataclass_assignments

    return dataclass_assignments(FederatedConfig, items, where, lists=("attacks",))
