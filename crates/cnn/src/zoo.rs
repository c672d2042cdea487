//! The model zoo: each architecture as a list of stages.

use plastic_rules::Activation;
use serde::{Deserialize, Serialize};

use crate::spec::{PoolOp, PostOp, StageSpec};
use crate::CnnConfig;

/// The feed-forward architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CnnKind {
    /// Fully connected layers only (`hidden` widths).
    Mlp,
    /// A small configurable CNN: 3×3 conv + ReLU + 2×2 max-pool per entry of `channels`, then
    /// `hidden` dense layers. The quickstart model.
    #[default]
    Convnet,
    /// The Caffe CIFAR-10 net of the learning-rule identification work: conv1–3, fc4.
    Knet4,
    /// KNet with a fourth convolution: conv1–4, fc5.
    Knet5,
    /// Krizhevsky et al. 2012 (conv1–5, fc6–8), LRN with `lrn = true`.
    Alexnet,
    Resnet18,
    Resnet34,
    /// Pre-activation (He et al. 2016, "v2") ResNets.
    Resnet18v2,
    Resnet34v2,
    /// A shallow, wide network for low-resolution inputs (the single-stream "StreamNet" of the
    /// mouse-vision work, Nayebi*, Kong* et al. 2023): four convolutions, global pooling, one
    /// readout.
    Shallownet,
}

/// ResNet stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// `cifar` below 100 px, `imagenet` from 100 px.
    #[default]
    Auto,
    /// 7×7 stride-2 convolution and a 3×3 stride-2 max-pool.
    Imagenet,
    /// 3×3 stride-1 convolution, no pooling.
    Cifar,
}

fn relu() -> PostOp {
    PostOp::Activation(Activation::Relu)
}

fn conv(name: &str, channels: usize, kernel: usize, stride: usize, padding: usize, post: Vec<PostOp>) -> StageSpec {
    StageSpec::Conv { name: name.into(), channels, kernel, stride, padding, bias: true, post }
}

fn dense(name: &str, features: usize, activation: Activation, dropout: f64) -> StageSpec {
    StageSpec::Dense { name: name.into(), features, activation, dropout }
}

