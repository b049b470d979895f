"""The fastconv-train job written in PyTorch, for timing and accuracy comparisons.

Same network (modern LeNet-5), same data (read and normalised by fastconv.data and
fastconv.train), same batch size, optimiser, learning rate, shuffling and thread count,
and the same one-line-per-epoch report, so the two runs compare line by line::

    python bench/lenet_torch.py --dataset fashion-mnist --epochs 5 --threads 2
    fastconv-train             --dataset fashion-mnist --epochs 5 --threads 2

Training time per epoch counts the same work in both (forward, loss, backward,
update, batch gathering); the test pass is not counted.
"""

import argparse
import math
import time

import numpy as np
import torch
import torch.nn as tnn

from fastconv import data
from fastconv.train import prepare


def lenet5():
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10),
    )


def train_step(model, loss_fn, opt, xb, yb):
    """One training step (forward, loss, backward, update); returns (loss, logits)."""
    logits = model(xb)
    loss = loss_fn(logits, yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item(), logits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--scheduler", choices=["none", "cosine"], default="cosine")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    args = parser.parse_args(argv)
    lr = args.lr if args.lr is not None else (0.03 if args.optimizer == "sgd" else 0.001)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def split(name, limit):
        images, labels = data.load_dataset(args.dataset, name, data_dir=args.data_dir)
        x = torch.from_numpy(prepare(images[:limit], args.dataset))
        return x, torch.from_numpy(labels[:limit].astype(np.int64))

    x_train, y_train = split("train", args.limit)
    x_test, y_test = split("test", args.test_limit)
    model = lenet5()
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=args.momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = tnn.CrossEntropyLoss()
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
                if args.scheduler == "cosine" else None)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(2)[1])
    print(f"torch {torch.__version__}: LeNet-5 (modern) on {args.dataset}, {len(x_train)} train / "
          f"{len(x_test)} test images, {args.optimizer} lr {lr}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_train)))
        loss_sum, correct, seconds = 0.0, 0, 0.0
        for b in range(math.ceil(len(x_train) / args.batch_size)):
            start = time.perf_counter()
            index = order[b * args.batch_size:(b + 1) * args.batch_size]
            xb, yb = x_train[index], y_train[index]
            loss, logits = train_step(model, loss_fn, opt, xb, yb)
            loss_sum += loss * len(index)
            correct += int((logits.argmax(1) == yb).sum())
            seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            test_loss, test_correct = 0.0, 0
            for s in range(0, len(x_test), args.test_batch_size):
                logits = model(x_test[s:s + args.test_batch_size])
                yb = y_test[s:s + args.test_batch_size]
                test_loss += loss_fn(logits, yb).item() * len(yb)
                test_correct += int((logits.argmax(1) == yb).sum())
        n, m = len(x_train), len(x_test)
        print(f"Epoch {epoch}: train loss {loss_sum / n:.4f} acc {100 * correct / n:.2f}% | "
              f"test loss {test_loss / m:.4f} acc {100 * test_correct / m:.2f}% "
              f"({test_correct}/{m}) | {seconds:.1f} s, {n / seconds:.0f} img/s", flush=True)
        if schedule is not None:
            schedule.step()


if __name__ == "__main__":
    main()
