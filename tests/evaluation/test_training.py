import pytest
import torch

from condensation.containers import Batch
from condensation.engine.train import TrainSettings, learning_rate_at, train_network
from condensation.errors import ConfigError
from condensation.evaluation import PROTOCOLS, get_protocol
from condensation.networks import create_network


def test_schedules():
    s = TrainSettings(learning_rate=0.01, schedule="step_half")
    assert learning_rate_at(s, 49, 100) == 0.01 and learning_rate_at(s, 50, 100) == pytest.approx(0.001)
    s = TrainSettings(learning_rate=1.0, schedule="idc")
    assert [learning_rate_at(s, k, 60) for k in (0, 39, 40, 49, 50)] == pytest.approx([1, 1, 0.2, 0.2, 0.04])
    s = TrainSettings(learning_rate=1.0, schedule="cosine")
    assert learning_rate_at(s, 0, 10) == 1.0 and learning_rate_at(s, 5, 10) == pytest.approx(0.5)


def _batch_sizes_seen(spec, settings: TrainSettings, images: int) -> tuple[list[int], int]:
    """(the batch size of every SGD step, how many epochs were asked for) of one train_network call."""
    network = create_network("convnet", spec, width=8)
    batch, calls, sizes = Batch(torch.randn(images, 1, 8, 8), torch.arange(images) % 3), [], []
    network.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))

    def source(generator):
        calls.append(1)
        return batch

    train_network(network, source, settings, torch.Generator().manual_seed(0))
    return sizes, len(calls)


def test_fixed_step_training_takes_exactly_that_many_full_batches(gray_spec):
    sizes, epochs = _batch_sizes_seen(gray_spec, TrainSettings(steps=7, batch_size=4), images=10)
    assert sizes == [4] * 7  # the tail of 2 is dropped: 2 full batches per epoch
    assert epochs == 4  # the last cut short after one step
    sizes, _ = _batch_sizes_seen(gray_spec, TrainSettings(steps=3, batch_size=16), images=10)
    assert sizes == [10] * 3  # fewer images than a batch: all of them every step


def test_epoch_training_keeps_the_tail_batch(gray_spec):
    sizes, epochs = _batch_sizes_seen(gray_spec, TrainSettings(epochs=2, batch_size=4), images=10)
    assert sizes == [4, 4, 2] * 2 and epochs == 2


def test_protocol_presets_carry_their_settings():
    cpu = PROTOCOLS["cpu"]
    assert cpu.steps > 0 and cpu.networks >= 3 and cpu.test_limit == 0 and cpu.augmentation == "dsa"
    assert (cpu.learning_rate, cpu.momentum, cpu.weight_decay, cpu.schedule) == (0.01, 0.9, 5e-4, "step_half")
    assert PROTOCOLS["dsa"].epochs == 1000 and PROTOCOLS["dc"].augmentation == "none"
    assert PROTOCOLS["idc"].cutmix_probability == 0.5 and PROTOCOLS["idc"].schedule == "idc"
    assert PROTOCOLS["rtp"].batch_size == 640 and PROTOCOLS["mtt"].use_learned_learning_rate
    assert get_protocol("cpu", networks=5).networks == 5
    with pytest.raises(ConfigError, match="networkz"):
        get_protocol("cpu", networkz=5)
    with pytest.raises(ConfigError, match="choose one of"):
        get_protocol("fast")


def test_evaluating_on_several_splits_equals_separate_evaluations(gray_spec):
    from condensation.containers import create_container
    from condensation.data.datasets import Split
    from condensation.evaluation import evaluate_container, evaluate_on_splits
    from tests.conftest import tiny_real

    real, preprocessing = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 2, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    splits = {name: Split(torch.rand(30, 1, 8, 8, generator=generator), torch.arange(30) % 3) for name in ("a", "b")}
    protocol = get_protocol("smoke", networks=2)
    both = evaluate_on_splits(container, splits, protocol, seed=3)
    for name, split in splits.items():  # the same seeded networks, tested on each split
        assert both[name]["convnet"].values == evaluate_container(container, split, protocol, seed=3)["convnet"].values
    with pytest.raises(ValueError, match="at least one split"):
        evaluate_on_splits(container, {}, protocol, seed=3)


def test_test_forwards_run_in_chunks_without_a_graph_at_the_asked_precision(gray_spec):
    from condensation.engine.train import accuracy, predict

    network = create_network("convnet", gray_spec, width=8)
    inputs, labels = torch.randn(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(300) % 3
    with torch.no_grad():
        expected = network.eval()(inputs)
    network.train()
    logits = predict(network, inputs)  # 256 + 44
    assert network.training and logits.dtype == torch.float32 and not logits.requires_grad
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(predict(network, inputs, batch_size=7), expected)
    correct = int((expected.argmax(1) == labels).sum())
    assert accuracy(network, inputs, labels, batch_size=100) == 100.0 * correct / 300 and not network.training
    low = predict(network, inputs, precision="bf16")  # bfloat16 convolutions, float32 logits
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, expected, rtol=0.1, atol=0.1)
    with pytest.raises(ConfigError, match="fp32, bf16"):
        accuracy(network, inputs, labels, precision="fp16")
