#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into Tests/Fuzz/corpus/<target>/ (small files only).

Seeds come from the fixtures (pickles of the official checkpoints, headers of the official
safetensors with every dimension shrunk to 1, the digits and diffusers configs, a native config) and
from hand-made bad files (the cases the unit tests cover). Run from the repository root:

    python3 Tests/Fuzz/make-seeds.py [NATIVE_CONFIG_JSON]

Pickles are written with the standard library's pickler against stand-in `torch` modules, so no
PyTorch is needed; they use exactly the opcodes torch.save (protocol 2) emits.
"""
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

ROOT = "Tests/Fuzz/corpus"
FIX = "Tests/Fixtures"


def out(target, name, data):
    os.makedirs(f"{ROOT}/{target}", exist_ok=True)
    with open(f"{ROOT}/{target}/{name}", "wb") as f:
        f.write(data)


# ---------- safetensors ----------

def safetensors(tensors, metadata=None, raw_header=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, offset, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(payload)]}
        offset += len(payload)
        data += payload
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
         "U16": 2, "U32": 4, "U64": 8}


def shrunk(path):
    """The fixture's header with every dimension set to 1 (same names, dtypes, order)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    tensors = [(k, v["dtype"], [1] * len(v["shape"]), b"\x01" * SIZES[v["dtype"]]) for k, v in items]
    return safetensors(tensors, meta)


