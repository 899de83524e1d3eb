"""The micro world: a randomly initialised, very small Stable-Diffusion-layout pipeline.

Built in code in seconds for tests and smoke runs. The UNet and CLIP are random; only the VAE
is briefly trained (on random block patterns) so that images survive the latent round trip and
pixel-space watermarks can be decoded. Numbers from this world test the plumbing, not the
methods.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextModel

from bench.data.tokenizer import build_clip_tokenizer
from bench.diffusion import generator
from bench.world.spec import ModelSpec


def sd_scheduler() -> DDIMScheduler:
    """Stable Diffusion's noise schedule with a DDIM sampler."""
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def clip_with_text_encoder(text_dim: int, image_size: int, patch_size: int, layers: int, seed: int):
    """A small random CLIPModel and a CLIPTextModel carrying the same text tower (as SD's is CLIP's)."""
    torch.manual_seed(seed)
    heads = max(1, text_dim // 16)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=text_dim, intermediate_size=4 * text_dim,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                         projection_dim=text_dim, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(image_size=image_size, patch_size=patch_size, hidden_size=text_dim,
                           intermediate_size=4 * text_dim, num_hidden_layers=layers, num_attention_heads=heads,
                           projection_dim=text_dim),
        projection_dim=text_dim)
    clip = CLIPModel(cfg)
    text_encoder = CLIPTextModel(cfg.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    return clip, text_encoder


def clip_processor(tokenizer, image_size: int) -> CLIPProcessor:
    """A CLIPProcessor that resizes images to the small CLIP's input size."""
    images = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def block_patterns(n: int, resolution: int, gen: torch.Generator) -> torch.Tensor:
    """Random images made of square cells (grids of 2..16 cells a side), in [-1, 1]: VAE training data."""
    out = []
    for i in range(n):
        cells = int(2 ** torch.randint(1, 5, (1,), generator=gen).item())
        grid = torch.rand((3, cells, cells), generator=gen) * 2 - 1
        if i % 2 == 0:  # half of them black/white like watermark targets
            grid = (grid[:1] > 0).float().repeat(3, 1, 1) * 2 - 1
        out.append(F.interpolate(grid[None], size=resolution, mode="nearest")[0])
    return torch.stack(out)


class MicroModel(ModelSpec):
    """Builds the micro world into a folder: `pipeline/` and `clip/`."""

    version = "1"
    built = True

    def __init__(self, resolution: int = 32, seed: int = 0, unet_channels=(32, 64), vae_channels=(16, 32, 32),
                 text_dim: int = 32, vae_steps: int = 100, vae_lr: float = 2e-3, sampling: dict | None = None,
                 precision: str = "fp32", name: str = "micro", scale: str = "micro", eval: dict | None = None,
                 unet_weights: str | None = None, **training):
        super().__init__(name, scale, resolution, precision, sampling, eval, unet_weights, **training)
        self.seed = seed
        self.unet_channels, self.vae_channels = tuple(unet_channels), tuple(vae_channels)
        self.text_dim, self.vae_steps, self.vae_lr = text_dim, vae_steps, vae_lr

    def build(self, out: Path) -> None:
        """Create and save the pipeline and the CLIP model."""
        tokenizer = build_clip_tokenizer(out / "tokenizer-build")
        clip, text_encoder = clip_with_text_encoder(self.text_dim, self.resolution, 8, 2, self.seed)
        vae = self._trained_vae()
        torch.manual_seed(self.seed + 1)
        unet = UNet2DConditionModel(
            sample_size=self.resolution // 2 ** (len(self.vae_channels) - 1), in_channels=4, out_channels=4,
            layers_per_block=1, block_out_channels=self.unet_channels, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D",) * len(self.unet_channels),
            up_block_types=("CrossAttnUpBlock2D",) * len(self.unet_channels),
            cross_attention_dim=self.text_dim, attention_head_dim=8)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(out / "pipeline", safe_serialization=True)
        clip.save_pretrained(out / "clip", safe_serialization=True)
        clip_processor(tokenizer, self.resolution).save_pretrained(out / "clip")
        shutil.rmtree(out / "tokenizer-build")

    def _trained_vae(self) -> AutoencoderKL:
        """A small AutoencoderKL trained briefly to reconstruct block patterns; latents rescaled to unit std."""
        torch.manual_seed(self.seed + 2)
        n = len(self.vae_channels)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=self.vae_channels,
                            latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=self.resolution)
        gen = generator(self.seed, "micro-vae")
        opt = torch.optim.Adam(vae.parameters(), lr=self.vae_lr)
        for _ in range(self.vae_steps):
            x = block_patterns(16, self.resolution, gen)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.mean).sample
            loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            std = vae.encode(block_patterns(64, self.resolution, gen)).latent_dist.mean.std().item()
        vae.register_to_config(scaling_factor=1.0 / std)
        return vae.eval()
