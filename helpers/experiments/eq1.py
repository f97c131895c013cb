"""Eq. (1) of Wu & Varshney: a linear layer trained by SGD, in primal and dual form (notebook 00).

For ``y = W x`` the gradient of the loss with respect to ``W`` is ``grad_y L x^T``, so plain SGD from
``W_0`` gives ``W_T = W_0 - sum_t eta_t grad_y L_t (outer) x_t`` (:func:`outer_product_weights`), and
the trained layer applied to a new input is an attention-like sum over the training history,
``W_T x = W_0 x + sum_t v_t (x_t . x)`` with keys ``x_t``, query ``x`` and values
``v_t = -eta_t grad_t`` (:func:`dual_form`). :func:`make_task`, :func:`identity_table` and
:func:`dual_form_check` are notebook 00's experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers.config import Eq1Profile


@dataclass
class SGDRecord:
    """A linear layer ``y = W x`` trained by plain SGD, one example per step: the initial and final
    weights, the inputs ``xs`` [S, d_in], the output gradients ``grads`` [S, d_out] (dL/dy at each
    step), the learning rates ``lrs`` [S] and the losses [S]."""

    w0: np.ndarray
    w_final: np.ndarray
    xs: np.ndarray
    grads: np.ndarray
    lrs: np.ndarray
    losses: np.ndarray


def train_linear_sgd(w0: np.ndarray, xs: np.ndarray, targets: np.ndarray, lrs: np.ndarray,
                     dtype: torch.dtype = torch.float64, momentum: float = 0.0) -> SGDRecord:
    """Train ``y = W x`` (no bias) with ``torch.optim.SGD``, one example per step, softmax cross-entropy
    against class ``targets`` [S], learning rate ``lrs[t]`` at step t; record inputs and dL/dy.
    ``momentum > 0`` breaks Eq. (1) (the update is no longer the current gradient alone)."""
    w = torch.nn.Parameter(torch.as_tensor(np.asarray(w0), dtype=dtype).clone())
    opt = torch.optim.SGD([w], lr=float(lrs[0]), momentum=momentum)
    grads, losses = [], []
    x_all = torch.as_tensor(np.asarray(xs), dtype=dtype)
    y_all = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    for t in range(len(x_all)):
        for group in opt.param_groups:
            group["lr"] = float(lrs[t])
        y = w @ x_all[t]
        y.retain_grad()
        loss = F.cross_entropy(y[None], y_all[t : t + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads.append(y.grad.detach().clone())
        losses.append(float(loss.detach()))
    np_dtype = x_all.numpy().dtype
    return SGDRecord(
        w0=np.asarray(w0).astype(np_dtype), w_final=w.detach().numpy().copy(), xs=x_all.numpy(),
        grads=torch.stack(grads).numpy(), lrs=np.asarray(lrs, dtype=np_dtype), losses=np.array(losses),
    )


def outer_product_weights(w0: np.ndarray, xs: np.ndarray, grads: np.ndarray, lrs: np.ndarray) -> np.ndarray:
    """Eq. (1): ``W_0 - sum_t eta_t grad_y L_t (outer) x_t``, shape [d_out, d_in]."""
    return w0 - np.einsum("t,to,ti->oi", lrs, grads, xs)


def dual_form(w0: np.ndarray, xs: np.ndarray, grads: np.ndarray, lrs: np.ndarray,
              x_new: np.ndarray) -> dict[str, np.ndarray]:
    """The trained layer applied to ``x_new`` [d_in] in dual (attention-like) form:
    ``W_T x = W_0 x + sum_t v_t (x_t . x)`` with keys ``x_t``, query ``x``, values ``v_t = -eta_t grad_t``.
    Returns ``output``, ``base`` (W_0 x), ``scores`` [S] (x_t . x) and ``values`` [S, d_out]."""
    scores = xs @ x_new
    values = -lrs[:, None] * grads
    base = w0 @ x_new
    return {"output": base + scores @ values, "base": base, "scores": scores, "values": values}


@dataclass
class Eq1Task:
    """A learnable classification task for a linear layer: initial weights ``w0`` [d_out, d_in],
    training inputs ``xs`` [S, d_in] with classes ``targets`` [S] (argmax of a random teacher),
    decaying step sizes ``lrs`` [S] (eta_t = 0.5 / sqrt(1 + t)) and new inputs ``x_new`` [n_new, d_in]."""

    w0: np.ndarray
    xs: np.ndarray
    targets: np.ndarray
    lrs: np.ndarray
    x_new: np.ndarray


def make_task(cfg: Eq1Profile, seed: int = 0) -> Eq1Task:
    """The seeded task of notebook 00 at the sizes of ``cfg`` (one generator, drawn in a fixed order)."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((cfg.d_out, cfg.d_in))
    xs = rng.standard_normal((cfg.steps, cfg.d_in))
    targets = np.argmax(xs @ teacher.T, axis=1)
    w0 = 0.1 * rng.standard_normal((cfg.d_out, cfg.d_in))
    x_new = rng.standard_normal((cfg.n_new, cfg.d_in))
    return Eq1Task(w0=w0, xs=xs, targets=targets, lrs=0.5 / np.sqrt(1 + np.arange(cfg.steps)), x_new=x_new)