def safetensors_seeds():
    f4 = struct.pack("<2f", 1.0, -2.0)
    out("safetensors", "tiny", safetensors([("a", "F32", [2], f4)]))
    out("safetensors", "dtypes", safetensors([("b", "BF16", [1, 2], b"\x80\x3f\x00\x40"), ("i", "I64", [1], struct.pack("<q", -1)),
                                             ("m", "BOOL", [3], b"\x01\x00\x01"), ("e", "F16", [0, 4], b""), ("s", "F64", [], struct.pack("<d", 3.5))],
                                            {"format": "pt"}))
    out("safetensors", "empty-header", safetensors([], raw_header=b"{}"))
    out("safetensors", "sit-shrunk", shrunk(f"{FIX}/sit.safetensors"))
    out("safetensors", "ppf2-shrunk", shrunk(f"{FIX}/ppf2_from_sit.safetensors"))
    # Hand-made bad files (the reader tests' cases).
    bad = {
        "bad-overlap": b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        "bad-gap": b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        "bad-duplicate": b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        "bad-negative": b'{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}',
        "bad-overflow": b'{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}',
        "bad-unsupported": b'{"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}',
        "bad-metadata": b'{"__metadata__":{"x":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        "bad-nesting": b'{"a":' + b"[" * 70 + b"]" * 70 + b"}",
    }
    for name, header in bad.items():
        out("safetensors", name, safetensors([], raw_header=header) + f4)
    out("safetensors", "bad-trailing", safetensors([("a", "F32", [2], f4)]) + b"xx")
    out("safetensors", "bad-truncated", safetensors([("a", "F32", [2], f4)])[:-3])
    out("safetensors", "bad-length", struct.pack("<Q", 1 << 40) + b"{}")


# ---------- pickles (torch.save protocol 2, stand-in torch modules) ----------

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, torch_utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
STORAGES = {}
for cls_name in ["FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "BoolStorage"]:
    cls = type(cls_name, (), {})
    cls.__module__ = "torch"
    setattr(torch, cls_name, cls)
    STORAGES[cls_name] = cls


class Storage:
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGES[obj.cls], obj.key, "cpu", obj.numel)
        return None


def torch_pickle(root):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(root)
    return buf.getvalue()


def torch_zip(root, records, name="archive", method=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr(f"{name}/data.pkl", torch_pickle(root))
        z.writestr(f"{name}/byteorder", "little")
        for key, data in records.items():
            z.writestr(f"{name}/data/{key}", data)
        z.writestr(f"{name}/version", "3\n")
    return buf.getvalue()


def small_state_dict():
    s0, s1 = Storage("0", "FloatStorage", 6), Storage("1", "HalfStorage", 2)
    sd = collections.OrderedDict()
    sd["x_embedder.proj.weight"] = Tensor(s0, 0, [2, 3], [3, 1])
    sd["x_embedder.proj.bias"] = Tensor(s0, 4, [2], [1])
    sd["t"] = Tensor(s0, 1, [3, 2], [1, 3])  # a transposed view sharing storage 0
    sd["h"] = Tensor(s1, 0, [2], [1])
    return sd, {"0": struct.pack("<6f", *range(6)), "1": b"\x00\x3c\x00\x40"}


def pickle_seeds():
    for f in ["sit", "sit_train", "ppf2", "dit"]:
        with zipfile.ZipFile(f"{FIX}/{f}.pt") as z:
            out("pickle", f"{f}-data.pkl", z.read(f"{f}/data.pkl"))
    sd, _ = small_state_dict()
    out("pickle", "small", torch_pickle(sd))
    # Hand-made hostile pickles.
    out("pickle", "bad-os-system", b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.")
    out("pickle", "bad-memo-cycle", b"\x80\x02]q\x00h\x00a.")            # l = []; l.append(l)
    out("pickle", "bad-deep", b"\x80\x02" + b"]" * 300 + b"a" * 299 + b".")
    out("pickle", "bad-truncated", torch_pickle(sd)[:40])
    out("pickle", "bad-tuple-dag", b"\x80\x02)q\x00" + b"".join(bytes([0x68, i, 0x68, i, 0x86, 0x71, i + 1]) for i in range(40)) + b".")


# ---------- zips ----------

def zip_of(files, method=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in files:
            z.writestr(name, data)
    return buf.getvalue()


def zip_seeds(native_config):
    sd, records = small_state_dict()
    out("zip", "torch-stored", torch_zip(sd, records))
    out("zip", "torch-deflated", torch_zip(sd, records, name="sit", method=zipfile.ZIP_DEFLATED))
    import argparse
    train = collections.OrderedDict(model=sd, ema=sd, args=argparse.Namespace(prediction="velocity", model="SiT-XL/2", image_size=256))
    out("zip", "torch-train", torch_zip(train, records, name="ckpt"))
    weights = safetensors([("x_embedder.proj.weight", "F32", [2, 1, 1, 1], struct.pack("<2f", 1, 2)),
                           ("pos_embed", "F32", [1, 1, 2], struct.pack("<2f", 0, 1))])
    cfg = json.loads(native_config) if native_config else {"format": "ppflow-native", "format_version": 1}
    cfg["model_sha256"] = hashlib.sha256(weights).hexdigest()
    out("zip", "native-folder", zip_of([("ppf/config.json", json.dumps(cfg).encode()), ("ppf/model.safetensors", weights)]))
    with open("examples/digits/digits-sit.zip", "rb") as f:
        digits = zipfile.ZipFile(f)
        digits_config = digits.read("config.json")
    out("zip", "config-and-pt", zip_of([("config.json", digits_config), ("w.pt", torch_zip(sd, records, name="w"))]))
    with zipfile.ZipFile(f"{FIX}/dit_diffusers.zip") as z:
        tconf, sconf = z.read("transformer/config.json"), z.read("scheduler/scheduler_config.json")
    diff_w = safetensors([("pos_embed.proj.weight", "F32", [2, 1, 1, 1], struct.pack("<2f", 1, 2)),
                          ("transformer_blocks.0.attn1.to_q.weight", "F32", [1, 2], struct.pack("<2f", 1, 2))])
    out("zip", "diffusers", zip_of([("transformer/config.json", tconf), ("scheduler/scheduler_config.json", sconf),
                                    ("transformer/diffusion_pytorch_model.safetensors", diff_w)], zipfile.ZIP_DEFLATED))
    a = safetensors([("a", "F32", [1], struct.pack("<f", 1))])
    b = safetensors([("b", "F32", [1], struct.pack("<f", 2))])
    index = json.dumps({"metadata": {"total_size": 8}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}).encode()
    out("zip", "sharded", zip_of([("model.safetensors.index.json", index), ("m-1.safetensors", a), ("m-2.safetensors", b)]))
    # Hand-made bad zips: sizes that lie, entries that overlap, a count the directory cannot hold.
    good = bytearray(torch_zip(sd, records))
    lying = bytearray(good)
    cd = lying.rfind(b"PK\x01\x02")
    struct.pack_into("<I", lying, cd + 24, 1 << 30)
    out("zip", "bad-lying-size", bytes(lying))
    overlap = bytearray(good)
    first = overlap.find(b"PK\x01\x02")
    second = overlap.find(b"PK\x01\x02", first + 4)
    struct.pack_into("<I", overlap, second + 42, struct.unpack_from("<I", overlap, first + 42)[0])
    out("zip", "bad-overlap", bytes(overlap))
    count = bytearray(good)
    eocd = count.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", count, eocd + 8, 0xFFFF, 0xFFFF)
    out("zip", "bad-entry-count", bytes(count))
    out("zip", "bad-truncated", bytes(good[: len(good) // 2]))


def config_seeds(native_config):
    with zipfile.ZipFile("examples/digits/digits-sit.zip") as z:
        out("config", "digits", z.read("config.json"))
    with zipfile.ZipFile(f"{FIX}/dit_diffusers.zip") as z:
        out("config", "diffusers-transformer", z.read("transformer/config.json"))
        out("config", "diffusers-scheduler", z.read("scheduler/scheduler_config.json"))
    if native_config:
        out("config", "native", native_config)
    out("config", "numbers", b'[0, -0, 1e308, -1.5e-308, 9223372036854775807, -9223372036854775808, 9223372036854775808, 0.1, 1E+2]')
    out("config", "strings", b'{"a": "\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\", "b": "", "c": null, "d": [true, false, {}]}')
    out("config", "bad-duplicate", b'{"format": "ppflow-native", "format": "x"}')
    out("config", "bad-nan", b'{"num_heads": NaN}')
    out("config", "bad-lone-surrogate", b'{"a": "\\ud800"}')


if __name__ == "__main__":
    native = open(sys.argv[1], "rb").read() if len(sys.argv) > 1 else None
    safetensors_seeds()
    pickle_seeds()
    zip_seeds(native)
    config_seeds(native)
