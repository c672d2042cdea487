//! Learning rules for `plastic`: layers whose backward pass sends the error down through a
//! feedback tensor B instead of the forward weights W.
//!
//! [`FeedbackConv2d`] and [`FeedbackLinear`] keep the forward pass and the weight gradient of
//! backprop and change only the input gradient (δx = Bᵀδy) and B's own learning, through a
//! custom autodiff op ([`ops`]). The rule of each layer is a [`LayerRule`], resolved from the
//! run's [`RuleConfig`]:
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use plastic_rules::{FeedbackLinearConfig, RuleConfig, RuleKind, LayerPosition};
//!
//! let device = Device::flex().autodiff();
//! let rules = RuleConfig { kind: RuleKind::FeedbackAlignment, ..Default::default() };
//! let rule = rules.layer_rule("fc", LayerPosition { index: 1, count: 2 });
//! let layer = FeedbackLinearConfig::new(4, 3).with_rule(rule).init(&device);
//! let x = Tensor::<2>::ones([2, 4], &device).require_grad();
//! let grads = layer.forward(x.clone()).sum().backward();
//! // The input gradient went through B, not W: it is B summed over outputs.
//! let b = layer.feedback.as_ref().unwrap().val();
//! let expected = b.sum_dim(1).reshape([1, 4]).repeat_dim(0, 2);
//! x.grad(&grads).unwrap().into_data().assert_approx_eq::<f32>(&expected.inner().into_data(), Default::default());
//! ```

pub mod conv2d;
pub mod cpu_conv;
pub mod init;
pub mod layer;
pub mod linear;
pub mod nonlinearity;
pub mod norm;
pub mod ops;
pub mod pointwise;
pub mod pool;
pub mod precision;
pub mod probe;
pub mod rule;
pub mod seeder;
pub mod source;
pub mod tap;
pub mod update;
#[doc(hidden)]
pub mod testing;

pub use conv2d::{FeedbackConv2d, FeedbackConv2dConfig, replace_value};
pub use init::{LayerSeeds, WeightInit};
pub use layer::{FeedbackLayer, FeedbackNetwork, LayerSummary, MirrorSettings, WeightAlignment, weight_alignment};
pub use linear::{FeedbackLinear, FeedbackLinearConfig};
pub use seeder::{LayerSeeder, SeedPurpose, derive_seed, indexed_seed, splitmix64};
pub use nonlinearity::Activation;
pub use precision::Precision;
pub use probe::{LayerObservation, ObservedNetwork, OutputMask};
pub use rule::{CoefficientScale, FeedbackOptimizer, LayerPosition, LayerRule, MirrorSource, RuleConfig, RuleKind, RuleOverride, SignVariant};
pub use tap::{LayerTap, TapRequest};
