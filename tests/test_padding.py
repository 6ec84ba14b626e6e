"""Token batches drop the padding no example attends to (``glora.training.batches``): training batches, the
search's evaluator and the tasks' evaluation give the same results as on the fully padded data, and evaluation
returns its outputs in the data's order although it runs the examples in order of length."""

from __future__ import annotations

import warnings

import pytest
import torch

import glora
from glora.tasks.classification import class_logits
from glora.training import coded_forward
from glora.training.batches import sorted_batches, take, trim_padding
from test_compile import Counting

transformers = pytest.importorskip("transformers")


def _tokens(n: int, width: int, seed: int, left: bool = False) -> dict[str, torch.Tensor]:
    """``n`` examples of random lengths (1 to ``width``), padded with id 0 on the right (or the left)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    columns = torch.arange(width)
    mask = (columns < lengths[:, None]) if not left else (columns >= width - lengths[:, None])
    ids = torch.randint(5, 60, (n, width), generator=g) * mask
    return {
        "input_ids": ids,
        "attention_mask": mask.long(),
        "token_type_ids": torch.zeros(n, width, dtype=torch.long),
        "labels": torch.randint(0, 3, (n,), generator=g),
    }


@pytest.mark.parametrize("seed", range(12))
def test_trimming_cuts_exactly_the_columns_no_example_attends_to(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, width = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g))
    data = _tokens(n, width, seed)
    data["boxes"] = torch.rand(n, width, 4, generator=g)  # per-token features (a layout model's boxes)
    data["scores"] = torch.rand(n, width, generator=g)  # a float entry of the mask's shape
    data["attention_mask"] = data["attention_mask"].float() if seed % 2 else data["attention_mask"]
    data["targets"] = torch.rand(n, 3, generator=g)  # per example: kept whole
    trimmed = trim_padding(data)
    longest = int(data["attention_mask"].sum(1).max())
    for key in ("input_ids", "attention_mask", "token_type_ids", "boxes", "scores"):
        assert torch.equal(trimmed[key], data[key][:, :longest])
    assert trimmed["labels"] is data["labels"] and trimmed["targets"] is data["targets"]
    # left padding and data without a mask are left as they are
    left = _tokens(n, width, seed, left=True)
    assert all(torch.equal(trim_padding(left)[k], left[k]) for k in left)
    plain = (torch.randn(n, width), torch.randint(0, 2, (n,)))
    assert trim_padding(plain) is plain


def test_a_mask_that_attends_nowhere_keeps_one_column() -> None:
    data = {"input_ids": torch.zeros(3, 5, dtype=torch.long), "attention_mask": torch.zeros(3, 5, dtype=torch.long)}
    assert trim_padding(data)["input_ids"].shape == (3, 1)


@pytest.mark.parametrize("size", [1, 4, 7, 40])
def test_sorted_batches_hold_every_example_once_and_restore_the_order(size: int) -> None:
    data = _tokens(23, 9, size)
    batches, restore = sorted_batches(data, size)
    assert restore is not None and all(len(b["labels"]) <= size for b in batches)
    lengths = torch.cat([b["attention_mask"].sum(1) for b in batches])
    assert torch.equal(lengths, lengths.sort().values)  # in order of length
    if size < 23:  # several batches: fewer tokens than padded
        assert sum(b["input_ids"].numel() for b in batches) < data["input_ids"].numel()
    for b in batches:  # each batch trimmed to its own longest example
        assert b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max())
    assert torch.equal(torch.cat([b["labels"] for b in batches])[restore], data["labels"])
    plain = (torch.randn(23, 3), torch.randint(0, 2, (23,)))
    batches, restore = sorted_batches(plain, size)
    assert restore is None and torch.equal(torch.cat([b[0] for b in batches]), plain[0])
    batches, restore = sorted_batches(data, size, trim=False)  # kept as it is
    assert restore is None and torch.equal(torch.cat([b["input_ids"] for b in batches]), data["input_ids"])


@pytest.mark.parametrize("compile", [False, True])
def test_training_batches_are_trimmed_unless_compiled(compile: bool) -> None:
    """Eager training trims each batch; compiled training keeps the data's width (one shape, one graph)."""
    data = _tokens(40, 16, 0)
    config = glora.TrainConfig(steps=5, batch_size=8, seed=3, progress=False, compile=compile)
    batches = glora.SupernetTrainer(_classifier(0), data, config).batches
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3 * 1_000_003))
    for k in range(5):
        full = take(data, order[k * 8 : (k + 1) * 8])
        batch = batches[k]
        width = 16 if compile else int(full["attention_mask"].sum(1).max())
        assert batch["input_ids"].shape[1] == width
        assert torch.equal(batch["input_ids"], full["input_ids"][:, :width])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tokens", [1, 9, 20, 45, 1000])
