"""An int8 MLP whose inference mines blocks: scikit-learn's bundled digits (no
download), a small MLP trained in float with NumPy, quantized to [-64, 63], and its
two matmuls run through node/own_work.OwnWork against a devnet node. It prints the
accuracy of that inference, the accuracy of the same integer inference done with
plain NumPy (they must agree exactly), and the blocks the products mined.

    pip install -e '.[examples]'
    pouw node --network devnet --datadir ./devnet-data &        # a node (it need not mine)
    python docs/examples/digits_mlp.py --datadir ./devnet-data --address dpw1...

``--rounds`` repeats the inference (more products, more lottery tickets).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chain.network import load_network  # noqa: E402
from node.own_work import OwnWork  # noqa: E402
from wallet.rpc import RpcClient  # noqa: E402

Q = 63  # int8 operands of the market and the lottery live in [-64, 63]


def train(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """A two-layer ReLU MLP fitted by full-batch gradient descent on softmax loss."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (x.shape[1], hidden))
    w2 = rng.normal(0, 0.3, (hidden, 10))
    onehot = np.eye(10)[y]
    for _ in range(epochs):
        h = np.maximum(x @ w1, 0)
        logits = h @ w2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(x)
        gh = (g @ w2.T) * (h > 0)
        w2 -= 0.5 * h.T @ g
        w1 -= 0.5 * x.T @ gh
    return w1, w2


def quantize(w: np.ndarray) -> tuple[np.ndarray, float]:
    scale = Q / max(float(np.abs(w).max()), 1e-12)
    return np.clip(np.rint(w * scale), -Q, Q).astype(np.int8), scale


def int_inference(x_q: np.ndarray, w1_q: np.ndarray, w2_q: np.ndarray, matmul) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Integer inference: exact int products, the hidden layer requantized to [0, 63]."""
    h = np.maximum(np.asarray(matmul(x_q, w1_q), dtype=np.int64), 0)
    shift = max(0, int(h.max()).bit_length() - 6)  # keep the activations in [0, 63]
    h_q = (h >> shift).astype(np.int8)
    return np.asarray(matmul(h_q, w2_q), dtype=np.int64).argmax(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rpc", default=None, help="node RPC URL (default: the devnet's)")
    p.add_argument("--datadir", type=Path, required=True, help="the node's datadir (cookie)")
    p.add_argument("--genesis-file", type=Path, help="a private devnet's genesis file")
    p.add_argument("--address", required=True, help="where won blocks pay")
    p.add_argument("--samples", type=int, default=0, help="test samples (0: all held out)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data / 16.0
    y = digits.target
    split = len(x) * 3 // 4
    w1, w2 = train(x[:split], y[:split], hidden=64, epochs=args.epochs)
    x_test, y_test = x[split:], y[split:]
    if args.samples:
        x_test, y_test = x_test[: args.samples], y_test[: args.samples]
    x_q = np.rint(x_test * Q).astype(np.int8)
    (w1_q, _), (w2_q, _) = quantize(w1), quantize(w2)
    net = load_network("devnet", args.genesis_file)
    rpc = RpcClient.from_options(args.rpc or f"http://127.0.0.1:{net.rpc_port}", net.name,
                                 args.datadir, None, None)  # fmt: skip
    work = OwnWork(rpc, net, args.address)
    plain = int_inference(x_q, w1_q, w2_q, lambda a, b: a.astype(np.int64) @ b.astype(np.int64))
    for _ in range(args.rounds):
        mined = int_inference(x_q, w1_q, w2_q, work.matmul)
    float_acc = float((np.maximum(x_test @ w1, 0) @ w2).argmax(1).__eq__(y_test).mean())
    print(f"float_accuracy={float_acc:.4f}")
    print(f"int8_numpy_accuracy={(plain == y_test).mean():.4f}")
    print(f"int8_mined_accuracy={(mined == y_test).mean():.4f}")
    print(f"identical_predictions={bool(np.array_equal(plain, mined))}")
    s = work.stats
    print(f"products={s.products} multiply_adds={s.multiply_adds} blocks_found={s.blocks_found} "
          f"blocks_accepted={s.blocks_accepted} node_errors={s.node_errors}")  # fmt: skip
    return 0 if np.array_equal(plain, mined) else 1


if __name__ == "__main__":
    sys.exit(main())
