"""`from_hf_videomae` reproduces Hugging Face's VideoMAE logits on a saved random model (safetensors and
pytorch_model.bin), and wrong or missing keys get a clear error."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import VideoMAEConfig, VideoMAEForVideoClassification

from mgvideo.errors import CheckpointError
from mgvideo.models import build_model, from_hf_videomae, read_hf_videomae

TINY = {"image_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "num_labels": 5}


def hf_model(**overrides) -> VideoMAEForVideoClassification:
    """A tiny random VideoMAE classifier; every tensor (biases and norms too) is random, so a misplaced
    one changes the logits."""
    torch.manual_seed(0)
    model = VideoMAEForVideoClassification(VideoMAEConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(HF model, its save_pretrained folder)."""
    model = hf_model()
    folder = tmp_path_factory.mktemp("videomae")
    model.save_pretrained(folder)
    return model, folder


def clips() -> torch.Tensor:
    return torch.randn(2, 3, TINY["num_frames"], TINY["image_size"], TINY["image_size"],
                       generator=torch.Generator().manual_seed(1))


def hf_logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x.permute(0, 2, 1, 3, 4)).logits  # HF takes (B, T, C, H, W)


def test_safetensors_logits_match(saved):
    model, folder = saved
    assert (folder / "model.safetensors").exists()
    ours = from_hf_videomae(folder)
    x = clips()
    with torch.no_grad():
        got = ours(x)
    torch.testing.assert_close(got, hf_logits(model, x), rtol=1e-4, atol=1e-5)


def test_pytorch_bin_logits_match(saved, tmp_path):
    """The older format: a pickled state dict, read with weights_only=True."""
    model, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    ours = from_hf_videomae(tmp_path)
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf_logits(model, x), rtol=1e-4, atol=1e-5)


def test_no_qv_bias_and_token_pooling(tmp_path):
    model = hf_model(qv_bias=False, use_mean_pooling=False)
    model.save_pretrained(tmp_path)
    ours = from_hf_videomae(tmp_path)
    assert ours.blocks[0].attn.q_bias is None
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf_logits(model, x), rtol=1e-4, atol=1e-5)


def test_read_gives_our_names(saved):
    """The state dict `model.init_from` receives loads into a zoo ViT of the same sizes."""
    _, folder = saved
    config, state = read_hf_videomae(folder)
    assert config["hidden_size"] == 32
    model = build_model("vit_tiny", 5, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, frames=4, crop=32)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)


def test_missing_key_is_named(saved, tmp_path):
    _, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["videomae.encoder.layer.1.layernorm_after.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys.*blocks\.1\.norm2\.weight"):
        from_hf_videomae(tmp_path)


def test_unknown_key_is_named(saved, tmp_path):
    _, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["videomae.extra.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected VideoMAE keys: videomae\.extra\.weight"):
        read_hf_videomae(tmp_path)


def test_bad_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        read_hf_videomae(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="config.json"):
        read_hf_videomae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "videomae"}))
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        read_hf_videomae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(CheckpointError, match="expected 'videomae'"):
        read_hf_videomae(tmp_path)


def test_both_names_of_the_q_and_v_biases(saved, tmp_path):
    """save_pretrained writes attention.attention.{q,v}_bias; transformers 5's modules (hence their
    state_dict, as in the .bin test) call them {query,value}.bias. Both load."""
    model, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    renamed = {k.replace("q_bias", "query.bias").replace("v_bias", "value.bias"): v
               for k, v in tensors.items()}
    assert renamed.keys() != tensors.keys()
    save_file(renamed, str(tmp_path / "model.safetensors"))
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(from_hf_videomae(tmp_path)(x), hf_logits(model, x), rtol=1e-4, atol=1e-5)


def test_init_from_a_hugging_face_folder_loads_the_encoder_and_a_new_head(saved):
    """`model.init_from` on a save_pretrained folder: every encoder tensor loads as is, and a model with
    another class count gets a fresh head (and only that)."""
    from mgvideo.engine.init_from import load_pretrained

    _, folder = saved
    _, state = read_hf_videomae(folder)
    torch.manual_seed(3)
    model = build_model("vit_tiny", 7, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, frames=4, crop=32)
    report = load_pretrained(model, folder, 7)
    ours = model.state_dict()
    mismatched = sorted(k for k in state if ours[k].shape != state[k].shape)
    assert report.kind == "Hugging Face" and sorted(report.reinitialised) == mismatched
    assert mismatched and all(k.startswith("head.") for k in mismatched)
    assert all(torch.equal(ours[k], state[k]) for k in state if k not in mismatched)
