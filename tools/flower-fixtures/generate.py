#!/usr/bin/env python3
"""Run Flower 1.42's own message-API strategies on seeded inputs and write fixtures.

Every fixture drives a real `flwr.serverapp.strategy` object the way
`Strategy.start` does (configure_train -> aggregate_train -> configure_evaluate ->
aggregate_evaluate, the aggregated arrays becoming the next round's global arrays),
with reply `Message`s built as a ClientApp builds them (`Message(content, reply_to=msg)`).
Client-side DP mods are run as real mods (`mod(msg, context, call_next)`).

Usage: generate.py OUT_DIR   (writes one JSON file per strategy/variant)
See README.md next to this file for the schema and for what Flower computes;
verify.py recomputes every fixture from its JSON with the documented formulas.
"""

from __future__ import annotations

import inspect
import logging
import json
import random
import sys
from pathlib import Path

import numpy as np

import flwr
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod
from flwr.serverapp import strategy as S
from flwr.supercore.task_identity import TaskIdentity

FLOWER_VERSION = "1.42.0"
logging.getLogger("flwr").setLevel(logging.ERROR)
ROUNDS = 3
# Array keys are chosen so that their sorted order (JSON sort_keys) equals the
# ArrayRecord's insertion order: Krum flattens arrays in record order.
SHAPES = {"a.weight": (3, 4), "b.bias": (5,), "c.kernel": (2, 2, 2)}
ARRAY_KEYS = list(SHAPES)

# `Message(content, dst_node_id, message_type)` reads the process's task identity.
TaskIdentity.run_id = 1
TaskIdentity.node_id = 0  # SuperLink-side / ServerApp node id (src of instructions)
TaskIdentity.task_id = 1