def test_batches_by_tokens_stay_within_the_budget_and_restore_the_order(seed: int, tokens: int) -> None:
    data = _tokens(31, 11, seed)
    batches, restore = sorted_batches(data, 4, tokens=tokens)  # tokens, not the 4 examples, cut token data
    assert restore is not None
    cost = [b["input_ids"].numel() for b in batches]
    assert all(c <= tokens or len(b["labels"]) == 1 for c, b in zip(cost, batches))
    widths = [b["input_ids"].shape[1] for b in batches]
    for k in range(len(batches) - 1):  # each batch is as large as the budget allows: one more example would pass it
        assert (len(batches[k]["labels"]) + 1) * batches[k + 1]["attention_mask"].sum(1).min() > tokens
    assert widths == sorted(widths)
    assert torch.equal(torch.cat([b["labels"] for b in batches])[restore], data["labels"])
    if tokens == 1000:
        assert len(batches) == 1
    plain = (torch.randn(10, 3), torch.randint(0, 2, (10,)))  # not token data: cut by examples
    assert [len(b[1]) for b in sorted_batches(plain, 4, tokens=tokens)[0]] == [4, 4, 2]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_evaluator_by_tokens_scores_as_by_examples(seed: int) -> None:
    model = _classifier(seed)
    data = _tokens(29, 14, seed)
    subnets = [glora.sample_subnet(model, s) for s in range(4)]
    expected = _merged_scores(model, subnets, data, _by_position)
    whole = glora.SubnetEvaluator(model, data, metric="neg_loss")(subnets)
    for tokens in (14, 60, 10_000):
        evaluator = glora.SubnetEvaluator(model, data, metric=_by_position, batch_tokens=tokens)
        assert evaluator(subnets) == pytest.approx(expected, abs=1e-5)
        assert all(b["input_ids"].numel() <= tokens for b in evaluator.batches)
        raced = glora.SubnetEvaluator(model, data, metric="neg_loss", batch_tokens=tokens)
        rows = raced.per_example(subnets, list(range(29))[::-1])  # a raced search's form, cut the same way
        assert [sum(r) / 29 for r in rows] == pytest.approx(whole, abs=1e-5)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="batch_tokens must be a positive integer or None"):
            glora.SubnetEvaluator(model, data, batch_tokens=bad)


def _classifier(seed: int) -> torch.nn.Module:
    from glora.tasks.text_classification import MeanPoolClassifier

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48
    )
    model = MeanPoolClassifier(transformers.BertModel(config), 3).eval()
    glora.wrap(model, glora.GLoRAConfig(rank=2, target_modules=["query", "value", "dense"], modules_to_save=["head"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _by_position(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A metric that changes when the examples' order does: each example's log-likelihood weighted by its position."""
    weights = torch.arange(1, len(labels) + 1, dtype=logits.dtype)
    return (logits.log_softmax(-1).gather(1, labels[:, None])[:, 0] * weights).mean()


def _merged_scores(model, subnets, data, metric) -> list[float]:
    """Each subnet's metric of its merged model on the whole padded data, in the data's order."""
    inputs = {k: v for k, v in data.items() if k != "labels"}
    scores = []
    for subnet in subnets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", glora.BiasAddedWarning)
            merged = glora.merge(model, subnet).eval()
        with torch.no_grad():
            scores.append(float(metric(merged(**inputs), data["labels"])))
    return scores


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_evaluator_scores_token_data_as_on_the_padded_data(monkeypatch, compiled: bool, seed: int) -> None:
    """Scores of random subnets equal the merged model's on the whole padded data in its own order, with a metric
    that depends on the order, for batch sizes that cut the data anywhere."""
    monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", "aot_eager")
    model = _classifier(seed)
    data = _tokens(29, 14, seed)
    subnets = [glora.sample_subnet(model, s) for s in range(4)]
    expected = _merged_scores(model, subnets, data, _by_position)
    for size in (5, 29):
        graphs = Counting()
        monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", graphs)
        evaluator = glora.SubnetEvaluator(model, data, metric=_by_position, batch_size=size, compile=compiled)
        assert evaluator(subnets) == pytest.approx(expected, abs=1e-5)
        widths = {b["input_ids"].shape[1] for b in evaluator.batches}
        if compiled:  # one width: a graph for the batches and one for a smaller last batch
            assert widths == {14} and graphs.graphs <= 2
        elif size == 5:  # trimmed to each batch's widest example
            assert len(widths) > 1 and max(widths) == int(data["attention_mask"].sum(1).max())


def test_outputs_per_token_are_evaluated_untrimmed() -> None:
    """Labels per token (token classification): the outputs keep the data's width, so batches of different
    lengths can be joined and the metric sees logits and labels of one shape."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, num_labels=3
    )
    model = transformers.BertForTokenClassification(config).eval()
    glora.wrap(model, glora.GLoRAConfig(rank=2, target_modules=["query", "value"], modules_to_save=["classifier"]))
    data = _tokens(21, 10, 5)
    data["labels"] = torch.randint(0, 3, (21, 10))

    def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(-1) == labels).float().mean()

    evaluator = glora.SubnetEvaluator(model, data, metric=token_accuracy, batch_size=4)
    subnets = [glora.sample_subnet(model, s) for s in range(3)]
    expected = _merged_scores(model, subnets, data, lambda out, labels: token_accuracy(out.logits, labels))
    assert evaluator(subnets) == pytest.approx(expected, abs=1e-6)


def test_class_logits_come_back_in_the_datas_order() -> None:
    model = _classifier(4)
    glora.set_subnet(model, glora.sample_subnet(model, 0))
    data = _tokens(150, 11, 4)  # three batches of 64 on a CPU
    with torch.no_grad():
        expected = model(**{k: v for k, v in data.items() if k != "labels"})
    torch.testing.assert_close(class_logits(model, data, torch.device("cpu")), expected, rtol=1e-5, atol=1e-5)
