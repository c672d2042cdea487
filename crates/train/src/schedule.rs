//! Learning-rate multipliers as a pure function of the step (so resume needs no state).

use crate::config::{ScheduleKind, TrainConfig};

/// The multiplier of the base learning rate at `step` (0-based) of `total` steps: a linear
/// warm-up from 1/warmup to 1 over `warmup_steps`, then the schedule.
pub fn lr_multiplier(config: &TrainConfig, step: usize, total: usize) -> f64 {
    if step < config.warmup_steps {
        return (step + 1) as f64 / config.warmup_steps as f64;
    }
    let t = step - config.warmup_steps;
    match config.schedule {
        ScheduleKind::Constant => 1.0,
        ScheduleKind::Step => config.gamma.powi((t / config.decay_every.max(1)) as i32),
        ScheduleKind::Cosine => {
            let span = total.saturating_sub(config.warmup_steps).max(1) as f64;
            let floor = config.min_lr / config.lr;
            floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * (t as f64 / span).min(1.0)).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_min_lr() {
        let c = TrainConfig { schedule: ScheduleKind::Cosine, warmup_steps: 10, lr: 0.1, min_lr: 0.001, ..Default::default() };
        assert!((lr_multiplier(&c, 0, 110) - 0.1).abs() < 1e-12);
        assert!((lr_multiplier(&c, 9, 110) - 1.0).abs() < 1e-12);
        assert!((lr_multiplier(&c, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_multiplier(&c, 60, 110) - (0.01 + 0.99 * 0.5)).abs() < 1e-9);
        assert!((lr_multiplier(&c, 110, 110) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn step_schedule_decays_by_gamma() {
        let c = TrainConfig { schedule: ScheduleKind::Step, decay_every: 5, gamma: 0.5, ..Default::default() };
        assert_eq!([0, 4, 5, 10].map(|s| lr_multiplier(&c, s, 100)), [1.0, 1.0, 0.5, 0.25]);
    }
}
