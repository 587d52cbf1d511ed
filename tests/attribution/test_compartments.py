import numpy as np
import pytest
import torch
from PIL import Image

from silodiff.attribution import attribute_compartments, attribute_generation, compartment_posterior, read_image
from silodiff.attribution.compartments import label_tensor
from silodiff.attribution.likelihood import timestep_grid
from silodiff.composition import compose
from silodiff.errors import SilodiffError
from silodiff.sampling import generate


def test_leave_one_out_with_identical_noise_is_deterministic(comp_store):
    a = attribute_generation(comp_store, labels=[3, None], seed=5, steps=8)
    b = attribute_generation(comp_store, labels=[3, None], seed=5, steps=8)
    for x, y in zip(a["images"], b["images"]):
        assert x["loo_distance"] == y["loo_distance"] and x["loo_loss_change"] == y["loo_loss_change"]
        assert x["weights_mean"] == y["weights_mean"]
    first = a["images"][0]
    assert first["label"] == 3 and a["images"][1]["label"] is None
    assert abs(sum(first["weights_mean"].values()) - 1) < 1e-4 and abs(sum(first["weights_last"].values()) - 1) < 1e-4
    assert first["top_by_loo"] == max(first["loo_distance"], key=first["loo_distance"].get)


def test_factual_and_counterfactuals_are_the_sampler_runs_with_the_same_seed(comp_store):
    result = attribute_compartments(comp_store, labels=[1, 2], seed=4, steps=8, router="trajectory")
    names = result.names
    ref, _ = generate(compose(comp_store, router="trajectory"), 2, labels=[1, 2], steps=8, seed=4)
    assert torch.allclose(result.images, ref, atol=1e-5)
    without, _ = generate(compose(comp_store, names[1:], router="trajectory"), 2, labels=[1, 2], steps=8, seed=4)
    assert torch.allclose(result.loo_images[0], without, atol=1e-5)
    assert np.allclose(result.loo_distance[:, 0], ((ref - without) / 2).flatten(1).norm(dim=1).numpy(), atol=1e-5)


def test_a_label_only_one_compartment_holds_falls_back_to_unconditional(class_store):
    result = attribute_compartments(class_store, labels=[0, 2, None], seed=0, steps=6, router="trajectory")
    assert result.names == ["class-0", "class-1", "class-2"]
    # without class-0 nobody holds label 0: that counterfactual is drawn unconditionally and flagged
    assert result.label_unsupported.tolist() == [[True, False, False], [False, False, True], [False, False, False]]
    # conditional weights are the prior λ_i(y): all on the only holder
    assert np.allclose(result.weights_mean[0], [1, 0, 0]) and np.allclose(result.weights_mean[1], [0, 0, 1])
    assert result.to_dict()["images"][0]["label_unsupported_without"] == ["class-0"]


def test_single_compartment_has_weights_but_no_leave_one_out(comp_store):
    name = comp_store.catalog.compartments()[0]["name"]
    label = next(iter(comp_store.catalog.label_counts(name)))
    result = attribute_compartments(comp_store, labels=[label], seed=0, steps=5, allowed=[name], router="trajectory")
    assert result.loo_distance is None and np.allclose(result.weights_mean, 1.0)


def test_labels_are_checked():
    assert label_tensor([1, None, -1], 10).tolist() == [1, 10, 10]
    with pytest.raises(SilodiffError):
        label_tensor([11], 10)
    with pytest.raises(SilodiffError):
        label_tensor([], 10)


def test_timestep_grid_weights_follow_the_bound():
    t, w = timestep_grid(10)
    assert len(t) == 10 and (t[1:] > t[:-1]).all() and (w > 0).all()
    assert w[0] > w[-1]  # the bound weighs small t most


def test_posterior_for_an_image_file(comp_store, tmp_path):
    data = comp_store.dataset()
    path = tmp_path / "x.png"
    Image.fromarray(data.pixels[0, 0].numpy()).save(path)
    x = read_image(path, data.image_shape)
    assert torch.equal(x, data.x()[0])
    post = compartment_posterior(comp_store, x, draws=1, grid=5)
    assert abs(sum(post["posterior"].values()) - 1) < 1e-5 and post["top"] in post["compartments"]
    # a compartment with no example of the label gets zero posterior
    names = post["compartments"]
    for y in range(10):
        missing = [n for n in names if comp_store.catalog.label_counts(n).get(y, 0) == 0]
        if missing and len(missing) < len(names):
            cond = compartment_posterior(comp_store, x, label=y, draws=1, grid=5)
            assert all(cond["posterior"][n] == 0 for n in missing)
            break
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(SilodiffError, match="9×9"):
        read_image(tmp_path / "bad.png", data.image_shape)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(SilodiffError, match="unreadable"):
        read_image(tmp_path / "junk.png", data.image_shape)


def test_demo_step_writes_its_pictures_and_a_section(comp_store, tmp_path):
    from silodiff.demo import QUICK
    from silodiff.demo.attribution import demo_step

    section = demo_step(comp_store, tmp_path, QUICK)
    assert section.startswith("## Attribution")
    for name in ("attribution-images.png", "attribution-weights.png", "attribution-loo.png"):
        assert (tmp_path / name).stat().st_size > 0
    lines = section.splitlines()
    for c in comp_store.catalog.compartments():  # one posterior row per compartment
        assert any(line.startswith(f"| {c['name']} |") for line in lines)
    assert sum(line.startswith(("| 0 |", "| 3 |")) for line in lines) == 2  # image rows 0..3
