#!/usr/bin/env python3
"""Recompute every fixture's results from its JSON alone, with the formulas that
README.md documents (numpy only, no Flower), and report bit-exact agreement.

This checks the README's description of Flower: what a Rust port must do to match.
Usage: verify.py FIXTURE_DIR
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

F32 = np.float32


def arr(a):
    return np.array(a["data"], dtype=a["dtype"]).reshape(a["shape"])


def arrays(d):
    return {k: arr(v) for k, v in d.items()}


def wavg_metrics(replies, key="num-examples"):
    ws = [r["metrics"][key] for r in replies]
    tot = sum(ws)
    fs = [w / tot for w in ws]
    out = {}
    for r, f in zip(replies, fs):
        for k, v in r["metrics"].items():
            if k == key:
                continue
            if k not in out:
                out[k] = [x * f for x in v] if isinstance(v, list) else v * f
            else:
                out[k] = [a + x * f for a, x in zip(out[k], v)] if isinstance(v, list) else out[k] + v * f
    return out


def fedavg_arrays(replies, key="num-examples"):
    ws = [r["metrics"][key] for r in replies]
    tot = sum(ws)
    fs = [w / tot for w in ws]  # f64 factors
    out = {}
    for r, f in zip(replies, fs):
        for k, v in arrays(r["arrays"]).items():
            # NEP 50: the Python float factor is cast to the array's dtype first.
            term = v * v.dtype.type(f)
            out[k] = term if k not in out else out[k] + term
    return out


def krum_select(replies, f, k):
    flat = np.stack([np.concatenate([arr(r["arrays"][kk]).ravel() for kk in r["arrays"]]) for r in replies])
    norms = np.square(flat).sum(axis=1)
    dist = norms[:, None] + norms[None, :] - 2 * flat @ flat.T
    nc = max(1, len(replies) - f - 2)
    scores = [np.sum(dist[i, np.argsort(d)[1 : nc + 1]]) for i, d in enumerate(dist)]
    return [replies[i] for i in np.argsort(scores)[:k]]


def pairwise_sum(a):
    """numpy's pairwise summation (loops_utils.h pairwise_sum), in a's dtype."""
    t = a.dtype.type
    n = len(a)
    if n < 8:
        res = t(0.0)  # numpy starts at 0.0 (so -0.0 sums give 0.0)
        for x in a:
            res = t(res + x)
        return res
    if n <= 128:
        r = [t(x) for x in a[:8]]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] = t(r[j] + a[i + j])
            i += 8
        res = t(t(t(r[0] + r[1]) + t(r[2] + r[3])) + t(t(r[4] + r[5]) + t(r[6] + r[7])))
        for x in a[i:]:
            res = t(res + x)
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return t(pairwise_sum(a[:n2]) + pairwise_sum(a[n2:]))


def dumb_select_order(d, beta):
    """numpy's argpartition(d, beta-1, axis=0)[:beta] for small kth (kth < 3):
    a selection sort of the first beta positions (strict <, swaps), per coordinate."""
    n = d.shape[0]
    flat = d.reshape(n, -1)
    out = np.empty((beta, flat.shape[1]), dtype=np.intp)
    for c in range(flat.shape[1]):
        idx = list(range(n))
        vals = list(flat[:, c])
        for i in range(beta):
            m = i
            for j in range(i + 1, n):
                if vals[j] < vals[m]:
                    m = j
            vals[i], vals[m] = vals[m], vals[i]
            idx[i], idx[m] = idx[m], idx[i]
        out[:, c] = idx[:beta]
    return out.reshape((beta,) + d.shape[1:])


def get_norm(nds):
    norms = [np.linalg.norm(a.ravel()) for a in nds]
    return float(np.sqrt(sum(n**2 for n in norms)))


def clip_update(local, glob, c):
    upd = {k: local[k] - glob[k] for k in glob}
    n = get_norm(list(upd.values()))
    s = min(1, c / n)
    for k in upd:
        upd[k] = upd[k] * upd[k].dtype.type(s) if isinstance(s, float) else upd[k] * s
    return {k: glob[k] + upd[k] for k in glob}, s < 1


def add_noise(rs, agg, std):
    """flwr.supercore.differential_privacy.add_gaussian_noise_inplace."""
    out = {}
    for k, a in agg.items():
        out[k] = a + rs.normal(0, std, a.shape).astype(a.dtype)
    return out


class Sim:
    def __init__(self, fx):
        self.fx = fx
        # Flower draws DP noise from numpy's legacy global RandomState.
        self.rs = np.random.RandomState(fx["numpy_global_seed"]) if fx.get("numpy_global_seed") is not None else np.random.RandomState(0)
        self.p = fx["params"]
        self.state = {}

    def step(self, rnd):
        fx, p, st = self.fx, self.p, self.state
        name = fx["fixture"]
        reps = rnd["replies"]
        glob = arrays(rnd["global"])
        s = fx["strategy"]
        if s in ("FedAvg", "FedProx"):
            return fedavg_arrays(reps), wavg_metrics(reps)
        if s == "FedAvgM":
            agg = fedavg_arrays(reps)
            cur = st.get("cur", glob)
            pg = {k: cur[k] - agg[k] for k in agg}
            m, lr = p["server_momentum"], p["server_learning_rate"]
            if m > 0:
                if "mv" not in st:
                    st["mv"] = pg
                else:
                    st["mv"] = {k: m * st["mv"][k] + pg[k] for k in pg}
                pg = st["mv"]
            new = {k: cur[k] - lr * pg[k] for k in cur}
            st["cur"] = new
            return new, wavg_metrics(reps)
        if s in ("FedAdagrad", "FedAdam", "FedYogi"):
            dflt = fx["defaults"]
            g = lambda n: p.get(n, dflt.get(n))
            eta, tau = g("eta"), g("tau")
            b1, b2 = (0.0, 0.0) if s == "FedAdagrad" else (g("beta_1"), g("beta_2"))
            agg = fedavg_arrays(reps)
            delta = {k: agg[k] - glob[k] for k in agg}
            m = st.get("m", {k: np.zeros_like(v) for k, v in agg.items()})
            m = {k: b1 * m[k] + (1 - b1) * delta[k] for k in m}
            v = st.get("v", {k: np.zeros_like(x) for k, x in agg.items()})
            if s == "FedAdagrad":
                v = {k: v[k] + delta[k] ** 2 for k in v}
                lr = eta
            elif s == "FedAdam":
                v = {k: b2 * v[k] + (1 - b2) * (delta[k] ** 2) for k in v}
                t = rnd["round"]
                lr = eta * np.sqrt(1 - np.power(b2, t + 1.0)) / (1 - np.power(b1, t + 1.0))
            else:
                v = {k: v[k] - (1.0 - b2) * (delta[k] ** 2) * np.sign(v[k] - delta[k] ** 2) for k in v}
                lr = eta
            st["m"], st["v"] = m, v
            return {k: glob[k] + lr * m[k] / (np.sqrt(v[k]) + tau) for k in glob}, wavg_metrics(reps)
        if s == "FedMedian":
            keys = list(reps[0]["arrays"])
            return {k: np.median(np.stack([arr(r["arrays"][k]) for r in reps]), axis=0) for k in keys}, wavg_metrics(reps)
        if s == "FedTrimmedAvg":
            keys = list(reps[0]["arrays"])
            out = {}
            for k in keys:
                stack = np.stack([arr(r["arrays"][k]) for r in reps])
                n = stack.shape[0]
                lo = int(p["beta"] * n)
                srt = np.sort(stack, axis=0)[lo : n - lo]
                # Sum in ascending order, then divide by the count (np.mean on axis 0).
                acc = srt[0].copy()
                for row in srt[1:]:
                    acc = acc + row
                out[k] = acc / acc.dtype.type(srt.shape[0])
            return out, wavg_metrics(reps)
        if s in ("Krum", "MultiKrum"):
            k = 1 if s == "Krum" else p["num_nodes_to_select"]
            sel = krum_select(reps, p["num_malicious_nodes"], k)
            return fedavg_arrays(sel), wavg_metrics(sel)
        if s == "Bulyan":
            f = p["num_malicious_nodes"]
            theta = len(reps) - 2 * f
            beta = theta - 2 * f
            sel = krum_select(reps, f, theta)
            out = {}
            for k in reps[0]["arrays"]:
                stack = np.stack([arr(r["arrays"][k]) for r in sel])
                med = np.median(stack, axis=0)
                d = np.abs(stack - med)
                order = dumb_select_order(d, beta)
                closest = np.take_along_axis(stack, order, axis=0)
                acc = closest[0].copy()
                for row in closest[1:]:
                    acc = acc + row
                out[k] = acc / acc.dtype.type(beta)
            return out, wavg_metrics(sel)
        if s == "QFedAvg":
            q, L = p["q"], 1.0 / p["client_learning_rate"]
            keys = list(glob)
            sum_delta, sum_h = None, 0.0
            for r in reps:
                loc = arrays(r["arrays"])
                loss = float(r["metrics"]["train_loss"])
                grad = [(glob[k] - loc[k]).astype(loc[k].dtype) for k in keys]
                grad = [g * g.dtype.type(L) for g in grad]
                # np.sum over a contiguous array = numpy's pairwise sum in the dtype.
                norm = float(sum(pairwise_sum(np.square(g).ravel()) for g in grad))
                lpq = np.float_power(loss + 1e-10, q)
                # `g *= loss_pow_q` in place: f32 * f64-scalar runs the f64 loop, then
                # rounds into the f32 array.
                delta = [(g.astype(np.float64) * lpq).astype(g.dtype) for g in grad]
                h = q * np.float_power(loss + 1e-10, q - 1) * norm + L * lpq
                sum_delta = delta if sum_delta is None else [a + b for a, b in zip(sum_delta, delta)]
                sum_h += h
            return {k: glob[k] - (d / sum_h) for k, d in zip(keys, sum_delta)}, wavg_metrics(reps)
        if s.startswith("DifferentialPrivacy"):
            rs = self.rs
            n_s = p["num_sampled_clients"]
            if s == "DifferentialPrivacyServerSideFixedClipping":
                c = p["clipping_norm"]
                clipped = [dict(r, arrays=None, _a=clip_update(arrays(r["arrays"]), glob, c)[0]) for r in reps]
                agg = self._avg_clipped(clipped)
                return add_noise(rs, agg, float((p["noise_multiplier"] * c) / n_s)), wavg_metrics(reps)
            if s == "DifferentialPrivacyServerSideAdaptiveClipping":
                c = st.get("c", p["initial_clipping_norm"])
                clipped, cnt = [], 0
                for r in reps:
                    a, bit = clip_update(arrays(r["arrays"]), glob, c)
                    cnt += int(bit)
                    clipped.append(dict(r, _a=a))
                # One scalar draw even when the stddev is 0 (then it returns cnt exactly).
                frac = float(rs.normal(cnt, rnd["state_after"]["clipped_count_stddev"])) / float(len(reps))
                st["c"] = c * math.exp(-p["clip_norm_lr"] * (frac - p["target_clipped_quantile"]))
                agg = self._avg_clipped(clipped)
                # Noise uses the clipping norm AFTER this round's update, and the
                # effective noise multiplier from compute_adaptive_noise_params.
                nm_eff = rnd["state_after"]["noise_multiplier"]
                return add_noise(rs, agg, float((nm_eff * st["c"]) / n_s)), wavg_metrics(reps)
            # client-side wrappers: FedAvg over the (already clipped) replies
            agg = fedavg_arrays(reps)
            if s == "DifferentialPrivacyClientSideAdaptiveClipping":
                c = st.get("c", p["initial_clipping_norm"])
                cnt = sum(int(bool(r["metrics"]["norm_bit"])) for r in reps)
                frac = float(rs.normal(cnt, rnd["state_after"]["clipped_count_stddev"])) / float(len(reps))
                st["c"] = c * math.exp(-p["clip_norm_lr"] * (frac - p["target_clipped_quantile"]))
                return add_noise(rs, agg, float((rnd["state_after"]["noise_multiplier"] * st["c"]) / n_s)), wavg_metrics(reps)
            return add_noise(rs, agg, float((p["noise_multiplier"] * p["clipping_norm"]) / n_s)), wavg_metrics(reps)
        raise ValueError(s)

    def _avg_clipped(self, clipped):
        tot = sum(r["metrics"]["num-examples"] for r in clipped)
        out = {}
        for r in clipped:
            f = r["metrics"]["num-examples"] / tot
            for k, v in r["_a"].items():
                t = v * v.dtype.type(f)
                out[k] = t if k not in out else out[k] + t
        return out


def check_mods(fx):
    """Client mods: the reply the server saw == mod(raw reply)."""
    mod = fx.get("client_mod")
    if not mod or "client_raw_replies" not in fx["rounds"][0]:
        return []
    bad = []
    c = fx["params"].get("clipping_norm", mod["params"].get("clipping_norm"))
    noisy = bool(mod["params"].get("sensitivity"))
    rs = np.random.RandomState(fx["numpy_global_seed"]) if fx.get("numpy_global_seed") is not None else None
    for rnd in fx["rounds"]:
        glob = arrays(rnd["global"])
        if fx["strategy"] == "DifferentialPrivacyClientSideAdaptiveClipping":
            c = rnd["config_sent"]["clipping_norm"]
        for raw, got in zip(rnd["client_raw_replies"], rnd["replies"]):
            exp, bit = clip_update(arrays(raw["arrays"]), glob, c)
            g = arrays(got["arrays"])
            if mod["name"] == "LocalDpMod":
                # LocalDpMod always draws noise (std 0 when sensitivity is 0).
                std = mod["noise_std_dev"]
                if rs is None:
                    rs = np.random.RandomState(0)
                exp = {k: v + rs.normal(0, std, v.shape).astype(v.dtype) for k, v in exp.items()}
            if not all(np.array_equal(exp[k], g[k]) and exp[k].dtype == g[k].dtype for k in exp):
                bad.append(f"round {rnd['round']} node {raw['node_id']}: mod output differs")
            if "norm_bit" in got["metrics"] and got["metrics"]["norm_bit"] != int(bit):
                bad.append(f"round {rnd['round']} node {raw['node_id']}: norm_bit differs")
    return bad


def main():
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "strategies/tests/fixtures/flower")
    failures = 0
    for f in sorted(d.glob("*.json")):
        fx = json.loads(f.read_text())
        sim = Sim(fx)
        notes = check_mods(fx)
        for rnd in fx["rounds"]:
            exp_a, exp_m = sim.step(rnd)
            got = arrays(rnd["result"]["arrays"])
            for k in got:
                e = np.asarray(exp_a[k])
                if e.dtype != got[k].dtype:
                    notes.append(f"r{rnd['round']} {k}: dtype {e.dtype} != {got[k].dtype}")
                elif not np.array_equal(e, got[k]):
                    ulp = np.max(np.abs(e - got[k]) / np.spacing(np.abs(got[k]).astype(got[k].dtype)))
                    notes.append(f"r{rnd['round']} {k}: differs, max {ulp:.1f} ulp")
            if exp_m != rnd["result"]["metrics"]:
                notes.append(f"r{rnd['round']}: metrics differ {exp_m} vs {rnd['result']['metrics']}")
            ev = rnd["evaluate"]
            if wavg_metrics(ev["replies"]) != ev["result"]["metrics"]:
                notes.append(f"r{rnd['round']}: evaluate metrics differ")
        status = "OK" if not notes else "DIFF"
        failures += bool(notes)
        print(f"{f.name}: {status}")
        for n in notes:
            print("   ", n)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
