"""The inference tools (predict, export, visualize) and the engine feed the model bitwise the same input for
the same video: dataset items are uint8, and both normalize them with ``rsanet.data.normalize_clip`` (the
engine after the copy to the device, ``rsanet.inference`` on its clips)."""
import numpy as np
import torch
from torch.utils.data import default_collate

from rsanet.config import load_config
from rsanet.engine.loaders import to_device
from rsanet.inference import clip_to_frames, load_clip, single_video_dataset, video_views
from rsanet.testing.media import textured_frames, write_frame_folder


def test_tools_and_engine_see_the_same_model_input(tmp_path):
    folder = write_frame_folder(tmp_path / "video", textured_frames(12, 36, 48, seed=1))
    cfg = load_config(None, ["model.num_segments=4", "data.resize=[36,48]", "data.crop_size=32", "test.clips=2",
                             "test.crops=3"])
    views = video_views(cfg, folder, classes=[])  # what tools/predict.py scores
    assert views.shape == (6, 3, 4, 32, 32) and views.dtype == torch.float32
    ds = single_video_dataset(cfg, folder, classes=[])
    batch = default_collate([ds[i] for i in range(len(ds))])  # what the engine's evaluation loader yields
    assert batch["clip"].dtype == torch.uint8
    clip, _ = to_device(batch, torch.device("cpu"), cfg.data.mean, cfg.data.std)
    assert torch.equal(clip, views)

    one, frames = load_clip(cfg, folder)  # what tools/visualize_kernels.py and tools/export.py use
    assert torch.equal(one, views[1])  # first clip, centre crop
    assert frames.dtype == torch.uint8 and frames.shape == (4, 32, 32, 3)
    assert torch.equal(frames, batch["clip"][1].permute(1, 2, 3, 0))  # the pixels the model saw, exactly
    assert torch.equal(clip_to_frames(one, cfg.data.mean, cfg.data.std), frames)  # and the inverse maps back
    pixels = frames.permute(3, 0, 1, 2).double() / 255  # (T, S, S, 3) -> (3, T, S, S)
    ref = (pixels - torch.tensor(cfg.data.mean).view(3, 1, 1, 1)) / torch.tensor(cfg.data.std).view(3, 1, 1, 1)
    np.testing.assert_allclose(one.double().numpy(), ref.numpy(), rtol=0, atol=1e-5)  # literal (x/255-m)/s
