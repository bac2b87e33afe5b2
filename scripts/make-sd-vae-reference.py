#!/usr/bin/env python3
"""Reference tensors at the Stable Diffusion VAE's full architecture (blocks 128/256/512/512, 2 layers,
32 groups), for `ppsample vae --against`: a random-weight diffusers AutoencoderKL (GroupNorm scales near
1, small random biases so every term matters) saved as a diffusers folder, the same weights under ldm
names (renamed by docs/VAE.md's table, checked by converting them back with diffusers' own
convert_ldm_vae_checkpoint), and inputs/outputs as ref_vae.safetensors names them.

    python3 scripts/make-sd-vae-reference.py --out /tmp/sd-vae-ref [--size 64]
    ppsample vae /tmp/sd-vae-ref/vae --inputs /tmp/sd-vae-ref/ref.safetensors --out /tmp/o.safetensors --against /tmp/sd-vae-ref/ref.safetensors
    ppsample vae /tmp/sd-vae-ref/vae-ldm.safetensors --inputs /tmp/sd-vae-ref/ref.safetensors --out /tmp/o.safetensors --against /tmp/sd-vae-ref/ref.safetensors

Needs torch and diffusers (a virtual environment outside the repository; never in CI). Writes about 670 MB.
"""
import argparse, os, re
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--size", type=int, default=64)
a = p.parse_args()
torch.manual_seed(1)
vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, latent_channels=4,
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).eval()
with torch.no_grad():
    for name, param in vae.named_parameters():
        if "norm" in name and name.endswith("weight"): param.copy_(1 + 0.1 * torch.randn_like(param))
        elif name.endswith("bias"): param.copy_(0.05 * torch.randn_like(param))
os.makedirs(a.out, exist_ok=True)
vae.save_pretrained(os.path.join(a.out, "vae"))

# The ldm names of docs/VAE.md's table, in the inverse direction.
blocks = 4
def ldm(name):
    rules = [
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"encoder.down.{m[1]}.block.{m[2]}."),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", lambda m: f"encoder.down.{m[1]}.downsample.conv."),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}."),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.", lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv."),
        (r"(\w+)\.mid_block\.resnets\.(\d)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
        (r"(\w+)\.mid_block\.attentions\.0\.group_norm\.", lambda m: f"{m[1]}.mid.attn_1.norm."),
        (r"(\w+)\.mid_block\.attentions\.0\.to_(q|k|v)\.", lambda m: f"{m[1]}.mid.attn_1.{m[2]}."),
        (r"(\w+)\.mid_block\.attentions\.0\.to_out\.0\.", lambda m: f"{m[1]}.mid.attn_1.proj_out."),
        (r"(\w+)\.conv_norm_out\.", lambda m: f"{m[1]}.norm_out."),
    ]
    for pattern, make in rules:
        m = re.match(pattern, name)
        if m:
            name = make(m) + name[m.end():]
            break
    return name.replace("conv_shortcut", "nin_shortcut")

state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
ldm_state = {ldm(k): (v[:, :, None, None] if ".attentions.0.to_" in k and k.endswith(".weight") else v) for k, v in state.items()}
back = convert_ldm_vae_checkpoint(dict(ldm_state), {"down_block_types": ["DownEncoderBlock2D"] * 4,
                                                    "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2})
assert set(back) == set(state), sorted(set(back) ^ set(state))[:10]
assert all(torch.equal(back[k].reshape(state[k].shape), state[k]) for k in state)
save_file({k: v.contiguous() for k, v in ldm_state.items()}, os.path.join(a.out, "vae-ldm.safetensors"))

s, f = a.size, a.size // 8
x = torch.rand(2, 3, s, s) * 2 - 1
z = torch.randn(2, 4, f, f)
noise = torch.randn(2, 4, f, f)
with torch.no_grad():
    moments = vae.quant_conv(vae.encoder(x))
    d = vae.encode(x).latent_dist
    dec = vae.decode(z).sample
    images = vae.decode(z / vae.config.scaling_factor).sample
out = {"x": x, "z": z, "latents": z.clone(), "enc_noise": noise, "enc_moments": moments, "enc_mean": d.mean,
       "enc_logvar": d.logvar, "enc_sample": d.mean + d.std * noise, "dec": dec, "images": images}
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(a.out, "ref.safetensors"))
print(f"wrote {a.out}/vae, {a.out}/vae-ldm.safetensors (diffusers' converter agrees), {a.out}/ref.safetensors")
