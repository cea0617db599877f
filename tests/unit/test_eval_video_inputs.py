"""The workflow inputs of make eval's video rows: the control row gives pair i the next pair's driving clip
(and nothing else of it), the still-driver row the pair's own identity image as every driving frame."""


import torch

from lab import eval_video as ev


def _items(n: int, frames: int = 5) -> list[dict]:
    return [{"identity": torch.full((4, 4, 3), i / 10), "driving": torch.full((frames, 4, 4, 3), i / 10 + 0.05),
             "target": torch.full((frames, 4, 4, 3), i / 10 + 0.01)} for i in range(n)]


def test_each_pair_gets_the_next_pairs_driver_and_keeps_its_identity():
    items = _items(3)
    for i in range(3):
        runs = ev.workflow_inputs(items, i)
        assert tuple(runs) == ev.WORKFLOW_RUNS
        assert runs["result"] is items[i]
        assert torch.equal(runs["driver_swap"]["identity"], items[i]["identity"])
        assert torch.equal(runs["driver_swap"]["driving"], items[(i + 1) % 3]["driving"])
        assert not torch.equal(runs["driver_swap"]["driving"], items[i]["driving"])


def test_the_still_driver_is_the_identity_image_in_every_frame():
    items = _items(2, frames=7)
    still = ev.workflow_inputs(items, 1)["still_driver"]
    assert torch.equal(still["identity"], items[1]["identity"])
    assert still["driving"].shape == (7, 4, 4, 3)
    assert all(torch.equal(frame, items[1]["identity"]) for frame in still["driving"])


class _LosslessVAE:
    """Stands in for the demo VAE: its round trip returns the clip unchanged."""

    def encode(self, video):
        return video

    def decode(self, latent):
        return latent


def test_each_row_is_scored_against_its_own_reference():
    """Outputs equal to their references score perfectly; the still rows are scored against the identity held
    still, the control against the pair's own ground truth, and no row is left out of the tables."""
    torch.manual_seed(0)
    frames, size = 5, 16
    identity = torch.rand(size, size, 3)
    target = torch.rand(frames, size, size, 3)
    item = {"identity": identity, "driving": torch.rand(frames, size, size, 3), "target": target}
    still = identity[None].expand(frames, -1, -1, -1)
    rows, notes = ev.pair_scores(item, {"result": target, "driver_swap": target, "still_driver": still},
                                 _LosslessVAE())
    assert notes == []
    assert set(rows) == {*ev.VS_GROUND_TRUTH, *ev.VS_IDENTITY_STILL}
    assert set(rows) >= set(ev.ej.VIDEO_ROWS)
    for row in ("result", "driver_swap", "vae_ceiling", "still_driver", "still_clip_vae"):
        assert rows[row]["psnr"] >= 99 and rows[row]["ssim"] > 0.999, (row, rows[row])
    assert rows["result"]["motion_corr"] > 0.999 and rows["driver_swap"]["motion_corr"] > 0.999
    assert rows["still_driver"]["motion_corr"] == 0.0  # a still reference has no motion to correlate with
    assert rows["identity_still"]["psnr"] < 20  # the identity image is no ground truth of a random clip


def test_the_budget_drives_each_pair_by_its_own_ground_truth_and_multiplies_the_steps():
    item = _items(1)[0]
    runs = ev.budget_inputs(item)
    assert tuple(runs) == ev.BUDGET_RUNS
    assert torch.equal(runs["self_reenact"]["driving"], item["target"])
    assert torch.equal(runs["self_reenact"]["identity"], item["identity"])
    assert runs["sampler_2x"] is item and runs["sampler_4x"] is item
    prompt = {"1": {"class_type": "KSampler", "inputs": {"steps": 8, "cfg": 1}},
              "2": {"class_type": "SaveVideo", "inputs": {}}}
    assert ev.with_steps(prompt, 4)["1"]["inputs"]["steps"] == 32
    assert prompt["1"]["inputs"]["steps"] == 8  # the prompt itself is left alone


def test_the_budget_rows_are_scored_against_the_ground_truth():
    torch.manual_seed(0)
    frames, size = 5, 16
    identity, target = torch.rand(size, size, 3), torch.rand(frames, size, size, 3)
    item = {"identity": identity, "driving": torch.rand(frames, size, size, 3), "target": target}
    still = identity[None].expand(frames, -1, -1, -1)
    outputs = {"result": target, "driver_swap": target, "still_driver": still, "self_reenact": target,
               "sampler_2x": still, "sampler_4x": target}
    rows, _ = ev.pair_scores(item, outputs, _LosslessVAE())
    assert rows["self_reenact"]["psnr"] >= 99 and rows["sampler_4x"]["motion_corr"] > 0.999
    assert rows["sampler_2x"]["motion_corr"] == 0.0  # a still clip has no motion


def test_every_run_of_a_pair_is_in_the_run_order_and_the_same_inputs_run_back_to_back():
    from lab import eval_video as ev

    assert sorted(ev.RUN_ORDER) == sorted((*ev.WORKFLOW_RUNS, *ev.BUDGET_RUNS))
    same = [k for k in ev.RUN_ORDER if k in ("result", *ev.STEP_FACTORS)]
    first = ev.RUN_ORDER.index(same[0])
    assert list(ev.RUN_ORDER[first:first + len(same)]) == same