class StubGrid:
    """Minimal stand-in for flwr.serverapp.Grid: only what sampling needs."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


# ----------------------------------------------------------------------------- JSON
def enc_array(a: np.ndarray) -> dict:
    a = np.asarray(a)
    return {
        "dtype": str(a.dtype),
        "shape": list(a.shape),
        # float() of a float32/float64 is exact in f64; json writes repr (round-trips).
        "data": [float(x) for x in a.ravel(order="C")],
    }


def enc_arrays(rec) -> dict:
    if rec is None:
        return None
    if isinstance(rec, ArrayRecord):
        return {k: enc_array(v.numpy()) for k, v in rec.items()}
    return {k: enc_array(v) for k, v in rec.items()}


def enc_value(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [enc_value(x) for x in v]
    if isinstance(v, bytes):
        return {"bytes_hex": v.hex()}
    if isinstance(v, str):
        return v
    raise TypeError(f"cannot encode {type(v)}: {v!r}")


def enc_value_typed(v):
    """Metric value with its Python type (int vs float matters for Rust records)."""
    out = enc_value(v)
    if isinstance(v, (list, tuple)):
        kind = "list[int]" if v and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v) else "list[float]"
    elif isinstance(v, (bool, np.bool_)):
        kind = "bool"
    elif isinstance(v, (int, np.integer)):
        kind = "int"
    elif isinstance(v, (float, np.floating)):
        kind = "float"
    else:
        kind = type(v).__name__
    return out, kind


def enc_record(rec) -> dict | None:
    if rec is None:
        return None
    return {k: enc_value(v) for k, v in rec.items()}


def enc_record_types(rec) -> dict | None:
    if rec is None:
        return None
    return {k: enc_value_typed(v)[1] for k, v in rec.items()}


def enc_default(d):
    if d is inspect.Parameter.empty:
        return {"required": True}
    if callable(d):
        return getattr(d, "__name__", repr(d))
    return enc_value(d) if d is not None else None


def signature_defaults(cls) -> dict:
    sig = inspect.signature(cls.__init__)
    out = {}
    for name, p in sig.parameters.items():
        if name == "self":
            continue
        out[name] = enc_default(p.default)
    return out


def write_json(path: Path, obj: dict) -> int:
    text = json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n"
    path.write_text(text)
    return len(text.encode())


# ----------------------------------------------------------------------------- inputs
def initial_global(rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
    return {k: rng.normal(0.0, 1.0, s).astype(dtype) for k, s in SHAPES.items()}


def client_arrays(
    rng: np.random.Generator, glob: dict[str, np.ndarray], scale: float, shift: float, dtype
) -> dict[str, np.ndarray]:
    """A plausible local model: global + shift + N(0, scale), drawn in f64, cast."""
    out = {}
    for k, g in glob.items():
        out[k] = (g.astype(np.float64) + shift + rng.normal(0.0, scale, g.shape)).astype(dtype)
    return out


def to_record(arrs: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrs.items()})


def train_metrics(rng: np.random.Generator, i: int) -> dict:
    return {
        "num-examples": int(rng.integers(8, 120)),
        "train_loss": float(rng.uniform(0.2, 2.5)),
        "accuracy": float(rng.uniform(0.3, 0.95)),
        "per-class": [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))],
        "steps": int(rng.integers(1, 50)),
    }


def eval_metrics(rng: np.random.Generator) -> dict:
    return {
        "num-examples": int(rng.integers(5, 60)),
        "eval_loss": float(rng.uniform(0.2, 2.5)),
        "accuracy": float(rng.uniform(0.3, 0.95)),
    }


# ----------------------------------------------------------------------------- state
def strategy_state(st) -> dict:
    """Optimiser / DP state after a round, for debugging a Rust mismatch."""
    out = {}
    inner = st
    if hasattr(st, "clipping_norm") and hasattr(st, "strategy"):
        out["clipping_norm"] = float(st.clipping_norm)
        out["noise_multiplier"] = float(st.noise_multiplier)
        if hasattr(st, "clipped_count_stddev"):
            out["clipped_count_stddev"] = float(st.clipped_count_stddev)
        inner = st.strategy
    if getattr(inner, "momentum_vector", None) is not None:
        out["momentum_vector"] = {
            k: enc_array(v) for k, v in zip(ARRAY_KEYS, inner.momentum_vector)
        }
    if getattr(inner, "m_t", None):
        out["m_t"] = enc_arrays(inner.m_t)
    if getattr(inner, "v_t", None):
        out["v_t"] = enc_arrays(inner.v_t)
    return out


# ----------------------------------------------------------------------------- driver
def run_fixture(
    *,
    name: str,
    strategy,
    params: dict,
    defaults: dict,
    seed: int,
    n_nodes: int = 5,
    dtype=np.float32,
    outlier: bool = False,
    numpy_global_seed: int | None = None,
    client_mod=None,
    extra: dict | None = None,
    train_config: dict | None = None,
    scales=None,
):
    """Drive `strategy` for ROUNDS rounds; return the fixture dict."""
    rng = np.random.default_rng(seed)
    random.seed(seed)  # FedAvg.sample_nodes uses random.sample
    if numpy_global_seed is not None:
        np.random.seed(numpy_global_seed)  # Flower's DP noise uses np.random.normal
    node_ids = [11 + 7 * i for i in range(n_nodes)]
    grid = StubGrid(node_ids)
    glob = initial_global(rng, dtype)
    arrays = to_record(glob)
    cfg = ConfigRecord(dict(train_config or {"lr": 0.05, "local-epochs": 1}))
    eval_cfg = ConfigRecord({"batch-size": 32})
    if scales is None:
        scales = [0.02, 0.05, 0.1, 0.2, 0.4, 0.08, 0.03][:n_nodes]
    rounds = []
    for rnd in range(1, ROUNDS + 1):
        round_out: dict = {"round": rnd, "global": enc_arrays(arrays)}
        msgs = list(strategy.configure_train(rnd, arrays, cfg, grid))
        round_out["sampled_node_ids"] = [m.metadata.dst_node_id for m in msgs]
        first = msgs[0]
        round_out["config_sent"] = enc_record(first.content["config"])
        round_out["config_sent_types"] = enc_record_types(first.content["config"])
        round_out["message_type"] = first.metadata.message_type
        # Replies in ascending node id order (Flower's order is the grid's).
        msgs.sort(key=lambda m: m.metadata.dst_node_id)
        replies, enc_replies, raw_replies = [], [], []
        for i, m in enumerate(msgs):
            sent = {k: v.numpy() for k, v in m.content["arrays"].items()}
            shift = 0.0
            if outlier and i == len(msgs) - 1:
                shift = 3.0  # a Byzantine node far from the others
            local = client_arrays(rng, sent, scales[i], shift, dtype)
            mets = train_metrics(rng, i)
            if client_mod is not None:
                raw_replies.append(
                    {"node_id": m.metadata.dst_node_id, "arrays": enc_arrays(local),
                     "metrics": {k: enc_value(v) for k, v in mets.items()}}
                )

                def call_next(msg, ctxt, _local=local, _mets=mets):
                    return Message(
                        RecordDict({"arrays": to_record(_local), "metrics": MetricRecord(dict(_mets))}),
                        reply_to=msg,
                    )

                ctx = Context(
                    run_id=1, node_id=m.metadata.dst_node_id, node_config={},
                    state=RecordDict(), run_config={},
                )
                reply = client_mod(m, ctx, call_next)
                assert not reply.has_error(), reply.error
            else:
                reply = Message(
                    RecordDict({"arrays": to_record(local), "metrics": MetricRecord(dict(mets))}),
                    reply_to=m,
                )
            replies.append(reply)
            mrec = reply.content["metrics"]
            enc_replies.append(
                {
                    "node_id": reply.metadata.src_node_id,
                    "arrays": enc_arrays(reply.content["arrays"]),
                    "metrics": enc_record(mrec),
                    "metric_types": enc_record_types(mrec),
                }
            )
        if client_mod is not None:
            round_out["client_raw_replies"] = raw_replies
        round_out["replies"] = enc_replies
        new_arrays, metrics = strategy.aggregate_train(rnd, replies)
        if name.startswith("dp_server"):
            # Flower replaced each reply's ArrayRecord with the clipped one.
            round_out["clipped_replies"] = [
                {"node_id": r.metadata.src_node_id, "arrays": enc_arrays(r.content["arrays"])}
                for r in replies
            ]
        round_out["result"] = {
            "arrays": enc_arrays(new_arrays),
            "metrics": enc_record(metrics),
            "metric_types": enc_record_types(metrics),
        }
        round_out["state_after"] = strategy_state(strategy)
        if new_arrays is not None:
            arrays = new_arrays

        # Federated evaluation on the new global arrays.
        emsgs = list(strategy.configure_evaluate(rnd, arrays, eval_cfg, grid))
        emsgs.sort(key=lambda m: m.metadata.dst_node_id)
        ereplies, enc_ereplies = [], []
        for m in emsgs:
            em = eval_metrics(rng)
            ereplies.append(Message(RecordDict({"metrics": MetricRecord(dict(em))}), reply_to=m))
            enc_ereplies.append({"node_id": m.metadata.dst_node_id, "metrics": {k: enc_value(v) for k, v in em.items()}})
        emet = strategy.aggregate_evaluate(rnd, ereplies)
        round_out["evaluate"] = {
            "config_sent": enc_record(emsgs[0].content["config"]) if emsgs else None,
            "message_type": emsgs[0].metadata.message_type if emsgs else None,
            "replies": enc_ereplies,
            "result": {"metrics": enc_record(emet), "metric_types": enc_record_types(emet)},
        }
        rounds.append(round_out)

    fixture = {
        "flower": FLOWER_VERSION,
        "flower_installed": flwr.__version__ if hasattr(flwr, "__version__") else None,
        "numpy": np.__version__,
        "fixture": name,
        "strategy": type(strategy).__name__,
        "params": params,
        "defaults": defaults,
        "seed": seed,
        "numpy_global_seed": numpy_global_seed,
        "array_keys": ARRAY_KEYS,
        "dtype": np.dtype(dtype).name,
        "node_ids": node_ids,
        "train_config_in": {k: enc_value(v) for k, v in (train_config or {"lr": 0.05, "local-epochs": 1}).items()},
        "evaluate_config_in": {"batch-size": 32},
        "rounds": rounds,
    }
    if extra:
        fixture.update(extra)
    return fixture


def make(cls, params: dict):
    """Build strategy `cls(**params)` and run it; params/defaults recorded."""
    st = cls(**params)
    defaults = signature_defaults(cls)
    return st, {k: enc_value(v) if not isinstance(v, S.Strategy) else type(v).__name__ for k, v in params.items()}, defaults


# ----------------------------------------------------------------------------- catalogue
def fixtures():
    N5 = {"min_available_nodes": 5}
    out = []

    def plain(name, cls, params, seed, **kw):
        st, p, d = make(cls, params)
        out.append((name, lambda: run_fixture(name=name, strategy=st, params=p, defaults=d, seed=seed, **kw)))

    plain("fedavg", S.FedAvg, dict(N5), 101)
    plain("fedavg_f64", S.FedAvg, dict(N5), 102, dtype=np.float64)
    plain("fedavgm", S.FedAvgM, dict(N5, server_momentum=0.9, server_learning_rate=1.0), 103)
    plain("fedavgm_lr0.7_m0.5", S.FedAvgM, dict(N5, server_momentum=0.5, server_learning_rate=0.7), 104)
    plain("fedprox", S.FedProx, dict(N5, proximal_mu=0.1), 105)
    plain("fedadagrad", S.FedAdagrad, dict(N5), 106)
    plain("fedadam", S.FedAdam, dict(N5), 107)
    plain("fedadam_f64", S.FedAdam, dict(N5), 108, dtype=np.float64)
    plain("fedyogi", S.FedYogi, dict(N5), 109)
    plain("fedyogi_custom", S.FedYogi, dict(N5, eta=0.05, eta_l=0.02, beta_1=0.8, beta_2=0.95, tau=1e-4), 110)
    plain("fedadam_custom", S.FedAdam, dict(N5, eta=0.03, eta_l=0.02, beta_1=0.85, beta_2=0.9, tau=1e-2), 111)
    plain("fedmedian", S.FedMedian, dict(N5), 112)
    # 5 replies and beta 0.2 trim one from each end; 7 replies trim one too (int(1.4)).
    plain("fedtrimmedavg", S.FedTrimmedAvg, dict(N5, beta=0.2), 113)
    plain("fedtrimmedavg_n7", S.FedTrimmedAvg, dict(min_available_nodes=7, beta=0.3), 114, n_nodes=7)
    plain("krum", S.Krum, dict(N5, num_malicious_nodes=1), 115, outlier=True)
    plain("multikrum", S.MultiKrum, dict(N5, num_malicious_nodes=1, num_nodes_to_select=2), 116, outlier=True)
    plain("bulyan", S.Bulyan, dict(min_available_nodes=7, num_malicious_nodes=1), 117, n_nodes=7, outlier=True)
    plain("qfedavg", S.QFedAvg, dict(N5, client_learning_rate=0.1, q=0.2), 118)
    plain("qfedavg_q0", S.QFedAvg, dict(N5, client_learning_rate=0.05, q=0.0), 119)

    # ---- server-side DP wrappers (inner strategy FedAvg) ----
    def dp(name, cls, dp_params, seed, np_seed=None, client_mod=None, mod_desc=None):
        inner = S.FedAvg(**N5)
        st = cls(inner, **dp_params)
        p = {"strategy": "FedAvg(min_available_nodes=5)", **{k: enc_value(v) for k, v in dp_params.items()}}
        d = signature_defaults(cls)
        extra = {"inner_strategy": "FedAvg", "inner_params": dict(N5)}
        if mod_desc:
            extra["client_mod"] = mod_desc
        out.append((name, lambda: run_fixture(
            name=name, strategy=st, params=p, defaults=d, seed=seed,
            numpy_global_seed=np_seed, client_mod=client_mod, extra=extra)))

    dp("dp_server_fixed", S.DifferentialPrivacyServerSideFixedClipping,
       dict(noise_multiplier=0.0, clipping_norm=0.5, num_sampled_clients=5), 120)
    dp("dp_server_fixed_noise", S.DifferentialPrivacyServerSideFixedClipping,
       dict(noise_multiplier=1.0, clipping_norm=0.5, num_sampled_clients=5), 121, np_seed=4242)
    dp("dp_server_adaptive", S.DifferentialPrivacyServerSideAdaptiveClipping,
       dict(noise_multiplier=0.0, num_sampled_clients=5, initial_clipping_norm=0.5,
            target_clipped_quantile=0.5, clip_norm_lr=0.2), 122)
    dp("dp_server_adaptive_noise", S.DifferentialPrivacyServerSideAdaptiveClipping,
       dict(noise_multiplier=0.4, num_sampled_clients=5, initial_clipping_norm=0.5,
            target_clipped_quantile=0.5, clip_norm_lr=0.2, clipped_count_stddev=1.0), 123, np_seed=4343)
    # ---- client-side DP: the strategy wrapper + the real client mod on every reply ----
    dp("dp_client_fixed", S.DifferentialPrivacyClientSideFixedClipping,
       dict(noise_multiplier=0.0, clipping_norm=0.5, num_sampled_clients=5), 124,
       client_mod=fixedclipping_mod, mod_desc={"name": "fixedclipping_mod", "params": {}})
    dp("dp_client_adaptive", S.DifferentialPrivacyClientSideAdaptiveClipping,
       dict(noise_multiplier=0.0, num_sampled_clients=5, initial_clipping_norm=0.5,
            target_clipped_quantile=0.5, clip_norm_lr=0.2), 125,
       client_mod=adaptiveclipping_mod, mod_desc={"name": "adaptiveclipping_mod", "params": {}})

    # ---- LocalDpMod on the client, plain FedAvg on the server ----
    def localdp(name, mod_params, seed, np_seed=None):
        mod = LocalDpMod(**mod_params)
        st, p, d = make(S.FedAvg, dict(N5))
        extra = {"client_mod": {"name": "LocalDpMod", "params": {k: enc_value(v) for k, v in mod_params.items()},
                                "defaults": signature_defaults(LocalDpMod),
                                "noise_std_dev": float(mod_params["sensitivity"] * np.sqrt(2 * np.log(1.25 / mod_params["delta"])) / mod_params["epsilon"])}}
        out.append((name, lambda: run_fixture(
            name=name, strategy=st, params=p, defaults=d, seed=seed,
            numpy_global_seed=np_seed, client_mod=mod, extra=extra)))

    localdp("localdp_clip", dict(clipping_norm=0.5, sensitivity=0.0, epsilon=1.0, delta=1e-5), 126)
    localdp("localdp_noise", dict(clipping_norm=0.5, sensitivity=0.01, epsilon=5.0, delta=1e-5), 127, np_seed=4444)
    return out


def main() -> None:
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else "strategies/tests/fixtures/flower")
    outdir.mkdir(parents=True, exist_ok=True)
    if getattr(flwr, "__version__", FLOWER_VERSION) != FLOWER_VERSION:
        sys.exit(f"need flwr=={FLOWER_VERSION}, found {flwr.__version__}")
    sizes = {}
    for name, build in fixtures():
        fx = build()
        sizes[name] = write_json(outdir / f"{name}.json", fx)
    for name, size in sizes.items():
        print(f"{name}.json {size} bytes")


if __name__ == "__main__":
    main()
