#!/usr/bin/python3
"""Exports splitseg's models to ONNX graphs (opset 17) from the safetensors weights it loads.

  export.py --model M.safetensors --part decoder|encoder --out M.onnx [options]

The graphs compute what splitseg's engine computes, with standard operators only (MatMul,
LayerNormalization, Softmax, Conv, Resize, GELU as x/sqrt2 -> Erf -> +1 -> *x -> *0.5, which ONNX
Runtime fuses into its Gelu kernel), so that a runtime runs them with its own fast kernels. Folded
at export (equal up to rounding): BatchNorm into the preceding convolution, the expanded
relative-position and attention-bias tables, the grid's positional encoding, Hiera's resized and
tiled positional embedding, the attention scale into q_proj (Hiera: qkv's query rows), SAM 2.1's
conv_s0/conv_s1 into the neck's 1x1 convolutions before them and no_mem_embed into the level-2
bias; the decoder's 2x2 transposed convolutions are MatMuls whose output stays in sub-pixel
order until the masks. Weights over 1.5 GB (ViT-H) go to OUT.data beside the graph (protobuf's
2 GB limit).

Graphs (batch 1, float32):
  encoder   SAM ViT, MobileSAM TinyViT or SAM 2.1 Hiera (detected from the tensor names):
            image [1,3,S,S] (normalised, padded: splitseg's preprocessing) -> image_embeddings
            [1,256,64,64]. SAM 2.1 (image resized to 1024x1024, ImageNet mean/std on [0, 1]):
            the mask decoder's inputs, image_embeddings with no_mem_embed added,
            high_res_feats_0 [1,32,256,256], high_res_feats_1 [1,64,128,128]; heads, global
            blocks and windows as the engine infers them (hiera.* metadata overrides).
  decoder   SAM / MobileSAM / SAM 2.1 prompt encoder + mask decoder, inputs as segment-anything's
            SamOnnxModel: image_embeddings [1,256,64,64] (SAM 2.1: no_mem_embed added, and
            high_res_feats_0 [1,32,256,256], high_res_feats_1 [1,64,128,128]), point_coords [1,N,2]
            (model frame: the resized image's pixels), point_labels [1,N] (1 fg, 0 bg, 2/3 box
            corners, -1 padding point; in the order the reference's predictor builds them),
            mask_input [1,1,256,256], has_mask_input [1], orig_im_size [2] (h, w as float)
            -> masks [1,K,h,w] (bool: upscaled logits > 0), iou_predictions [1,K] (SAM 2.1:
               after the sigmoid), low_res_masks [1,K,256,256] (logits; SAM 2.1: clamped to
               +-32 as its predictor returns them), SAM 2.1: object_score_logits [1,1]
            K by --masks: multimask (3, the multimask tokens), single (1, the single-mask token),
            best (1, the multimask token with the highest predicted IoU: only it is upscaled),
            all (4). With --orig-size HxW, orig_im_size is left out and the upscaling has fixed
            sizes (the identity resize of an image whose long side is the model's is dropped).
Needs only numpy and Debian's python3-onnx.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


# ------------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path):
    """(tensors as float32 or integer arrays, the header's __metadata__ strings)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
              "I32": np.int32, "U8": np.uint8}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtypes[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).astype(np.float32, copy=False) \
            if info["dtype"] not in ("I64", "I32", "U8") else arr.reshape(info["shape"])
    return out, header.get("__metadata__", {})


# ------------------------------------------------------------------------------------------------
# Graph building


