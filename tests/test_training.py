"""The trainer writes a loadable diffusers folder with a card; its data selection is as documented."""
import json

import torch

from lowdim_app.cli import main
from lowdim_app.diffusion import load_model
from lowdim_app.diffusion.training import TrainConfig, train, training_images


def test_training_data_selection():
    imgs, info = training_images(TrainConfig(subset=16, seed=0))
    assert imgs.shape == (16, 1, 16, 16) and info["n_unique"] == 16
    imgs, info = training_images(TrainConfig(duplicate=3, copies=5, seed=0))
    assert info["n_total"] == 1438 + 15 and len(info["duplicated_index"]) == 3
    pos = info["duplicated_positions"][0]
    assert sum(torch.equal(imgs[pos], im) for im in imgs) == 6  # the original plus five copies


def test_train_few_steps_writes_loadable_folder(tmp_path):
    cfg = TrainConfig(subset=8, steps=3, batch_size=4, block_out_channels=(8, 16), out=str(tmp_path / "m"))
    result = train(cfg, progress=False)
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "m").rglob("*.bin"))
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["steps"] == 3 and len(card["train_index"]) == 8 and card["wall_time_s"] >= 0
    m = load_model(str(result.out), "cpu")
    assert m.generate(2, seed=0, steps=2).shape == (2, 1, 16, 16)


def test_train_cli_on_a_folder(tmp_path):
    from PIL import Image

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(4):
        img = Image.new("RGB", (24, 24), (60 * i, 10, 200))
        img.paste((255, 255, 255), (0, 0, 12, 24))
        img.save(data / f"{i}.png")
    rc = main(["train", "--data", str(data), "--steps", "2", "--batch-size", "2", "--size", "8", "--channels", "3",
               "--out", str(tmp_path / "out"), "--no-evidence"])
    assert rc == 0
    assert (tmp_path / "out" / "README.md").is_file() and (tmp_path / "out" / "samples.png").is_file()
    assert load_model(str(tmp_path / "out"), "cpu").sample_shape == (3, 8, 8)


def test_shipped_cards_are_strict_json_and_their_readmes_are_generated_from_them(tmp_path):
    """A card is read by other tools (the Hub, browsers): no NaN/Infinity; README.md is write_card's output."""
    from pathlib import Path

    from lowdim_app.methods.model_card import write_card

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    for folder in sorted(Path("assets/models").iterdir()):
        card = json.loads((folder / "card.json").read_text(), parse_constant=refuse)
        out = tmp_path / folder.name
        out.mkdir()
        write_card(out, folder.name, card)
        assert (out / "README.md").read_text() == (folder / "README.md").read_text(), folder.name