TRAININGS = (("float64", torch.float64, 0.0), ("float32", torch.float32, 0.0),
             ("float64, SGD with momentum 0.9", torch.float64, 0.9))


def identity_table(task: Eq1Task) -> tuple[pd.DataFrame, dict[str, SGDRecord]]:
    """Train the layer in float64, float32 and with momentum 0.9; rebuild W_T from the record by Eq. (1).

    One row per training: how far W moved, the largest error of the rebuilt matrix (absolute and
    relative to max |W_T|), the machine epsilon, and the mean loss of the first and last 10 steps.
    """
    rows, records = [], {}
    for name, dtype, momentum in TRAININGS:
        rec = train_linear_sgd(task.w0, task.xs, task.targets, task.lrs, dtype=dtype, momentum=momentum)
        err = np.abs(outer_product_weights(rec.w0, rec.xs, rec.grads, rec.lrs) - rec.w_final).max()
        rows.append({"training": name, "max |W_T - W_0|": np.abs(rec.w_final - rec.w0).max(),
                     "max |W_T - rebuilt|": err, "relative error": err / np.abs(rec.w_final).max(),
                     "machine epsilon": float(np.finfo(rec.xs.dtype).eps),
                     "first-10 loss": rec.losses[:10].mean(), "last-10 loss": rec.losses[-10:].mean()})
        records[name] = rec
    return pd.DataFrame(rows), records


def dual_form_check(rec: SGDRecord, x_new: np.ndarray) -> dict[str, np.ndarray | float]:
    """Primal ``W_T x`` [n, d_out] and dual form [n, d_out] for new inputs ``x_new`` [n, d_in], their
    largest difference ``max_error``, the largest output ``max_output`` and, for the first new input,
    the contribution ``|score_t| * ||value_t||`` of every training step [S]."""
    primal = x_new @ rec.w_final.T
    dual = np.stack([dual_form(rec.w0, rec.xs, rec.grads, rec.lrs, x)["output"] for x in x_new])
    one = dual_form(rec.w0, rec.xs, rec.grads, rec.lrs, x_new[0])
    return {"primal": primal, "dual": dual, "max_error": float(np.abs(primal - dual).max()),
            "max_output": float(np.abs(primal).max()),
            "contributions": np.abs(one["scores"]) * np.linalg.norm(one["values"], axis=1)}


def reading(table: pd.DataFrame, check: dict) -> str:
    """Markdown stating what the identity table and the dual-form check show, from their numbers."""
    rows = table.set_index("training")
    lines = []
    for name in rows.index:
        r = rows.loc[name]
        ratio = r["relative error"] / r["machine epsilon"]
        lines.append(f"* {name}: W moved by up to {r['max |W_T - W_0|']:.3g}; the matrix rebuilt by Eq. (1) is off by "
                     f"{r['max |W_T - rebuilt|']:.2e} ({r['relative error']:.1e} relative, {ratio:.3g} x machine "
                     f"epsilon); loss {r['first-10 loss']:.3f} over the first 10 steps, {r['last-10 loss']:.3f} over "
                     "the last 10.")
    lines.append(f"* Dual form: the largest difference between W_T x and W_0 x + sum_t value_t score_t over "
                 f"{len(check['primal'])} new inputs is {check['max_error']:.2e}, for outputs of size up to "
                 f"{check['max_output']:.2f}.")
    return "\n".join(lines)