class Graph:
    """Nodes and initializers, with generated names; op() returns its output name(s)."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0
        self.consts = {}

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array, hint="c"):
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values):
        key = tuple(values)
        if key not in self.consts:
            self.consts[key] = self.const(np.array(values, dtype=np.int64), "shape")
        return self.consts[key]

    def op(self, op_type, inputs, outputs=1, hint=None, **attrs):
        names = [self.name(hint or op_type.lower()) for _ in range(outputs)] \
            if isinstance(outputs, int) else outputs
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if len(names) == 1 else names

    # Common pieces.
    def linear(self, x, w, b=None):
        """x [..., in] @ w[out, in]^T + b."""
        y = self.op("MatMul", [x, self.const(w.T, "w")])
        return self.op("Add", [y, self.const(b, "b")]) if b is not None else y

    def layer_norm(self, x, w, b, eps):
        return self.op("LayerNormalization", [x, self.const(w), self.const(b)], axis=-1,
                       epsilon=eps)

    def gelu(self, x):
        """Exact (erf) GELU in the pattern ONNX Runtime's GeluFusion recognises."""
        d = self.op("Div", [x, self.const(np.array(math.sqrt(2.0), np.float32))])
        e = self.op("Erf", [d])
        p = self.op("Add", [e, self.const(np.array(1.0, np.float32))])
        m = self.op("Mul", [x, p])
        return self.op("Mul", [m, self.const(np.array(0.5, np.float32))])

    def reshape(self, x, shape):
        return self.op("Reshape", [x, self.ints(shape)])

    def transpose(self, x, perm):
        return self.op("Transpose", [x], perm=list(perm))

    def conv(self, x, w, b=None, stride=1, pad=0, groups=1):
        inputs = [x, self.const(w, "w")] + ([self.const(b, "b")] if b is not None else [])
        k = w.shape[2]
        return self.op("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4, group=groups)

    def channel_norm_nchw(self, x, w, b, eps):
        """LayerNorm2d (over channels) of an NCHW tensor."""
        t = self.transpose(x, [0, 2, 3, 1])
        return self.transpose(self.layer_norm(t, w, b, eps), [0, 3, 1, 2])

    def model(self, inputs, outputs, doc):
        graph = helper.make_graph(self.nodes, "splitseg", inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="splitseg tools/onnx/export.py", doc_string=doc)
        m.ir_version = 8
        return m


def value_info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


# ------------------------------------------------------------------------------------------------
# Windows: [1, H, W, C] <-> [nh * nw, S * S, C], zero padding at the bottom and right.


def window_partition(g, x, H, W, C, S):
    nh, nw = -(-H // S), -(-W // S)
    if nh * S != H or nw * S != W:
        pads = g.ints([0, 0, 0, 0, 0, nh * S - H, nw * S - W, 0])
        x = g.op("Pad", [x, pads])
    x = g.reshape(x, [1, nh, S, nw, S, C])
    x = g.transpose(x, [0, 1, 3, 2, 4, 5])
    return g.reshape(x, [nh * nw, S * S, C])


def window_merge(g, x, H, W, C, S):
    nh, nw = -(-H // S), -(-W // S)
    x = g.reshape(x, [1, nh, nw, S, S, C])
    x = g.transpose(x, [0, 1, 3, 2, 4, 5])
    x = g.reshape(x, [1, nh * S, nw * S, C])
    if nh * S != H or nw * S != W:
        x = g.op("Slice", [x, g.ints([0, 0]), g.ints([H, W]), g.ints([1, 2])])
    return x


def multi_head_attention(g, q, k, v, B, heads, D):
    """Softmax attention per head, the 1/sqrt(D) scale already in q:
    q [B, Lq, heads*D], k and v [B, Lk, heads*D] -> [B, Lq, heads*D]."""
    q = g.transpose(g.reshape(q, [B, -1, heads, D]), [0, 2, 1, 3])
    k = g.transpose(g.reshape(k, [B, -1, heads, D]), [0, 2, 3, 1])
    v = g.transpose(g.reshape(v, [B, -1, heads, D]), [0, 2, 1, 3])
    probs = g.op("Softmax", [g.op("MatMul", [q, k])], axis=-1)
    return g.reshape(g.transpose(g.op("MatMul", [probs, v]), [0, 2, 1, 3]), [B, -1, heads * D])


# ------------------------------------------------------------------------------------------------
# SAM ViT encoder


def sam_vit_encoder(g, w, image, p="image_encoder."):
    patch_w = w[p + "patch_embed.proj.weight"]
    C, P = patch_w.shape[0], patch_w.shape[2]
    G = w[p + "pos_embed"].shape[1]
    depth = 0
    while p + f"blocks.{depth}.norm1.weight" in w:
        depth += 1
    D = w[p + "blocks.0.attn.rel_pos_h"].shape[1]
    heads = C // D

    x = g.conv(image, patch_w, w[p + "patch_embed.proj.bias"], stride=P)  # [1, C, G, G]
    x = g.transpose(x, [0, 2, 3, 1])
    x = g.op("Add", [x, g.const(w[p + "pos_embed"])])  # [1, G, G, C]
    for i in range(depth):
        b = p + f"blocks.{i}."
        S = (w[b + "attn.rel_pos_h"].shape[0] + 1) // 2  # window, or G for global attention
        n = g.layer_norm(x, w[b + "norm1.weight"], w[b + "norm1.bias"], 1e-6)
        if S == G:
            tokens, B = g.reshape(n, [1, G * G, C]), 1
        else:
            tokens, B = window_partition(g, n, G, G, C, S), (-(-G // S)) ** 2
        a = vit_attention(g, w, b + "attn.", tokens, B, S, heads, D)
        a = g.reshape(a, [1, G, G, C]) if S == G else window_merge(g, a, G, G, C, S)
        a = g.linear(a, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        x = g.op("Add", [x, a])
        n = g.layer_norm(x, w[b + "norm2.weight"], w[b + "norm2.bias"], 1e-6)
        h = g.gelu(g.linear(n, w[b + "mlp.lin1.weight"], w[b + "mlp.lin1.bias"]))
        x = g.op("Add", [x, g.linear(h, w[b + "mlp.lin2.weight"], w[b + "mlp.lin2.bias"])])
    return neck(g, w, x, p, 1e-6)


def rel_table(rel, S):
    """[S, D, S]: table[q, :, k] = rel[q - k + S - 1] (SAM's get_rel_pos, transposed for MatMul)."""
    idx = np.arange(S)[:, None] - np.arange(S)[None, :] + S - 1
    return np.ascontiguousarray(rel[idx].transpose(0, 2, 1))


def vit_attention(g, w, p, tokens, B, S, heads, D):
    """Multi-head attention with decomposed relative positions within S x S tokens.
    tokens [B, S*S, C] -> [B, S*S, C]."""
    L, C = S * S, heads * D
    qkv = g.linear(tokens, w[p + "qkv.weight"], w[p + "qkv.bias"])  # [B, L, 3C]
    qkv = g.transpose(g.reshape(qkv, [B, L, 3, heads, D]), [2, 0, 3, 1, 4])  # [3, B, h, L, D]
    q, k, v = [g.reshape(t, [B * heads, L, D]) for t in
               g.op("Split", [qkv, g.ints([1, 1, 1])], outputs=3, axis=0)]
    BH = B * heads
    scores = g.op("MatMul", [g.op("Mul", [q, g.const(np.array(D ** -0.5, np.float32))]),
                             g.transpose(k, [0, 2, 1])])  # [BH, L, L]
    # Relative positions from the unscaled queries: rel_h[b, qh, qw, kh], rel_w[b, qh, qw, kw].
    q4 = g.reshape(q, [BH, S, S, D])
    qh = g.reshape(g.transpose(q4, [1, 0, 2, 3]), [S, BH * S, D])
    rh = g.op("MatMul", [qh, g.const(rel_table(w[p + "rel_pos_h"], S))])  # [S(qh), BH*S(qw), S]
    rh = g.transpose(g.reshape(rh, [S, BH, S, S]), [1, 0, 2, 3])  # [BH, qh, qw, kh]
    qw = g.reshape(g.transpose(q4, [2, 0, 1, 3]), [S, BH * S, D])
    rw = g.op("MatMul", [qw, g.const(rel_table(w[p + "rel_pos_w"], S))])  # [S(qw), BH*S(qh), S]
    rw = g.transpose(g.reshape(rw, [S, BH, S, S]), [1, 2, 0, 3])  # [BH, qh, qw, kw]
    # The [L, L] bias from the two small tables first: one broadcast Add of small inputs and one
    # same-shape Add run faster in ONNX Runtime than two broadcast Adds into the scores.
    bias = g.op("Add", [g.reshape(rh, [BH, S, S, S, 1]), g.reshape(rw, [BH, S, S, 1, S])])
    scores = g.op("Add", [scores, g.reshape(bias, [BH, L, L])])
    probs = g.op("Softmax", [scores], axis=-1)
    out = g.reshape(g.op("MatMul", [probs, v]), [B, heads, L, D])
    return g.reshape(g.transpose(out, [0, 2, 1, 3]), [B, L, C])


def neck(g, w, x, p, eps):
    """SAM's neck on [1, G, G, Cin] tokens: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d."""
    w0 = w[p + "neck.0.weight"]
    x = g.linear(x, w0.reshape(w0.shape[0], -1))
    x = g.layer_norm(x, w[p + "neck.1.weight"], w[p + "neck.1.bias"], eps)
    x = g.conv(g.transpose(x, [0, 3, 1, 2]), w[p + "neck.2.weight"], pad=1)
    return g.channel_norm_nchw(x, w[p + "neck.3.weight"], w[p + "neck.3.bias"], eps)


# ------------------------------------------------------------------------------------------------
# MobileSAM TinyViT encoder


def conv_bn(w, name):
    """Conv2d_BN with the BatchNorm folded into the convolution (eval mode)."""
    c = w[name + "c.weight"]
    s = w[name + "bn.weight"] / np.sqrt(w[name + "bn.running_var"] + 1e-5)
    return c * s[:, None, None, None], w[name + "bn.bias"] - w[name + "bn.running_mean"] * s


def bottleneck(g, w, name, x, stride, residual):
    """NCHW: 1x1 -> GELU -> depthwise 3x3 -> GELU -> 1x1 (MBConv: + x -> GELU; PatchMerging)."""
    h = g.gelu(g.conv(x, *conv_bn(w, name + "conv1.")))
    cw, cb = conv_bn(w, name + "conv2.")
    h = g.gelu(g.conv(h, cw, cb, stride=stride, pad=1, groups=cw.shape[0]))
    y = g.conv(h, *conv_bn(w, name + "conv3."))
    return g.gelu(g.op("Add", [y, x])) if residual else y


def tiny_vit_bias(biases, S):
    """[heads, L, L] attention biases by |offset| (the reference's attention_bias_idxs)."""
    yx = np.stack(np.meshgrid(np.arange(S), np.arange(S), indexing="ij"), -1).reshape(-1, 2)
    d = np.abs(yx[:, None, :] - yx[None, :, :])
    return biases[:, d[..., 0] * S + d[..., 1]]


def tiny_vit_block(g, w, b, x, H, C, heads, S):
    """TinyViTBlock on NHWC [1, H, H, C]."""
    D, L = C // heads, S * S
    nwin = (-(-H // S)) ** 2
    t = window_partition(g, x, H, H, C, S)  # zero padding before the norm, as the reference
    t = g.layer_norm(t, w[b + "attn.norm.weight"], w[b + "attn.norm.bias"], 1e-5)
    qkv = g.linear(t, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"])  # per head [q, k, v]
    qkv = g.transpose(g.reshape(qkv, [nwin, L, heads, 3 * D]), [0, 2, 1, 3])
    q, k, v = g.op("Split", [qkv, g.ints([D, D, D])], outputs=3, axis=-1)  # [nwin, h, L, D]
    scores = g.op("MatMul", [g.op("Mul", [q, g.const(np.array(D ** -0.5, np.float32))]),
                             g.transpose(k, [0, 1, 3, 2])])
    bias = tiny_vit_bias(w[b + "attn.attention_biases"], S)
    scores = g.op("Add", [scores, g.const(bias)])
    out = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # [nwin, h, L, D]
    out = g.reshape(g.transpose(out, [0, 2, 1, 3]), [nwin, L, C])
    out = g.linear(out, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
    x = g.op("Add", [x, window_merge(g, out, H, H, C, S)])
    cw, cb = conv_bn(w, b + "local_conv.")
    x = g.conv(g.transpose(x, [0, 3, 1, 2]), cw, cb, pad=1, groups=C)
    x = g.transpose(x, [0, 2, 3, 1])
    n = g.layer_norm(x, w[b + "mlp.norm.weight"], w[b + "mlp.norm.bias"], 1e-5)
    h = g.gelu(g.linear(n, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"]))
    return g.op("Add", [x, g.linear(h, w[b + "mlp.fc2.weight"], w[b + "mlp.fc2.bias"])])


def tiny_vit_encoder(g, w, image, p="image_encoder."):
    x = g.gelu(g.conv(image, *conv_bn(w, p + "patch_embed.seq.0."), stride=2, pad=1))
    x = g.conv(x, *conv_bn(w, p + "patch_embed.seq.2."), stride=2, pad=1)  # NCHW
    H = 1024 // 4
    nhwc = False
    i = 0
    while p + f"layers.{i}.blocks.0.conv1.c.weight" in w or p + f"layers.{i}.blocks.0.attn.qkv.weight" in w:
        layer = p + f"layers.{i}."
        j = 0
        while layer + f"blocks.{j}." + "conv1.c.weight" in w:  # MBConv, NCHW
            x = bottleneck(g, w, layer + f"blocks.{j}.", x, 1, True)
            j += 1
        while layer + f"blocks.{j}.attn.qkv.weight" in w:  # attention, NHWC
            b = layer + f"blocks.{j}."
            if not nhwc:
                x, nhwc = g.transpose(x, [0, 2, 3, 1]), True
            heads, L = w[b + "attn.attention_biases"].shape
            C = w[b + "attn.norm.weight"].shape[0]
            x = tiny_vit_block(g, w, b, x, H, C, heads, int(round(math.sqrt(L))))
            j += 1
        if layer + "downsample.conv1.c.weight" in w:
            out_dim = w[layer + "downsample.conv1.c.weight"].shape[0]
            stride = 1 if out_dim in (320, 448, 576) else 2  # MobileSAM keeps 64x64 at the end
            if nhwc:
                x, nhwc = g.transpose(x, [0, 3, 1, 2]), False
            x = bottleneck(g, w, layer + "downsample.", x, stride, False)
            H = (H - 1) // stride + 1
        i += 1
    if not nhwc:
        x = g.transpose(x, [0, 2, 3, 1])
    return neck(g, w, x, p, 1e-6)


# ------------------------------------------------------------------------------------------------
# SAM 2.1 Hiera encoder: trunk, FPN neck, the mask decoder's conv_s0/conv_s1 and no_mem_embed
# (src/engine/models/hiera.cpp)

HIERA = "image_encoder.trunk."
# Per stage count, as the official configs (sam2.1_hiera_{t,s,b+,l}.yaml): heads, global
# blocks, window sizes; the engine's presets. Other stage counts: 1 head, the last block of
# stage 2 global, windows 8, 4, 14, 7. The safetensors metadata hiera.num_heads,
# hiera.global_blocks and hiera.window_spec override them; pos_embed_window gives window 0.
HIERA_PRESETS = {
    (1, 2, 7, 2): (1, [5, 7, 9], [8, 4, 14, 7]),
    (1, 2, 11, 2): (1, [7, 10, 13], [8, 4, 14, 7]),
    (2, 3, 16, 3): (2, [12, 16, 20], [8, 4, 14, 7]),
    (2, 6, 36, 4): (2, [23, 33, 43], [8, 4, 16, 8]),
}


def hiera_config(w, metadata):
    """(stages, heads, global blocks, windows) from the tensor names, as the engine infers them."""
    stages, i = [], 0
    while HIERA + f"blocks.{i}.norm1.weight" in w:
        if i == 0 or HIERA + f"blocks.{i}.proj.weight" in w:  # a stage starts with a projection
            stages.append(0)
        stages[-1] += 1
        i += 1
    default = (1, [sum(stages[:3]) - 1], [8, 4, 14, 7])
    heads, global_blocks, windows = HIERA_PRESETS.get(tuple(stages), default)

    def ints(key, values):  # "5,7,9" -> [5, 7, 9], "" -> []
        text = metadata.get(key)
        return values if text is None else [int(t) for t in text.split(",") if t.strip()]

    heads = ints("hiera.num_heads", [heads])[0]
    global_blocks = ints("hiera.global_blocks", global_blocks)
    windows = list(ints("hiera.window_spec", windows))
    windows[0] = w[HIERA + "pos_embed_window"].shape[2]
    return stages, heads, global_blocks, windows


def bicubic_matrix(n_in, n_out):
    """[n_out, n_in]: PyTorch's bicubic resize (A = -0.75, align_corners False, edge clamped)."""
    A = -0.75
    near = lambda t: ((A + 2) * t - (A + 3)) * t * t + 1
    far = lambda t: ((A * t - 5 * A) * t + 8 * A) * t - 4 * A
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = n_in / n_out * (o + 0.5) - 0.5
        i0 = min(math.floor(src), n_in - 1)
        t = min(max(src - i0, 0.0), 1.0)
        for k, wk in enumerate([far(t + 1), near(t), near(1 - t), far(2 - t)]):
            m[o, min(max(i0 - 1 + k, 0), n_in - 1)] += wk
    return m


def hiera_positions(w, G):
    """[1, G, G, E]: pos_embed resized bicubically to the grid + pos_embed_window tiled over it."""
    pos = w[HIERA + "pos_embed"][0].astype(np.float64)  # [E, h, w]
    m_h, m_w = bicubic_matrix(pos.shape[1], G), bicubic_matrix(pos.shape[2], G)
    pe = np.einsum("yh,chw,xw->yxc", m_h, pos, m_w)
    win = w[HIERA + "pos_embed_window"][0].transpose(1, 2, 0)  # [S, S, E]
    S = win.shape[0]
    return (pe + np.tile(win, (G // S, G // S, 1)))[None].astype(np.float32)


def pool2x2(g, x, B, H, W, C):
    """MaxPool2d(2, 2) of NHWC [B, H, W, C] (H, W even) -> [B, H/2 * W/2, C]."""
    x = g.reshape(x, [B, H // 2, 2, W // 2, 2, C])
    return g.reshape(g.op("ReduceMax", [x], axes=[2, 4], keepdims=0), [B, H * W // 4, C])


def hiera_block(g, w, b, x, H, C, C_out, heads, S, pool):
    """MultiScaleBlock on NHWC [1, H, H, C] -> [1, H', H', C_out] (pool: H' = H / 2).
    S: the attention's window, 0 for global attention."""
    D = C_out // heads
    n = g.layer_norm(x, w[b + "norm1.weight"], w[b + "norm1.bias"], 1e-6)
    if pool:  # the shortcut is projected from the normalised input, then pooled
        x = g.reshape(pool2x2(g, g.linear(n, w[b + "proj.weight"], w[b + "proj.bias"]),
                              1, H, H, C_out), [1, H // 2, H // 2, C_out])
    # Windows of the normalised tokens, zero-padded: padding tokens get the qkv bias.
    S = S or H
    t, B = (g.reshape(n, [1, H * H, C]), 1) if S == H else \
        (window_partition(g, n, H, H, C, S), (-(-H // S)) ** 2)
    scale = np.concatenate([np.full(C_out, D ** -0.5), np.ones(2 * C_out)]).astype(np.float32)
    qkv = g.linear(t, w[b + "attn.qkv.weight"] * scale[:, None], w[b + "attn.qkv.bias"] * scale)
    q, k, v = g.op("Split", [qkv, g.ints([C_out] * 3)], outputs=3, axis=-1)  # [B, S*S, C_out]
    if pool:  # each window's query pooled 2x2: half-size output tiles
        q = pool2x2(g, g.reshape(q, [B, S, S, C_out]), B, S, S, C_out)
        H, S = H // 2, S // 2
    a = multi_head_attention(g, q, k, v, B, heads, D)  # [B, S*S, C_out]
    a = g.reshape(a, [1, H, H, C_out]) if S == H else window_merge(g, a, H, H, C_out, S)
    x = g.op("Add", [x, g.linear(a, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])])
    n = g.layer_norm(x, w[b + "norm2.weight"], w[b + "norm2.bias"], 1e-6)
    h = g.gelu(g.linear(n, w[b + "mlp.layers.0.weight"], w[b + "mlp.layers.0.bias"]))
    return g.op("Add", [x, g.linear(h, w[b + "mlp.layers.1.weight"], w[b + "mlp.layers.1.bias"])])


def hiera_trunk(g, w, image, metadata):
    """image [1, 3, 1024, 1024] -> the 4 stages' outputs, NHWC [1, 256 >> s, 256 >> s, E << s]."""
    stages, heads, global_blocks, windows = hiera_config(w, metadata)
    patch_w = w[HIERA + "patch_embed.proj.weight"]
    E, H = patch_w.shape[0], 1024 // 4
    x = g.conv(image, patch_w, w[HIERA + "patch_embed.proj.bias"], stride=4, pad=3)
    x = g.op("Add", [g.transpose(x, [0, 2, 3, 1]), g.const(hiera_positions(w, H))])
    outputs, i, C = [], 0, E
    for s, depth in enumerate(stages):
        for j in range(depth):
            pool = s > 0 and j == 0  # doubles the width, halves the grid
            # A pooling block still uses the previous stage's window.
            S = 0 if i in global_blocks else windows[s - 1 if pool else s]
            x = hiera_block(g, w, HIERA + f"blocks.{i}.", x, H, C, E << s, heads << s, S, pool)
            H, C, i = H // 2 if pool else H, E << s, i + 1
        outputs.append((x, H, C))
    return outputs


def hiera_encoder(g, w, image, metadata):
    """The SAM 2.1 decoder's inputs: image_embeddings (neck level 2 + the 2x nearest upsampling
    of level 3, + no_mem_embed), high_res_feats_0/1 (conv_s0/conv_s1 of levels 0/1), NCHW."""
    stages = hiera_trunk(g, w, image, metadata)
    neck = lambda s: [w[f"image_encoder.neck.convs.{3 - s}.conv.{t}"] for t in ("weight", "bias")]

    def high_res(s, conv):  # conv_s(lateral(x)) folded into one 1x1 convolution
        lw, lb = neck(s)
        cw, cb = w[f"sam_mask_decoder.{conv}.weight"], w[f"sam_mask_decoder.{conv}.bias"]
        cw = cw.reshape(cw.shape[0], -1)
        x, H, C = stages[s]
        y = g.linear(x, cw @ lw.reshape(lw.shape[0], C), cw @ lb + cb)
        return g.transpose(y, [0, 3, 1, 2])

    (x2, H2, C2), (x3, H3, C3) = stages[2], stages[3]
    w2, b2 = neck(2)
    w3, b3 = neck(3)
    F = w2.shape[0]
    level2 = g.linear(x2, w2.reshape(F, C2), b2 + w["no_mem_embed"].reshape(F))
    level3 = g.linear(x3, w3.reshape(F, C3), b3)
    up = g.op("Add", [g.reshape(level2, [1, H3, 2, H3, 2, F]),
                      g.reshape(level3, [1, H3, 1, H3, 1, F])])  # level 3 broadcast 2x2
    embed = g.transpose(g.reshape(up, [1, H2, H2, F]), [0, 3, 1, 2])
    return embed, high_res(0, "conv_s0"), high_res(1, "conv_s1")


# ------------------------------------------------------------------------------------------------
# SAM / MobileSAM prompt encoder + mask decoder


def fourier(gauss, xy):
    """Random Fourier features of points in [0, 1]^2 (numpy): [..., 2] -> [..., C]."""
    a = 2.0 * np.pi * ((2.0 * xy - 1.0) @ gauss.astype(np.float64))
    return np.concatenate([np.sin(a), np.cos(a)], -1)


def dec_attention(g, w, p, q_in, k_in, v_in, heads):
    """[1, Tq, C], [1, Tk, C], [1, Tk, C] -> [1, Tq, C]; the 1/sqrt(d) scale folded into q_proj."""
    Dq = w[p + "q_proj.weight"].shape[0]
    d = Dq // heads
    s = d ** -0.5
    q = g.linear(q_in, w[p + "q_proj.weight"] * s, w[p + "q_proj.bias"] * s)
    k = g.linear(k_in, w[p + "k_proj.weight"], w[p + "k_proj.bias"])
    v = g.linear(v_in, w[p + "v_proj.weight"], w[p + "v_proj.bias"])
    out = multi_head_attention(g, q, k, v, 1, heads, d)
    return g.linear(out, w[p + "out_proj.weight"], w[p + "out_proj.bias"])


def mlp(g, w, p, x):
    """The references' MLP: Linear layers with ReLU between them."""
    i = 0
    while p + f"layers.{i}.weight" in w:
        if i > 0:
            x = g.op("Relu", [x])
        x = g.linear(x, w[p + f"layers.{i}.weight"], w[p + f"layers.{i}.bias"])
        i += 1
    return x


def prompt_embeddings(g, w, pe, C, size):
    """Sparse prompt tokens [1, N, C] and the dense prompt [1, C, g, g] (SamOnnxModel's inputs)."""
    gauss = w[pe + "pe_layer.positional_encoding_gaussian_matrix"]
    # Fourier features of the pixel centres (zero for padding points) plus the learned embedding
    # of the label: row label + 1 of [not_a_point, bg, fg, box corner 0, box corner 1].
    xy = g.op("Div", [g.op("Add", ["point_coords", g.const(np.float32(0.5))]),
                      g.const(np.float32(size))])
    xy = g.op("Sub", [g.op("Mul", [xy, g.const(np.float32(2.0))]), g.const(np.float32(1.0))])
    a = g.op("MatMul", [xy, g.const(gauss * np.float32(2.0 * np.pi))])  # [1, N, C/2]
    feats = g.op("Concat", [g.op("Sin", [a]), g.op("Cos", [a])], axis=-1)
    is_point = g.op("Greater", ["point_labels", g.const(np.float32(-0.5))])
    is_point = g.op("Cast", [is_point], to=TensorProto.FLOAT)
    feats = g.op("Mul", [feats, g.op("Unsqueeze", [is_point, g.ints([2])])])
    table = np.concatenate([w[pe + "not_a_point_embed.weight"]] +
                           [w[pe + f"point_embeddings.{i}.weight"] for i in range(4)], 0)
    label_index = g.op("Cast", [g.op("Add", ["point_labels", g.const(np.float32(1.0))])],
                       to=TensorProto.INT64)
    sparse = g.op("Add", [feats, g.op("Gather", [g.const(table), label_index], axis=0)])

    # Dense prompt: the downscaled mask when has_mask_input, else no_mask_embed.
    md = pe + "mask_downscaling."
    m = g.conv("mask_input", w[md + "0.weight"], w[md + "0.bias"], stride=2)
    m = g.gelu(g.channel_norm_nchw(m, w[md + "1.weight"], w[md + "1.bias"], 1e-6))
    m = g.conv(m, w[md + "3.weight"], w[md + "3.bias"], stride=2)
    m = g.gelu(g.channel_norm_nchw(m, w[md + "4.weight"], w[md + "4.bias"], 1e-6))
    m = g.conv(m, w[md + "6.weight"], w[md + "6.bias"])
    has = g.op("Reshape", ["has_mask_input", g.ints([1, 1, 1, 1])])
    no_mask = w[pe + "no_mask_embed.weight"].reshape(1, C, 1, 1)
    dense = g.op("Add", [g.op("Mul", [m, has]),
                         g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0)), has]),
                                      g.const(no_mask)])])
    return sparse, dense


def two_way_transformer(g, w, tf, tokens, keys, key_pe, sam2, heads):
    """Tokens [1, T, C] and image tokens [1, g*g, C] -> (queries, keys)."""
    queries, query_pe = tokens, tokens
    i = 0
    while tf + f"layers.{i}.norm1.weight" in w:
        L = tf + f"layers.{i}."
        if i == 0:  # skip_first_layer_pe
            queries = dec_attention(g, w, L + "self_attn.", queries, queries, queries, heads)
        else:
            q = g.op("Add", [queries, query_pe])
            queries = g.op("Add", [queries, dec_attention(g, w, L + "self_attn.", q, q, queries,
                                                          heads)])
        queries = g.layer_norm(queries, w[L + "norm1.weight"], w[L + "norm1.bias"], 1e-5)
        q = g.op("Add", [queries, query_pe])
        k = g.op("Add", [keys, key_pe])
        queries = g.op("Add", [queries, dec_attention(g, w, L + "cross_attn_token_to_image.", q, k,
                                                      keys, heads)])
        queries = g.layer_norm(queries, w[L + "norm2.weight"], w[L + "norm2.bias"], 1e-5)
        # SAM 2 uses its generic MLP (mlp.layers.*), SAM an MLPBlock (mlp.lin1, mlp.lin2).
        names = ["mlp.layers.0", "mlp.layers.1"] if sam2 else ["mlp.lin1", "mlp.lin2"]
        h = g.op("Relu", [g.linear(queries, w[L + names[0] + ".weight"], w[L + names[0] + ".bias"])])
        h = g.linear(h, w[L + names[1] + ".weight"], w[L + names[1] + ".bias"])
        queries = g.layer_norm(g.op("Add", [queries, h]), w[L + "norm3.weight"],
                               w[L + "norm3.bias"], 1e-5)
        q = g.op("Add", [queries, query_pe])
        k = g.op("Add", [keys, key_pe])
        keys = g.op("Add", [keys, dec_attention(g, w, L + "cross_attn_image_to_token.", k, q,
                                                queries, heads)])
        keys = g.layer_norm(keys, w[L + "norm4.weight"], w[L + "norm4.bias"], 1e-5)
        i += 1
    q = g.op("Add", [queries, query_pe])
    k = g.op("Add", [keys, key_pe])
    queries = g.op("Add", [queries, dec_attention(g, w, tf + "final_attn_token_to_image.", q, k,
                                                  keys, heads)])
    queries = g.layer_norm(queries, w[tf + "norm_final_attn.weight"],
                           w[tf + "norm_final_attn.bias"], 1e-5)
    return queries, keys


def subpixel_rows(g, feats, C, grid, steps):
    """NCHW high-resolution features [1, C, grid*2^steps, grid*2^steps] -> [1, rows, C] in the
    upscaling's (y, x, dy, dx[, ey, ex]) pixel order."""
    if steps == 1:
        t = g.transpose(g.reshape(feats, [C, grid, 2, grid, 2]), [1, 3, 2, 4, 0])
    else:
        t = g.transpose(g.reshape(feats, [C, grid, 2, 2, grid, 2, 2]), [1, 4, 2, 5, 3, 6, 0])
    return g.reshape(t, [1, grid * grid * 4 ** steps, C])


def upscaled_features(g, w, up, keys, C, grid, high_res):
    """SAM's output upscaling of the image tokens [1, g*g, C] -> [1, 16 g*g, C/8]. Each 2x2,
    stride 2 transposed convolution is one MatMul giving every token its 4 sub-pixels as rows;
    LayerNorm2d and GELU act per pixel, so the pixels stay in that (y, x, dy, dx, ey, ex) order
    until the masks, which take one small transpose: no image-sized transposes, no ConvTranspose.
    high_res: SAM 2's (feats_1, feats_0) added after each transposed convolution, or None."""
    w1, w2 = w[up + "0.weight"], w[up + "3.weight"]  # [in, out, 2, 2]
    C1, Cu = w1.shape[1], w2.shape[1]
    x = g.op("MatMul", [keys, g.const(w1.transpose(0, 2, 3, 1).reshape(C, 4 * C1), "w")])
    x = g.op("Add", [g.reshape(x, [1, grid * grid * 4, C1]), g.const(w[up + "0.bias"], "b")])
    if high_res:
        x = g.op("Add", [x, subpixel_rows(g, high_res[0], C1, grid, 1)])
    x = g.gelu(g.layer_norm(x, w[up + "1.weight"], w[up + "1.bias"], 1e-6))
    x = g.op("MatMul", [x, g.const(w2.transpose(0, 2, 3, 1).reshape(C1, 4 * Cu), "w")])
    x = g.op("Add", [g.reshape(x, [1, grid * grid * 16, Cu]), g.const(w[up + "3.bias"], "b")])
    if high_res:
        x = g.op("Add", [x, subpixel_rows(g, high_res[1], Cu, grid, 2)])
    return g.gelu(x)


def sam_decoder(g, w, masks_mode, orig_size, sam2, heads=8):
    pe, md = ("sam_prompt_encoder.", "sam_mask_decoder.") if sam2 else \
        ("prompt_encoder.", "mask_decoder.")
    C = w[pe + "no_mask_embed.weight"].shape[1]
    gauss = w[pe + "pe_layer.positional_encoding_gaussian_matrix"]
    grid, size = 64, 1024.0
    M = w[md + "mask_tokens.weight"].shape[0]
    sparse, dense = prompt_embeddings(g, w, pe, C, size)

    # Output tokens (SAM 2: object score first), then the prompts; image tokens [1, g*g, C].
    out_tokens = ([w[md + "obj_score_token.weight"]] if sam2 else []) + \
        [w[md + "iou_token.weight"], w[md + "mask_tokens.weight"]]
    tokens = g.op("Concat", [g.const(np.concatenate(out_tokens, 0)[None]), sparse], axis=1)
    src = g.op("Add", ["image_embeddings", dense])
    keys = g.transpose(g.reshape(src, [1, C, grid * grid]), [0, 2, 1])
    centres = (np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1)[..., ::-1]
               + 0.5) / grid  # (x, y) of each cell in [0, 1]
    key_pe = g.const(fourier(gauss, centres.reshape(1, grid * grid, 2)))
    queries, keys = two_way_transformer(g, w, md + "transformer.", tokens, keys, key_pe, sam2,
                                        heads)

    # IoU (SAM 2: after a sigmoid) and the masks' hypernetwork weights, for the kept tokens.
    t0 = 1 if sam2 else 0  # the IoU token
    first = {"multimask": 1, "single": 0, "best": 1, "all": 0}[masks_mode]
    last = {"multimask": M, "single": 1, "best": M, "all": M}[masks_mode]
    token = lambda t: g.op("Slice", [queries, g.ints([t]), g.ints([t + 1]), g.ints([1])])
    iou = g.reshape(mlp(g, w, md + "iou_prediction_head.", token(t0)), [1, M])
    if sam2:
        iou = g.op("Sigmoid", [iou])
        head = md + "pred_obj_score_head."
        obj = mlp(g, w, head, token(0)) if head + "layers.0.weight" in w else \
            g.linear(token(0), w[head[:-1] + ".weight"], w[head[:-1] + ".bias"])
        g.op("Reshape", [obj, g.ints([1, 1])], outputs=["object_score_logits"])
    iou = g.op("Slice", [iou, g.ints([first]), g.ints([last]), g.ints([1])])
    hyper = [mlp(g, w, md + f"output_hypernetworks_mlps.{t}.", token(t0 + 1 + t))
             for t in range(first, last)]  # [1, 1, C/8] each
    hyper = g.op("Concat", hyper, axis=1) if len(hyper) > 1 else hyper[0]  # [1, K, C/8]

    high_res = ("high_res_feats_1", "high_res_feats_0") if sam2 else None
    x = upscaled_features(g, w, md + "output_upscaling.", keys, C, grid, high_res)
    K, side = last - first, 4 * grid
    low = g.op("MatMul", [x, g.transpose(hyper, [0, 2, 1])])  # [1, 16 g^2, K]
    low = g.transpose(g.reshape(low, [grid, grid, 2, 2, 2, 2, K]), [6, 0, 2, 4, 1, 3, 5])
    low = g.reshape(low, [1, K, side, side])
    if masks_mode == "best":  # keep the multimask output with the highest predicted IoU
        best = g.op("ArgMax", [iou], axis=1, keepdims=1)  # [1, 1]
        low = g.op("Gather", [low, g.reshape(best, [1])], axis=1)
        iou = g.op("GatherElements", [iou, best], axis=1)
        K = 1
    # SAM 2's predictor upscales the raw logits and returns the low-res ones clamped.
    g.op("Clip", [low, g.const(np.float32(-32)), g.const(np.float32(32))] if sam2 else [low],
         outputs=["low_res_masks"])
    g.op("Identity", [iou], outputs=["iou_predictions"])
    full = upscale_masks(g, low, K, size, orig_size, square=sam2)
    g.op("Greater", [full, g.const(np.float32(0.0))], outputs=["masks"])
    return K


def upscale_masks(g, low, K, size, orig_size, square):
    """Low-res logits to the original size. SAM (postprocess_masks): to the model's square, crop
    to the resized image, to the original size. SAM 2 (aspect ratio not kept): to the original
    size. orig_size None: from the orig_im_size input."""
    def resize(t, sizes):
        return g.op("Resize", [t, "", "", sizes], mode="linear",
                    coordinate_transformation_mode="half_pixel")

    if orig_size is None:
        hw = "orig_im_size"
        orig = g.op("Concat", [g.ints([1, K]), g.op("Cast", [hw], to=TensorProto.INT64)], axis=0)
        if square:
            return resize(low, orig)
        scale = g.op("Div", [g.const(np.float32(size)), g.op("ReduceMax", [hw], keepdims=1)])
        resized = g.op("Cast", [g.op("Floor", [g.op("Add", [g.op("Mul", [hw, scale]),
                                                            g.const(np.float32(0.5))])])],
                       to=TensorProto.INT64)
        full = resize(low, g.ints([1, K, int(size), int(size)]))
        return resize(g.op("Slice", [full, g.ints([0, 0]), resized, g.ints([2, 3])]), orig)
    oh, ow = orig_size
    if square:
        return resize(low, g.ints([1, K, oh, ow]))
    s = size / max(oh, ow)
    rh, rw = int(math.floor(oh * s + 0.5)), int(math.floor(ow * s + 0.5))
    full = resize(low, g.ints([1, K, int(size), int(size)]))
    if (rh, rw) != (int(size), int(size)):
        full = g.op("Slice", [full, g.ints([0, 0]), g.ints([rh, rw]), g.ints([2, 3])])
    if (rh, rw) != (oh, ow):  # an identity resize is left out
        full = resize(full, g.ints([1, K, oh, ow]))
    return full


# ------------------------------------------------------------------------------------------------


def export_encoder(w, metadata):
    g = Graph()
    S = 1024
    embed = [value_info("image_embeddings", [1, 256, 64, 64])]
    if HIERA + "patch_embed.proj.weight" in w:
        names = ["image_embeddings", "high_res_feats_0", "high_res_feats_1"]
        for out, name in zip(hiera_encoder(g, w, "image", metadata), names):
            g.op("Identity", [out], outputs=[name])
        outputs = embed + [value_info("high_res_feats_0", [1, 32, 256, 256]),
                           value_info("high_res_feats_1", [1, 64, 128, 128])]
        return g.model([value_info("image", [1, 3, S, S])], outputs, "SAM 2.1 Hiera image encoder")
    if "image_encoder.patch_embed.seq.0.c.weight" in w:
        out, kind = tiny_vit_encoder(g, w, "image"), "MobileSAM TinyViT"
    elif "image_encoder.blocks.0.attn.rel_pos_h" in w:
        out, kind = sam_vit_encoder(g, w, "image"), "SAM ViT"
    else:
        sys.exit("export.py: no SAM ViT, TinyViT or SAM 2.1 Hiera image encoder in these weights")
    g.op("Identity", [out], outputs=["image_embeddings"])
    return g.model([value_info("image", [1, 3, S, S])], embed, f"{kind} image encoder")


def export_decoder(w, masks_mode, orig_size):
    sam2 = "sam_prompt_encoder.no_mask_embed.weight" in w
    if not sam2 and "prompt_encoder.no_mask_embed.weight" not in w:
        sys.exit("export.py: no SAM, MobileSAM or SAM 2.1 prompt decoder in these weights")
    g = Graph()
    K = sam_decoder(g, w, masks_mode, orig_size, sam2)
    inputs = [value_info("image_embeddings", [1, 256, 64, 64])]
    if sam2:
        inputs += [value_info("high_res_feats_0", [1, 32, 256, 256]),
                   value_info("high_res_feats_1", [1, 64, 128, 128])]
    inputs += [value_info("point_coords", [1, "num_points", 2]),
               value_info("point_labels", [1, "num_points"]),
               value_info("mask_input", [1, 1, 256, 256]),
               value_info("has_mask_input", [1])]
    if orig_size is None:
        inputs.append(value_info("orig_im_size", [2]))
        mask_shape = [1, K, "height", "width"]
    else:
        mask_shape = [1, K, orig_size[0], orig_size[1]]
    outputs = [value_info("masks", mask_shape, TensorProto.BOOL),
               value_info("iou_predictions", [1, K]),
               value_info("low_res_masks", [1, K, 256, 256])]
    if sam2:
        outputs.append(value_info("object_score_logits", [1, 1]))
    kind = "SAM 2.1" if sam2 else "SAM"
    return g.model(inputs, outputs, f"{kind} prompt encoder + mask decoder, masks: {masks_mode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="safetensors weights (splitseg models convert)")
    ap.add_argument("--part", required=True, choices=["encoder", "decoder"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--masks", default="multimask", choices=["multimask", "single", "best", "all"])
    ap.add_argument("--orig-size", help="HxW: a decoder for one original image size")
    ap.add_argument("--external-data", action="store_true",
                    help="weights in OUT.data (automatic over 1.5 GB)")
    args = ap.parse_args()
    w, metadata = read_safetensors(args.model)
    if args.part == "encoder":
        m = export_encoder(w, metadata)
    else:
        orig = None
        if args.orig_size:
            h, x, wd = args.orig_size.partition("x")
            orig = (int(h), int(wd))
        m = export_decoder(w, args.masks, orig)
    if args.external_data or sum(len(t.raw_data) for t in m.graph.initializer) > 1.5e9:
        onnx.save(m, args.out, save_as_external_data=True,
                  location=os.path.basename(args.out) + ".data", size_threshold=1024)
        onnx.checker.check_model(args.out)  # by path: the checker reads the data file itself
    else:
        onnx.checker.check_model(m)
        onnx.save(m, args.out)
    print(f"wrote {args.out}: {len(m.graph.node)} nodes, "
          f"{sum(np.prod(t.dims) for t in m.graph.initializer) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