/// The stages of `config.kind` for `classes` outputs at input side `resolution`.
pub fn stages(config: &CnnConfig, resolution: usize, classes: usize) -> Vec<StageSpec> {
    let w = |c: usize| ((c as f64 * config.width).round() as usize).max(1);
    let bn = config.batch_norm;
    let mut s = Vec::new();
    let hidden_then_out = |s: &mut Vec<StageSpec>, first_index: usize, prefix: &str| {
        for (i, &h) in config.hidden.iter().enumerate() {
            s.push(dense(&format!("{prefix}{}", first_index + i), w(h), Activation::Relu, config.dropout.unwrap_or(0.0)));
        }
        s.push(dense(&format!("{prefix}{}", first_index + config.hidden.len()), classes, Activation::Identity, 0.0));
    };
    match config.kind {
        CnnKind::Mlp => hidden_then_out(&mut s, 1, "fc"),
        CnnKind::Convnet => {
            for (i, &c) in config.channels.iter().enumerate() {
                let mut post = Vec::new();
                if bn {
                    post.push(PostOp::BatchNorm);
                }
                post.extend([relu(), PostOp::Pool(PoolOp::Max { kernel: 2, stride: 2, padding: 0 })]);
                s.push(conv(&format!("conv{}", i + 1), w(c), 3, 1, 1, post));
            }
            hidden_then_out(&mut s, config.channels.len() + 1, "fc");
        }
        CnnKind::Knet4 | CnnKind::Knet5 => {
            // Caffe's cifar10_full: conv1 → max-pool → ReLU → LRN; conv2 → ReLU → avg-pool → LRN;
            // conv3 → ReLU → avg-pool. Pools are 3×3 stride 2 (padding 1 keeps even sizes halving).
            let lrn = |v: &mut Vec<PostOp>| {
                if config.lrn {
                    v.push(PostOp::Lrn { size: 3, alpha: 5e-5, beta: 0.75, k: 1.0 });
                }
            };
            let max = PostOp::Pool(PoolOp::Max { kernel: 3, stride: 2, padding: 1 });
            let avg = PostOp::Pool(PoolOp::Avg { kernel: 3, stride: 2, padding: 1 });
            let mut p1 = vec![max, relu()];
            lrn(&mut p1);
            let mut p2 = vec![relu(), avg];
            lrn(&mut p2);
            s.push(conv("conv1", w(32), 5, 1, 2, p1));
            s.push(conv("conv2", w(32), 5, 1, 2, p2));
            s.push(conv("conv3", w(64), 5, 1, 2, vec![relu(), avg]));
            let last = if config.kind == CnnKind::Knet5 {
                s.push(conv("conv4", w(128), 3, 1, 1, vec![relu()]));
                "fc5"
            } else {
                "fc4"
            };
            s.push(dense(last, classes, Activation::Identity, 0.0));
        }
        CnnKind::Alexnet => {
            let pool = PostOp::Pool(PoolOp::Max { kernel: 3, stride: 2, padding: 0 });
            let mut first = vec![relu()];
            let mut second = vec![relu()];
            if config.lrn {
                let lrn = PostOp::Lrn { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0 };
                first.push(lrn);
                second.push(lrn);
            }
            first.push(pool);
            second.push(pool);
            // Small inputs keep more resolution in conv1 (stride 4 would leave nothing to pool).
            let (k1, s1, p1) = if resolution >= 100 { (11, 4, 2) } else if resolution >= 48 { (5, 2, 2) } else { (3, 1, 1) };
            s.push(conv("conv1", w(64), k1, s1, p1, first));
            s.push(conv("conv2", w(192), 5, 1, 2, second));
            s.push(conv("conv3", w(384), 3, 1, 1, vec![relu()]));
            s.push(conv("conv4", w(256), 3, 1, 1, vec![relu()]));
            s.push(conv("conv5", w(256), 3, 1, 1, vec![relu(), pool]));
            s.push(StageSpec::Pool(PoolOp::Adaptive(if resolution >= 100 { 6 } else { 2 })));
            s.push(dense("fc6", w(4096), Activation::Relu, config.dropout.unwrap_or(0.0)));
            s.push(dense("fc7", w(4096), Activation::Relu, config.dropout.unwrap_or(0.0)));
            s.push(dense("fc8", classes, Activation::Identity, 0.0));
        }
        CnnKind::Resnet18 | CnnKind::Resnet34 | CnnKind::Resnet18v2 | CnnKind::Resnet34v2 => {
            let preactivation = matches!(config.kind, CnnKind::Resnet18v2 | CnnKind::Resnet34v2);
            let blocks: [usize; 4] = if matches!(config.kind, CnnKind::Resnet18 | CnnKind::Resnet18v2) { [2, 2, 2, 2] } else { [3, 4, 6, 3] };
            let imagenet_stem = match config.stem {
                Stem::Auto => resolution >= 100,
                Stem::Imagenet => true,
                Stem::Cifar => false,
            };
            let stem_post = if preactivation { vec![] } else { vec![PostOp::BatchNorm, relu()] };
            if imagenet_stem {
                let mut post = stem_post;
                post.push(PostOp::Pool(PoolOp::Max { kernel: 3, stride: 2, padding: 1 }));
                s.push(StageSpec::Conv { name: "conv0".into(), channels: w(64), kernel: 7, stride: 2, padding: 3, bias: false, post });
            } else {
                s.push(StageSpec::Conv { name: "conv0".into(), channels: w(64), kernel: 3, stride: 1, padding: 1, bias: false, post: stem_post });
            }
            for (g, (&n, c)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
                for b in 0..n {
                    let stride = if g > 0 && b == 0 { 2 } else { 1 };
                    // Identity shortcuts where the shape is kept (torchvision), 1×1 projections where it changes.
                    let projection = g > 0 && b == 0;
                    s.push(StageSpec::Residual { name: format!("group{}.block{b}", g + 1), channels: w(c), stride, preactivation, projection });
                }
            }
            if preactivation {
                s.push(StageSpec::NormAct(Activation::Relu));
            }
            s.push(StageSpec::Pool(PoolOp::GlobalAvg));
            s.push(dense("dense", classes, Activation::Identity, 0.0));
        }
        CnnKind::Shallownet => {
            let norm = |mut v: Vec<PostOp>| {
                if bn {
                    v.insert(0, PostOp::BatchNorm);
                }
                v
            };
            let pool = PostOp::Pool(PoolOp::Max { kernel: 3, stride: 2, padding: 1 });
            let (k1, s1) = if resolution >= 48 { (11, 4) } else { (5, 1) };
            s.push(conv("visp", w(64), k1, s1, k1 / 2, norm(vec![relu(), pool])));
            s.push(conv("stream1", w(192), 5, 1, 2, norm(vec![relu(), pool])));
            s.push(conv("stream2", w(384), 3, 1, 1, norm(vec![relu()])));
            s.push(conv("vispor", w(256), 3, 1, 1, norm(vec![relu()])));
            s.push(StageSpec::Pool(PoolOp::GlobalAvg));
            s.push(dense("readout", classes, Activation::Identity, 0.0));
        }
    }
    s
}
